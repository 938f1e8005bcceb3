//! The companion io_uring ring: one per executor thread, for the operations glommio 0.9 has no
//! public API for (vectored writes from `Bytes`, datasync, fallocate, splice to a socket).
//!
//! Completions signal an eventfd; a reaper task awaits that eventfd through glommio (an
//! io_uring READ on glommio's own ring), so the executor sleeps in one place and wakes for
//! either ring. Every operation owns what the kernel reads or writes (buffers, iovec arrays,
//! file descriptors) until its completion is reaped, even if the future that started it is
//! dropped: cancelling a future never frees memory the kernel still uses, and never lets a
//! file descriptor number be reused while an operation on it is in flight.

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Submission queue size. Each append round or fetch needs a handful of entries; a full queue
/// is flushed to the kernel and retried, so this bounds batching, not correctness.
const RING_ENTRIES: u32 = 1024;
/// The most io-wq worker threads of the unbounded class (sockets, pipes) per executor thread.
const MAX_UNBOUNDED_WORKERS: u32 = 16;
/// Linux's IOV_MAX: the most iovecs one WRITEV may carry.
pub const IOV_MAX: usize = 1024;

type KeepAlive = Box<dyn Any>;

#[derive(Default)]
struct Slot {
    result: Option<i32>,
    waker: Option<Waker>,
    /// Buffers and descriptors the kernel may touch until the completion arrives.
    keepalive: Option<KeepAlive>,
    /// The future was dropped; free the slot when the completion arrives.
    abandoned: bool,
    in_use: bool,
}

pub struct Ring {
    ring: RefCell<IoUring>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    in_flight: Cell<usize>,
    executor_id: usize,
    eventfd: RawFd,
    /// Whether a page-cache write may skip the ring ([`crate::pagewrite`]).
    pub(crate) gate: crate::pagewrite::Gate,
    write_stats: Arc<crate::pagewrite::WriteStats>,
}

thread_local! {
    static RING: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
}

/// The calling executor's companion ring, created (with its reaper task) on first use.
/// Must be called from inside a glommio executor.
pub fn ring() -> Rc<Ring> {
    let id = glommio::executor().id();
    RING.with(|cell| {
        let mut cell = cell.borrow_mut();
        match cell.as_ref() {
            Some(r) if r.executor_id == id => r.clone(),
            _ => {
                // A new executor on this thread (tests run several in turn): the old ring's
                // reaper died with its executor, so it is drained and replaced.
                let r = Ring::new(id).expect("cannot create the companion io_uring ring");
                *cell = Some(r.clone());
                r
            }
        }
    })
}

