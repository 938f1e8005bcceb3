//! One client connection: a reader that frames requests and starts them (Kafka clients
//! pipeline), and a writer that sends the answers in request order, splicing record bytes
//! from the page cache when zero copy is on.

use crate::dispatch;
use crate::frame::{read_frame, FrameEnd, FrameLimits, Framer, Held};
use crate::limits::{Admission, Cause};
use crate::shard::Shard;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use runnel_protocol::Outcome;
use runnel_protocol::Part;
use runnel_runtime::{ring, Pipe};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The most one splice moves: the pipe's size.
const SPLICE_CHUNK: usize = 1 << 20;
/// Idle pipes a shard keeps for the next splice (each is two descriptors).
const MAX_IDLE_PIPES: usize = 64;

thread_local! {
    /// This shard's empty pipes. A connection takes one for a splice and gives it back
    /// empty: an idle connection holds one descriptor (its socket), not three.
    static PIPES: RefCell<Vec<Arc<Pipe>>> = const { RefCell::new(Vec::new()) };
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, admission: Admission) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let counters = shard.counters();
    counters.connections_accepted.incr();
    counters.connections_open.incr();
    shard.connections.set(shard.connections.get() + 1);
    if let Err(e) = run(&shard, stream, &peer).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
    shard.counters().connections_open.sub(1);
    shard.connections.set(shard.connections.get() - 1);
    drop(admission);
}

