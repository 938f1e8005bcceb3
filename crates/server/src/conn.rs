//! One client connection: a reader that frames requests and starts them (Kafka clients
//! pipeline), and a writer that sends the answers in request order, splicing record bytes
//! from the page cache when zero copy is on.

use crate::dispatch;
use crate::shard::Shard;
use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use runnel_protocol::Outcome;
use runnel_protocol::Part;
use runnel_runtime::{ring, Pipe};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Requests a connection may have started and not yet answered. Kafka clients keep at most
/// 5 produce requests in flight; the bound only stops a runaway client from queueing
/// unbounded work.
const MAX_IN_FLIGHT: usize = 64;
/// A consumer that takes no bytes for this long has its connection closed: a blocking
/// splice to a full socket gives up after it.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most one splice moves: the pipe's size.
const SPLICE_CHUNK: usize = 1 << 20;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
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
    _bytes: glommio::sync::StaticPermit,
}

async fn run(shard: &Rc<Shard>, stream: TcpStream, peer: &str) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // A consumer that stops reading, or a client that goes quiet, is disconnected rather
    // than holding its requests, buffers and segment files forever.
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let idle = Duration::from_millis(shard.config().connections_max_idle_ms);
    let _ = stream.set_read_timeout(Some(idle));
    // The splices need the socket as a descriptor they can hold on to: a duplicate keeps the
    // socket open until the last splice referring to it has completed.
    // SAFETY: dup of a descriptor the stream owns; the result is ours alone (or -1).
    let dup = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    let sock: Arc<OwnedFd> = Arc::new(unsafe { OwnedFd::from_raw_fd(dup) });
    prepare_socket(&sock)?;

    let (mut reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = futures_channel::mpsc::unbounded::<InFlight>();
    let in_flight = Rc::new(glommio::sync::Semaphore::new(MAX_IN_FLIGHT as u64));
    let order = Rc::new(Order::default());
    let writer_task = glommio::spawn_local(write_loop(
        shard.clone(),
        writer,
        sock,
        rx,
        order.clone(),
        peer.to_string(),
    ))
    .detach();

    let max = shard.config().max_request_bytes as usize;
    let client_host: Rc<str> = match peer.rsplit_once(':') {
        Some((ip, _)) => format!("/{}", ip.trim_matches(['[', ']'])).into(),
        None => format!("/{peer}").into(),
    };
    let result = loop {
        let Ok(count) = in_flight.acquire_static_permit(1).await else {
            break Ok(()); // the writer stopped
        };
        let next = futures_lite::future::or(
            async { Some(read_frame(&mut reader, max, peer, &shard.request_budget).await) },
            async {
                shard.stopping.wait().await;
                None
            },
        )
        .await;
        let (frame, bytes) = match next {
            None => break Ok(()), // shutting down: stop reading, answer what was started
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => break Ok(()), // the client closed
            Some(Err(e)) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    shard.counters().request_errors.incr();
                }
                break Err(e);
            }
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

fn prepare_socket(sock: &OwnedFd) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    // Splices run blocking in io_uring's workers: the socket must block (glommio's own
    // sends and receives go through io_uring, which copes with either), and give up after
    // SEND_TIMEOUT so a consumer that stops reading cannot hold a worker forever.
    // SAFETY: fcntl and setsockopt on a descriptor we own, with a correctly sized timeval.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        let tv = libc::timeval {
            tv_sec: SEND_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads one size-prefixed frame, holding `size` bytes of the shard's request budget for it
/// (the permit goes with the request until its answer is sent). None: the client closed
/// between requests.
async fn read_frame(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    max: usize,
    peer: &str,
    budget: &Rc<glommio::sync::Semaphore>,
) -> io::Result<Option<(BytesMut, glommio::sync::StaticPermit)>> {
    let mut size = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut size[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max {
        tracing::warn!(
            %peer,
            "closing connection: request frame of {size} bytes exceeds --max-request-bytes={max}"
        );
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized frame",
        ));
    }
    // Every request's bytes count against the shard's budget until answered, so clients
    // cannot make the broker hold more than --queued-max-request-bytes per shard.
    let permit = budget
        .acquire_static_permit(size as u64)
        .await
        .map_err(|_| io::Error::other("the shard is shutting down"))?;
    let mut buf = BytesMut::zeroed(size as usize);
    reader.read_exact(&mut buf).await?;
    Ok(Some((buf, permit)))
}