impl Ring {
    fn new(executor_id: usize) -> io::Result<Rc<Ring>> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // Bound this thread's io-wq: operations that block (disk reads, fsync, unlink) run in
        // its worker threads, and without a cap the unbounded class grows a thread per
        // blocked operation up to RLIMIT_NPROC. Bounded workers keep the kernel's default
        // (a few per CPU). Refused by old kernels: then the defaults stand.
        let mut max = [0, MAX_UNBOUNDED_WORKERS];
        if let Err(e) = ring.submitter().register_iowq_max_workers(&mut max) {
            tracing::debug!("cannot bound the io-wq workers: {e}");
        }
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        ring.submitter().register_eventfd(efd)?;
        let ring = Rc::new(Ring {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            in_flight: Cell::new(0),
            executor_id,
            eventfd: efd,
            gate: Default::default(),
            write_stats: Default::default(),
        });
        let weak = Rc::downgrade(&ring);
        // SAFETY: `efd` is a fresh descriptor we own; a dup keeps `Ring::drop`'s close of the
        // original independent of glommio's close of this one.
        let efile = unsafe { glommio::io::BufferedFile::from_raw_fd(libc::dup(efd)) };
        glommio::spawn_local(async move {
            loop {
                let r = efile.read_at(0, 8).await;
                let Some(ring) = weak.upgrade() else { break };
                if let Err(e) = r {
                    tracing::error!("companion ring eventfd read failed: {e}");
                    break;
                }
                ring.reap();
            }
        })
        .detach();
        Ok(ring)
    }

    /// Moves completions into their slots and wakes their futures.
    fn reap(&self) {
        let mut ring = self.ring.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        for cqe in ring.completion() {
            let idx = cqe.user_data() as usize;
            let Some(slot) = slots.get_mut(idx) else {
                continue;
            };
            self.in_flight.set(self.in_flight.get() - 1);
            if slot.abandoned {
                *slot = Slot::default();
                self.free.borrow_mut().push(idx);
                continue;
            }
            slot.result = Some(cqe.result());
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    fn alloc_slot(&self, keepalive: Option<KeepAlive>) -> usize {
        let mut slots = self.slots.borrow_mut();
        let idx = self.free.borrow_mut().pop().unwrap_or_else(|| {
            slots.push(Slot::default());
            slots.len() - 1
        });
        slots[idx] = Slot {
            keepalive,
            in_use: true,
            ..Slot::default()
        };
        idx
    }

    /// Submits a chain of entries (linked by the caller's flags) and returns one future per
    /// entry. `keepalive` is held until the last entry of the chain completes.
    fn submit_chain(
        self: &Rc<Self>,
        entries: Vec<squeue::Entry>,
        keepalive: KeepAlive,
    ) -> io::Result<Vec<Op>> {
        let n = entries.len();
        let mut keepalive = Some(keepalive);
        let mut ops = Vec::with_capacity(n);
        let mut ring = self.ring.borrow_mut();
        let free = {
            let sq = ring.submission();
            sq.capacity() - sq.len()
        };
        if free < n {
            ring.submit()?;
        }
        for (i, e) in entries.into_iter().enumerate() {
            let ka = if i + 1 == n { keepalive.take() } else { None };
            let idx = self.alloc_slot(ka);
            // SAFETY: every pointer in `e` refers to memory owned by the keepalive of the
            // chain's last slot (or by `self`), which lives until that entry completes; linked
            // entries complete in order, so the earlier ones are done by then too.
            unsafe {
                ring.submission()
                    .push(&e.user_data(idx as u64))
                    .map_err(|_| io::Error::other("companion ring submission queue full"))?;
            }
            self.in_flight.set(self.in_flight.get() + 1);
            ops.push(Op {
                ring: self.clone(),
                idx,
                done: false,
            });
        }
        ring.submit()?;
        Ok(ops)
    }

    async fn run(self: &Rc<Self>, entry: squeue::Entry, keepalive: KeepAlive) -> io::Result<i32> {
        let op = self
            .submit_chain(vec![entry], keepalive)?
            .pop()
            .expect("one op");
        let res = op.await;
        if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res)
        }
    }

    /// This thread's page-cache writes by the path they took.
    pub fn write_stats(&self) -> Arc<crate::pagewrite::WriteStats> {
        self.write_stats.clone()
    }

    /// Writes `bufs` back to back at `offset` with as few WRITEV operations as possible (one
    /// per IOV_MAX buffers), straight from the caller's `Bytes`: no copy. Each runs inline
    /// as a pwritev where [`crate::pagewrite`] allows it, through the ring otherwise. Retries short writes;
    /// returns the error (ENOSPC, EIO) of the first write that fails, with the count of bytes
    /// that did reach the file before it.
    pub async fn write_all_at(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        offset: u64,
        bufs: Vec<Bytes>,
    ) -> Result<(), (io::Error, u64)> {
        self.write_all_at_or_ring(file, offset, bufs, true).await
    }

    /// [`Ring::write_all_at`], through the ring whatever [`crate::pagewrite`] says unless
    /// `inline_ok`: for a caller that knows the write would wait (another operation on the
    /// file holds its inode lock).
    pub async fn write_all_at_or_ring(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        mut offset: u64,
        mut bufs: Vec<Bytes>,
        inline_ok: bool,
    ) -> Result<(), (io::Error, u64)> {
        let mut written = 0u64;
        bufs.retain(|b| !b.is_empty());
        while !bufs.is_empty() {
            let take = bufs.len().min(IOV_MAX);
            let rest = bufs.split_off(take);
            let chunk = bufs;
            let iovecs: Box<[libc::iovec]> = chunk
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let entry = opcode::Writev::new(
                types::Fd(file.as_raw_fd()),
                iovecs.as_ptr(),
                iovecs.len() as u32,
            )
            .offset(offset)
            .build();
            let total: usize = chunk.iter().map(Bytes::len).sum();
            let inline = self.gate.try_write(
                &self.write_stats,
                inline_ok,
                file.as_raw_fd(),
                &iovecs,
                offset,
                total,
            );
            let n = match inline {
                Some(res) => res.map_err(|e| (e, written))?,
                None => self
                    .run(entry, Box::new((file.clone(), chunk.clone(), iovecs)))
                    .await
                    .map_err(|e| (e, written))? as usize,
            };
            if n == 0 && total > 0 {
                return Err((io::Error::from_raw_os_error(libc::ENOSPC), written));
            }
            offset += n as u64;
            written += n as u64;
            // Short write: keep the unwritten tail of this chunk in front of the rest.
            let mut tail = skip_bytes(chunk, n);
            tail.extend(rest);
            bufs = tail;
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`; shorter only at end of file.
    pub async fn read_at(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_at_into(file, offset, len, &mut buf).await?;
        Ok(buf)
    }

    /// Like [`Ring::read_at`], into `buf` (cleared first), so a caller can reuse one buffer
    /// and its already-faulted pages. If the future is dropped mid-read, `buf` is left empty:
    /// its memory stays with the operation until the kernel is done with it.
    pub async fn read_at_into(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        buf.clear();
        buf.reserve(len);
        let mut filled = read_cached(file.as_raw_fd(), offset, buf, len);
        while filled < len {
            // The Vec's heap block does not move while it is boxed in the keepalive; we take
            // it back out after the completion.
            let mut boxed = Box::new(std::mem::take(buf));
            let ptr = boxed.as_mut_ptr();
            let want = (len - filled).min(u32::MAX as usize) as u32;
            // SAFETY (pointer arithmetic): `filled < len <= capacity`.
            let entry = opcode::Read::new(
                types::Fd(file.as_raw_fd()),
                unsafe { ptr.add(filled) },
                want,
            )
            .offset(offset + filled as u64)
            .build();
            let op = self
                .submit_chain(vec![entry], Box::new((file.clone(), boxed)))?
                .pop()
                .expect("one op");
            let (res, ka) = op.await_with_keepalive().await;
            *buf = *ka
                .expect("read keeps its buffer")
                .downcast::<(Arc<OwnedFd>, Box<Vec<u8>>)>()
                .expect("read keepalive type")
                .1;
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            if res == 0 {
                break;
            }
            filled += res as usize;
            // SAFETY: the kernel initialised `filled` bytes from the start of the buffer.
            unsafe { buf.set_len(filled) };
        }
        Ok(())
    }

    /// fdatasync(2) through the ring, so a flush never blocks the executor thread.
    pub async fn fdatasync(self: &Rc<Self>, file: &Arc<OwnedFd>) -> io::Result<()> {
        if let Some(e) = crate::fault::fdatasync_fault(file) {
            return Err(e);
        }
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        self.run(entry, Box::new(file.clone())).await.map(|_| ())
    }

    /// fallocate(2) through the ring (block allocation can take a while on a big file).
    pub async fn fallocate(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        mode: i32,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let entry = opcode::Fallocate::new(types::Fd(file.as_raw_fd()), len)
            .offset(offset)
            .mode(mode)
            .build();
        self.run(entry, Box::new(file.clone())).await.map(|_| ())
    }

    /// ftruncate(2) through the ring (freeing a big file's tail blocks can take a while).
    pub async fn ftruncate(self: &Rc<Self>, file: &Arc<OwnedFd>, len: u64) -> io::Result<()> {
        let entry = opcode::Ftruncate::new(types::Fd(file.as_raw_fd()), len).build();
        self.run(entry, Box::new(file.clone())).await.map(|_| ())
    }

    /// unlink(2) through the ring: freeing a large file's extents can take long enough to
    /// stall an executor if done inline.
    pub async fn unlink(self: &Rc<Self>, path: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr()).build();
        self.run(entry, Box::new(c)).await.map(|_| ())
    }

    /// unlinkat(2) of `name` in the directory `dir`, through the ring. A log removes its files
    /// relative to the directory it opened, so a log that was closed (its topic deleted, and
    /// maybe created again under the same name) can never remove a newer directory's files.
    pub async fn unlink_at(self: &Rc<Self>, dir: &Arc<OwnedFd>, name: &str) -> io::Result<()> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let entry = opcode::UnlinkAt::new(types::Fd(dir.as_raw_fd()), c.as_ptr()).build();
        self.run(entry, Box::new((dir.clone(), c)))
            .await
            .map(|_| ())
    }

    /// Splices up to `len` bytes of `file` at `offset` into the (empty) pipe through the
    /// ring: reading the file may wait for the disk, which must not stall the executor. The
    /// pipe's other end goes to the socket inline ([`Pipe::splice_out`]). Returns the bytes
    /// moved (0 at end of file).
    pub async fn splice_to_pipe(
        self: &Rc<Self>,
        file: &Arc<OwnedFd>,
        offset: u64,
        pipe: &Arc<Pipe>,
        len: u32,
    ) -> io::Result<usize> {
        let entry = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            offset as i64,
            types::Fd(pipe.write_fd()),
            -1,
            len,
        )
        .build();
        self.run(entry, Box::new((file.clone(), pipe.clone())))
            .await
            .map(|n| n as usize)
    }

    /// Waits until `fd` is writable (or errs or hangs up), at most `timeout`: Ok(false) when
    /// the time ran out. A poll waits in the kernel's wait queue, not in an io-wq worker
    /// thread, so any number of connections can wait for slow readers without threads.
    /// The caller keeps `fd` open until this returns (or drops it: a hang-up from the
    /// connection's shutdown completes the poll).
    pub async fn wait_writable(
        self: &Rc<Self>,
        fd: RawFd,
        timeout: std::time::Duration,
    ) -> io::Result<bool> {
        let ts = Box::new(
            types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos()),
        );
        let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .flags(squeue::Flags::IO_LINK);
        let limit = opcode::LinkTimeout::new(&*ts as *const types::Timespec).build();
        let mut ops = self.submit_chain(vec![poll, limit], Box::new(ts))?;
        let limit = ops.pop().expect("two ops");
        let poll = ops.pop().expect("two ops");
        let polled = poll.await;
        let _ = limit.await;
        match polled {
            n if n >= 0 => Ok(true),
            n if n == -libc::ECANCELED => Ok(false),
            n => Err(io::Error::from_raw_os_error(-n)),
        }
    }

    /// Operations submitted and not yet completed (for tests and shutdown).
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Closing the ring with operations in flight would let the kernel finish them after
        // their keepalives are freed, so wait them out first. Only reached at executor end.
        let ring = self.ring.get_mut();
        while self.in_flight.get() > 0 {
            if ring.submit_and_wait(1).is_err() {
                break;
            }
            let n = ring.completion().count();
            self.in_flight.set(self.in_flight.get().saturating_sub(n));
        }
        // SAFETY: we own the eventfd; nothing else closes this number.
        unsafe { libc::close(self.eventfd) };
    }
}

fn skip_bytes(mut bufs: Vec<Bytes>, mut n: usize) -> Vec<Bytes> {
    let mut i = 0;
    while i < bufs.len() && n >= bufs[i].len() {
        n -= bufs[i].len();
        i += 1;
    }
    let mut rest = bufs.split_off(i);
    if let Some(first) = rest.first_mut() {
        *first = first.slice(n..);
    }
    rest
}

/// Page-cache fast path: preadv2 with RWF_NOWAIT copies what is cached without ever waiting
/// for the disk (it fails with EAGAIN instead), saving the ring round trip and task wake-up
/// (several microseconds) on the common, cached read. Returns the bytes read into `buf`.
fn read_cached(fd: RawFd, offset: u64, buf: &mut Vec<u8>, len: usize) -> usize {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the iovec points at `len` bytes of `buf`'s spare capacity, which outlives the
    // call; the kernel writes at most `len` bytes there.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
    if n <= 0 {
        return 0; // EAGAIN (not cached), EOF, or an error the ring read will report
    }
    // SAFETY: the kernel initialised `n <= len` bytes.
    unsafe { buf.set_len(n as usize) };
    n as usize
}

/// A completion future. Dropping it before completion leaves the slot (and its keepalive) to
/// be freed by the reaper when the kernel is done.
pub struct Op {
    ring: Rc<Ring>,
    idx: usize,
    done: bool,
}

impl Op {
    async fn await_with_keepalive(mut self) -> (i32, Option<KeepAlive>) {
        let res = (&mut self).await;
        // The slot was released by poll; its keepalive was parked in `taken`.
        let ka = self.ring.slots.borrow_mut()[self.idx].keepalive.take();
        self.ring.free.borrow_mut().push(self.idx);
        self.ring.slots.borrow_mut()[self.idx] = Slot::default();
        (res, ka)
    }
}

impl Future for Op {
    type Output = i32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        self.ring.reap();
        let idx = self.idx;
        let mut slots = self.ring.slots.borrow_mut();
        let slot = &mut slots[idx];
        match slot.result {
            Some(r) => {
                drop(slots);
                self.done = true;
                Poll::Ready(r)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let mut slots = self.ring.slots.borrow_mut();
        let slot = &mut slots[self.idx];
        if !slot.in_use {
            return; // released by await_with_keepalive
        }
        if self.done || slot.result.is_some() {
            *slot = Slot::default();
            self.ring.free.borrow_mut().push(self.idx);
        } else {
            slot.abandoned = true;
            slot.waker = None;
        }
    }
}

/// A pipe for splicing, sized to the chunk a single splice moves.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    pub fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument; failure only leaves the default size.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, capacity as i32) };
        let got = if got > 0 {
            got
        } else {
            // Refused (over pipe-max-size or the user's pipe budget): whatever it has.
            // SAFETY: F_GETPIPE_SZ takes no argument.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        let capacity = if got > 0 { got as usize } else { 4096 };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
    /// Moves up to `len` bytes of `file` from `offset` into this (empty) pipe, inline, if
    /// every page of the range is in the page cache (cachestat(2)): then the splice only
    /// takes page references and returns at once, without the io_uring round trip and the
    /// io-wq worker an io_uring splice always costs (the kernel punts IORING_OP_SPLICE to a
    /// worker). Ok(None): not all of it is cached, the kernel has no cachestat, or the pipe
    /// is full: splice through the ring, which may wait for the disk off the executor.
    /// (Pages evicted between the check and the splice make this one splice wait for the
    /// disk on the executor: a rare, bounded stall.)
    pub fn splice_in_cached(
        &self,
        file: RawFd,
        offset: u64,
        len: usize,
    ) -> io::Result<Option<usize>> {
        if len == 0 || !all_cached(file, offset, len as u64) {
            return Ok(None);
        }
        let mut off = offset as i64;
        loop {
            // SAFETY: splice between two descriptors the caller keeps open; `off` is ours.
            let n = unsafe {
                libc::splice(
                    file,
                    &mut off,
                    self.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    /// Moves up to `len` bytes from the pipe to the non-blocking socket `sock`, inline:
    /// splicing out of a pipe never waits for a disk, and a socket with room takes the
    /// pages at once, so this costs no io_uring round trip and no io-wq worker (a worker
    /// blocked on a consumer that stopped reading was a thread per stuck consumer).
    /// Ok(None): the socket is full, wait for it to be writable.
    pub fn splice_out(&self, sock: RawFd, len: usize) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: splice between two descriptors the caller keeps open; no user memory.
            let n = unsafe {
                libc::splice(
                    self.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    sock,
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            if n > 0 {
                return Ok(Some(n as usize));
            }
            if n == 0 {
                // Only an empty pipe without writers gives 0; the caller's pipe has both.
                return Err(io::ErrorKind::WriteZero.into());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }
}

/// cachestat(2)'s system call number (Linux 6.5; one number on every architecture).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

thread_local! {
    /// Cleared when the kernel answers ENOSYS: no more cachestat calls on this thread.
    static HAVE_CACHESTAT: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether every page of `file[offset..offset + len]` is in the page cache (false when the
/// kernel cannot say).
pub fn all_cached(file: RawFd, offset: u64, len: u64) -> bool {
    if !HAVE_CACHESTAT.with(|h| h.get()) {
        return false;
    }
    const PAGE: u64 = 4096;
    let first = offset / PAGE;
    let last = (offset + len - 1) / PAGE;
    let range = CachestatRange {
        off: first * PAGE,
        len: (last + 1 - first) * PAGE,
    };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both ours and of the kernel's
    // layout (struct cachestat_range, struct cachestat); flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if r < 0 {
        if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            HAVE_CACHESTAT.with(|h| h.set(false));
        }
        return false;
    }
    let pages = last - first + 1;
    stat.nr_cache >= pages
}