/// Request order on one connection, as Kafka keeps it: Produce requests pipeline (their
/// appends are dispatched in order), every other request waits until the answers to all
/// requests before it are out, and a Produce waits for the non-Produce requests before it.
/// So a CreateTopics, DeleteRecords or Metadata (auto-create) is done before what follows it
/// runs, and a ListOffsets sees the appends sent before it.
#[derive(Default)]
struct Order {
    dispatched: Cell<u64>,
    written: Cell<u64>,
    /// Sequence number of the last non-Produce request dispatched.
    last_barrier: Cell<u64>,
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Order {
    async fn wait_until(&self, target: u64) {
        futures_lite::future::poll_fn(|cx| {
            if self.written.get() >= target || self.closed.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn written_one(&self) {
        self.written.set(self.written.get() + 1);
        self.wake();
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake();
    }
}

/// What the writer needs for one request: its answer and the budget it holds until sent.
struct InFlight {
    task: JoinHandle<Outcome>,
    _count: glommio::sync::StaticPermit,
    _bytes: Held,
}

async fn run(shard: &Rc<Shard>, stream: TcpStream, peer: &str) -> io::Result<()> {
    let config = shard.config();
    let _ = stream.set_nodelay(true);
    let send_timeout = Duration::from_millis(config.socket_send_timeout_ms);
    // A consumer that stops reading is disconnected rather than holding its requests,
    // buffers and segment files forever.
    let _ = stream.set_write_timeout(Some(send_timeout));
    // Splices out of the pipe run inline and must not block the executor: the socket is
    // non-blocking (glommio's own sends and receives go through io_uring, which copes).
    let fd = stream.as_raw_fd();
    set_nonblocking(fd)?;

    let (mut reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = futures_channel::mpsc::unbounded::<InFlight>();
    let in_flight = Rc::new(glommio::sync::Semaphore::new(u64::from(
        config.connection_max_in_flight_requests,
    )));
    let order = Rc::new(Order::default());
    let writer_task = glommio::spawn_local(write_loop(
        shard.clone(),
        writer,
        fd,
        rx,
        order.clone(),
        peer.to_string(),
    ))
    .detach();

    let limits = FrameLimits {
        max: config.max_request_bytes as usize,
        idle: Duration::from_millis(config.connections_max_idle_ms),
        timeout: Duration::from_millis(config.request_read_timeout_ms),
    };
    let client_host: Rc<str> = match peer.rsplit_once(':') {
        Some((ip, _)) => format!("/{}", ip.trim_matches(['[', ']'])).into(),
        None => format!("/{peer}").into(),
    };
    let mut framer = Framer::default();
    let result = loop {
        let Ok(count) = in_flight.acquire_static_permit(1).await else {
            break Ok(()); // the writer stopped
        };
        let next = futures_lite::future::or(
            read_frame(&mut reader, &mut framer, &limits, &shard.request_budget),
            async {
                shard.stopping.wait().await;
                Err(FrameEnd::Stopping)
            },
        )
        .await;
        let (frame, bytes) = match next {
            Ok(f) => f,
            Err(FrameEnd::Closed | FrameEnd::Stopping) => break Ok(()),
            Err(FrameEnd::Idle) => {
                crate::limits::hit(shard.counters(), Cause::Idle, format_args!("{peer}"));
                break Ok(());
            }
            Err(FrameEnd::Slow) => {
                crate::limits::hit(shard.counters(), Cause::SlowRequest, format_args!("{peer}"));
                break Ok(());
            }
            Err(FrameEnd::Bad(reason)) => {
                shard.counters().request_errors.incr();
                tracing::warn!(%peer, "closing connection: {reason}");
                break Ok(());
            }
            Err(FrameEnd::Io(e)) => break Err(e),
        };
        let is_produce = frame.len() >= 2 && frame[..2] == [0, 0];
        let seq = order.dispatched.get() + 1;
        if is_produce {
            order.wait_until(order.last_barrier.get()).await;
        } else {
            order.wait_until(seq - 1).await;
            order.last_barrier.set(seq);
        }
        if order.closed.get() {
            break Ok(()); // the writer stopped (socket error or a close)
        }
        order.dispatched.set(seq);
        let task = dispatch::dispatch(shard, frame.freeze(), &client_host).await;
        let item = InFlight {
            task,
            _count: count,
            _bytes: bytes,
        };
        if tx.unbounded_send(item).is_err() {
            break Ok(());
        }
    };
    drop(tx);
    let _ = writer_task.await;
    result
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller's stream owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

async fn write_loop(
    shard: Rc<Shard>,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    fd: RawFd,
    mut rx: futures_channel::mpsc::UnboundedReceiver<InFlight>,
    order: Rc<Order>,
    peer: String,
) {
    use futures_lite::StreamExt;
    let zero_copy = shard.config().zero_copy;
    let send_timeout = Duration::from_millis(shard.config().socket_send_timeout_ms);
    let mut copy_buf = Vec::new();
    // Answers ready at once go out in one send (see `gather_ready`); the first answer that
    // is not ready, or not small, waits here for the next turn.
    let (mut gathered, mut batch) = (Vec::new(), Vec::new());
    let mut held: Option<(InFlight, Option<Outcome>)> = None;
    loop {
        let (mut item, ready) = match held.take() {
            Some(h) => h,
            None => match rx.next().await {
                Some(item) => (item, None),
                None => break,
            },
        };
        let outcome = match ready {
            Some(o) => o,
            None => (&mut item.task)
                .await
                .unwrap_or_else(|| Outcome::Close("request task cancelled".into())),
        };
        let result = match outcome {
            Outcome::Reply(resp) => {
                if small_answer(&resp.parts) {
                    held = gather_ready(
                        &mut rx,
                        |i: &mut InFlight| &mut i.task,
                        &resp.parts,
                        &mut gathered,
                        &mut batch,
                    )
                    .await;
                }
                let out = Out {
                    writer: &mut writer,
                    fd,
                    zero_copy,
                    send_timeout,
                };
                if batch.is_empty() {
                    send(&shard, out, &mut copy_buf, resp.parts).await
                } else {
                    let r = out.writer.write_all(&gathered).await;
                    // Their budgets go back with the answers sent.
                    for _ in batch.drain(..) {
                        order.written_one();
                    }
                    r
                }
            }
            Outcome::NoReply => Ok(()),
            Outcome::Close(reason) => {
                shard.counters().request_errors.incr();
                tracing::warn!(%peer, "closing connection: {}", one_line(&reason));
                Err(io::Error::new(io::ErrorKind::InvalidData, reason))
            }
        };
        // The request's budget is released here, with its answer sent.
        drop(item);
        if let Err(e) = result {
            // Our send timeout or glommio's (no errno); a kernel ETIMEDOUT is a dead peer.
            if e.kind() == io::ErrorKind::TimedOut && e.raw_os_error().is_none() {
                crate::limits::hit(shard.counters(), Cause::SlowReader, format_args!("{peer}"));
            }
            tracing::debug!(%peer, "connection closed: {e}");
            break;
        }
        order.written_one();
    }
    order.close();
    // Wake the reader if it waits for a frame: shutting the socket down ends its read. (The
    // reader's half keeps the socket open, so `fd` is still this connection's.)
    rx.close();
    // SAFETY: shutdown on a descriptor the connection's stream still owns.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// The most answer bytes gathered into one send.
const GATHER_MAX: usize = 64 << 10;

/// An answer made of bytes alone (no segment range to splice), small enough to gather.
fn small_answer(parts: &[Part]) -> bool {
    let mut len = 0;
    for p in parts {
        match p {
            Part::Bytes(b) => len += b.len(),
            Part::File { .. } => return false,
        }
    }
    len <= GATHER_MAX / 4
}

/// After an answer of bytes alone (`first`), takes the answers that follow it and are
/// already done and small, and copies them all into `gathered` (cleared first), in order;
/// their requests go into `batch`. With several produce requests in flight on a connection,
/// one log write often completes a few of them at once; their answers (tens of bytes each)
/// then go out in one send instead of one each. On loopback each send also carries the
/// delivery into the client's socket and the client's wake-up: the answers' sends were 13 %
/// of the broker's CPU when producing. The copy is of answer headers, never of record bytes
/// (answers with segment ranges are not gathered). Returns the first request not taken (with
/// its outcome if it was already done), which the caller handles next. An empty `batch`:
/// nothing was ready, `gathered` is not used and `first` goes out as it is.
/// (`task` finds a request's answer task in `T`: an `InFlight`, or a bare task in tests.)
async fn gather_ready<T>(
    rx: &mut futures_channel::mpsc::UnboundedReceiver<T>,
    task: impl Fn(&mut T) -> &mut JoinHandle<Outcome>,
    first: &[Part],
    gathered: &mut Vec<u8>,
    batch: &mut Vec<T>,
) -> Option<(T, Option<Outcome>)> {
    debug_assert!(
        batch.is_empty(),
        "the last gathering's requests are answered"
    );
    gathered.clear();
    let mut held = None;
    while gathered.len() < GATHER_MAX {
        let Ok(mut next) = rx.try_recv() else { break };
        match futures_lite::future::poll_once(task(&mut next)).await {
            None => {
                held = Some((next, None));
                break;
            }
            Some(done) => {
                let outcome =
                    done.unwrap_or_else(|| Outcome::Close("request task cancelled".into()));
                match outcome {
                    Outcome::Reply(resp) if small_answer(&resp.parts) => {
                        if batch.is_empty() {
                            append_parts(gathered, first);
                        }
                        append_parts(gathered, &resp.parts);
                        batch.push(next);
                    }
                    other => {
                        held = Some((next, Some(other)));
                        break;
                    }
                }
            }
        }
    }
    held
}

fn append_parts(out: &mut Vec<u8>, parts: &[Part]) {
    for p in parts {
        if let Part::Bytes(b) = p {
            out.extend_from_slice(b);
        }
    }
}

/// Reading a partition's segment bytes for an answer failed. An I/O error from the device
/// (not a cancellation) takes the partition offline on its owner shard, as Kafka takes a
/// log dir offline on an IOException from a read; the answer is cut, so the connection
/// closes.
fn read_failed(
    shard: &Rc<Shard>,
    source: &Option<(Arc<str>, i32)>,
    file: &Arc<OwnedFd>,
    e: &io::Error,
) {
    let (Some(key), Some(errno)) = (source.clone(), e.raw_os_error()) else {
        return;
    };
    if !runnel_log::is_device_error(e) {
        return;
    }
    let file = file.clone();
    tracing::error!(topic = %key.0, partition = key.1, "reading the partition's segment failed: {e}");
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let owner = shard.owner(&key.0, key.1);
        shard
            .call(owner, |reply| crate::shard::ShardMsg::ReadFailed {
                key,
                file,
                errno,
                reply,
            })
            .await;
    })
    .detach();
}

/// A decoder's message on one log line: control characters (a newline from a nested error)
/// would split the entry.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .filter(|p| !p.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Where and how answers go out.
struct Out<'a> {
    writer: &'a mut futures_lite::io::WriteHalf<TcpStream>,
    fd: RawFd,
    zero_copy: bool,
    send_timeout: Duration,
}

async fn send(
    shard: &Rc<Shard>,
    out: Out<'_>,
    copy_buf: &mut Vec<u8>,
    parts: Vec<Part>,
) -> io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => out.writer.write_all(&b).await?,
            Part::File {
                file,
                offset,
                len,
                source,
            } if out.zero_copy => {
                // The bytes before this part went out through glommio's ring, and that
                // write has completed: the splice comes after them.
                let pipe = PIPES
                    .with(|p| p.borrow_mut().pop())
                    .map_or_else(|| Pipe::new(SPLICE_CHUNK).map(Arc::new), Ok)?;
                let read_failed = |e: &io::Error| read_failed(shard, &source, &file, e);
                splice_range(
                    &file,
                    offset,
                    len,
                    &pipe,
                    out.fd,
                    out.send_timeout,
                    &read_failed,
                )
                .await?;
                // Only an emptied pipe goes back (an error above drops it, bytes and all).
                PIPES.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < MAX_IDLE_PIPES {
                        p.push(pipe);
                    }
                });
                shard.counters().fetch_bytes_spliced.add(len);
            }
            Part::File {
                file,
                offset,
                len,
                source,
            } => {
                // The copy path: through one reused buffer in chunks, as a well-written
                // copying server would (a fresh buffer per response costs page faults).
                let end = offset + len;
                let mut at = offset;
                while at < end {
                    let n = (end - at).min(SPLICE_CHUNK as u64) as usize;
                    if let Err(e) = ring().read_at_into(&file, at, n, copy_buf).await {
                        read_failed(shard, &source, &file, &e);
                        return Err(e);
                    }
                    if copy_buf.len() != n {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "segment file shorter than its read plan",
                        ));
                    }
                    out.writer.write_all(copy_buf).await?;
                    at += n as u64;
                }
                shard.counters().fetch_bytes_copied.add(len);
            }
        }
    }
    out.writer.flush().await
}