async fn write_loop(
    shard: Rc<Shard>,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    sock: Arc<OwnedFd>,
    mut rx: futures_channel::mpsc::UnboundedReceiver<InFlight>,
    order: Rc<Order>,
    peer: String,
) {
    use futures_lite::StreamExt;
    let zero_copy = shard.config().zero_copy;
    let mut pipe: Option<Arc<Pipe>> = None;
    let mut copy_buf = Vec::new();
    while let Some(item) = rx.next().await {
        let outcome = item
            .task
            .await
            .unwrap_or_else(|| Outcome::Close("request task cancelled".into()));
        let result = match outcome {
            Outcome::Reply(resp) => {
                send(
                    &shard,
                    &mut writer,
                    &sock,
                    &mut pipe,
                    &mut copy_buf,
                    resp.parts,
                    zero_copy,
                )
                .await
            }
            Outcome::NoReply => Ok(()),
            Outcome::Close(reason) => {
                shard.counters().request_errors.incr();
                tracing::warn!(%peer, "closing connection: {reason}");
                Err(io::Error::new(io::ErrorKind::InvalidData, reason))
            }
        };
        // The request's budget is released here, with its answer sent.
        drop(item._count);
        drop(item._bytes);
        if let Err(e) = result {
            tracing::debug!(%peer, "connection closed: {e}");
            break;
        }
        order.written_one();
    }
    order.close();
    // Wake the reader if it waits for a frame: shutting the socket down ends its read.
    rx.close();
    // SAFETY: shutdown on a descriptor we own.
    unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
}

async fn send(
    shard: &Shard,
    writer: &mut futures_lite::io::WriteHalf<TcpStream>,
    sock: &Arc<OwnedFd>,
    pipe: &mut Option<Arc<Pipe>>,
    copy_buf: &mut Vec<u8>,
    parts: Vec<Part>,
    zero_copy: bool,
) -> io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => writer.write_all(&b).await?,
            Part::File { file, offset, len } if zero_copy => {
                // The bytes before this part went out through glommio's ring, and that
                // write has completed: the splice on the companion ring comes after them.
                let pipe = match pipe {
                    Some(p) => p.clone(),
                    None => pipe.insert(Arc::new(Pipe::new(SPLICE_CHUNK)?)).clone(),
                };
                splice_range(&file, offset, len, &pipe, sock).await?;
                shard.counters().fetch_bytes_spliced.add(len);
            }
            Part::File { file, offset, len } => {
                // The copy path: through one reused buffer in chunks, as a well-written
                // copying server would (a fresh buffer per response costs page faults).
                let end = offset + len;
                let mut at = offset;
                while at < end {
                    let n = (end - at).min(SPLICE_CHUNK as u64) as usize;
                    ring().read_at_into(&file, at, n, copy_buf).await?;
                    if copy_buf.len() != n {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "segment file shorter than its read plan",
                        ));
                    }
                    writer.write_all(copy_buf).await?;
                    at += n as u64;
                }
                shard.counters().fetch_bytes_copied.add(len);
            }
        }
    }
    writer.flush().await
}

/// file[offset..offset+len] to the socket through the pipe: the bytes go from the page cache
/// to the socket without entering user space.
async fn splice_range(
    file: &Arc<OwnedFd>,
    mut offset: u64,
    len: u64,
    pipe: &Arc<Pipe>,
    sock: &Arc<OwnedFd>,
) -> io::Result<()> {
    let ring = ring();
    let end = offset + len;
    while offset < end {
        let want = (end - offset).min(pipe.capacity() as u64) as u32;
        let (n_in, n_out) = ring.splice_via_pipe(file, offset, pipe, sock, want).await?;
        if n_in == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file shorter than its read plan",
            ));
        }
        let mut left = n_in - n_out;
        while left > 0 {
            let n = ring.splice_from_pipe(pipe, sock, left as u32).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= n;
        }
        offset += n_in as u64;
    }
    Ok(())
}