/// file[offset..offset+len] to the socket through the pipe: the bytes go from the page cache
/// to the socket without entering user space. Into the pipe through the ring (the file may
/// need the disk); out of it inline while the socket has room, waiting for room with a poll
/// (no thread) for at most `send_timeout` each time.
async fn splice_range(
    file: &Arc<OwnedFd>,
    mut offset: u64,
    len: u64,
    pipe: &Arc<Pipe>,
    sock: RawFd,
    send_timeout: Duration,
    read_failed: &dyn Fn(&io::Error),
) -> io::Result<()> {
    let ring = ring();
    let end = offset + len;
    while offset < end {
        let want = (end - offset).min(pipe.capacity() as u64) as u32;
        // Inline when the range is in the page cache (the usual fetch of recent data),
        // else through the ring, which may wait for the disk off the executor.
        let n_in = match pipe.splice_in_cached(file.as_raw_fd(), offset, want as usize) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => ring.splice_to_pipe(file, offset, pipe, want).await,
            Err(e) => Err(e),
        }
        .inspect_err(read_failed)?;
        if n_in == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file shorter than its read plan",
            ));
        }
        let mut left = n_in;
        // The timeout runs from the last bytes the socket took, not from each poll (a poll
        // that says writable while the splice still cannot go on must not loop forever).
        let mut progress = std::time::Instant::now();
        while left > 0 {
            match pipe.splice_out(sock, left)? {
                Some(n) => {
                    left -= n;
                    progress = std::time::Instant::now();
                }
                None => {
                    let wait = send_timeout.saturating_sub(progress.elapsed());
                    if wait.is_zero() || !ring.wait_writable(sock, wait).await? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took no bytes for --socket-send-timeout-ms",
                        ));
                    }
                }
            }
        }
        offset += n_in as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &'static [u8]) -> Outcome {
        Outcome::Reply(runnel_protocol::Response {
            parts: vec![Part::Bytes(bytes::Bytes::from_static(bytes))],
        })
    }

    #[test]
    fn answers_already_done_go_out_together_in_order_up_to_the_first_not_done() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (tx, mut rx) = futures_channel::mpsc::unbounded::<JoinHandle<Outcome>>();
                let (go_tx, go_rx) = futures_channel::oneshot::channel::<()>();
                for b in [&b"b"[..], b"c"] {
                    tx.unbounded_send(glommio::spawn_local(async move { reply(b) }).detach())
                        .unwrap();
                }
                // Not done yet: the gathering stops in front of it.
                tx.unbounded_send(
                    glommio::spawn_local(async move {
                        let _ = go_rx.await;
                        reply(b"d")
                    })
                    .detach(),
                )
                .unwrap();
                tx.unbounded_send(glommio::spawn_local(async { reply(b"e") }).detach())
                    .unwrap();
                // (The tasks run: the three ready ones finish.)
                runnel_runtime::yield_now().await;
                runnel_runtime::yield_now().await;
                let first = [Part::Bytes(bytes::Bytes::from_static(b"a"))];
                let (mut gathered, mut batch) = (Vec::new(), Vec::new());
                let held = gather_ready(&mut rx, |t| t, &first, &mut gathered, &mut batch).await;
                assert_eq!(gathered, b"abc");
                assert_eq!(batch.len(), 2);
                let (mut next, ready) = held.expect("the answer not done is handed back");
                assert!(ready.is_none());
                go_tx.send(()).unwrap();
                match (&mut next).await {
                    Some(Outcome::Reply(r)) => assert_eq!(r.len(), 1),
                    _ => panic!("d's answer"),
                }
                // An answer with a segment range is not gathered: handed back done.
                let file = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
                tx.unbounded_send(
                    glommio::spawn_local(async move {
                        Outcome::Reply(runnel_protocol::Response {
                            parts: vec![Part::File {
                                file,
                                offset: 0,
                                len: 1,
                                source: None,
                            }],
                        })
                    })
                    .detach(),
                )
                .unwrap();
                runnel_runtime::yield_now().await;
                runnel_runtime::yield_now().await;
                batch.clear();
                let held = gather_ready(&mut rx, |t| t, &first, &mut gathered, &mut batch).await;
                // "e" was done and small: gathered after "a"; the file answer stops it.
                assert_eq!(gathered, b"ae");
                assert_eq!(batch.len(), 1);
                assert!(matches!(held, Some((_, Some(Outcome::Reply(_))))));
                // Nothing queued: nothing gathered, and `first` goes out alone.
                batch.clear();
                let held = gather_ready(&mut rx, |t| t, &first, &mut gathered, &mut batch).await;
                assert!(held.is_none() && batch.is_empty() && gathered.is_empty());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn one_line_keeps_a_log_entry_whole() {
        assert_eq!(
            super::one_line("cannot decode Produce v9:\nbad tagged field\r\n"),
            "cannot decode Produce v9: / bad tagged field"
        );
        assert_eq!(super::one_line("plain"), "plain");
    }
}
