//! Request framing: a size-prefixed frame read off a connection, with its deadlines and
//! the shard's request budget taken as its bytes arrive. Generic over the reader so that
//! the fuzz target (crates/fuzz, `framing`) drives the same code with arbitrary bytes cut
//! into arbitrary reads.

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A frame's bytes take the shard's request budget as they arrive, in steps of at least
/// this (doubling with what has arrived), so a client that announces a large request and
/// then trickles it holds budget for what it sent, not for what it announced. Also the most
/// one socket read asks for at first: 256 KiB takes a 64 KiB batch request (the usual
/// producer's) in one read rather than two.
pub const FRAME_STEP: usize = 256 << 10;

/// A connection's framing state between frames: the start of the next frame's size prefix,
/// read together with the end of the frame before it.
///
/// Why: a request's last read asks also for the 4 bytes after it, so that with requests
/// pipelined the next size prefix comes in the same read instead of a read of its own. With
/// the larger first step, a 64 KiB produce request takes one read instead of three, and a
/// socket read is a system call (about 3 per produce request before, on the profile). Only
/// these 4 bytes are copied, never a record byte.
#[derive(Default)]
pub struct Framer {
    head: [u8; 4],
    have: usize,
}
/// Units of the shard's request budget a frame holds, given back when dropped (with the
/// answer sent, or the connection gone).
pub struct Held {
    budget: Rc<glommio::sync::Semaphore>,
    units: u64,
}

impl Held {
    /// The budget units held.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Takes more budget until this holds `total` units. When the shard's budget cannot give
    /// it at once, the frame gives back what it holds and waits for the whole of `total`:
    /// a frame never waits while holding budget, so frames waiting on each other's bytes
    /// cannot deadlock the shard.
    async fn ensure(&mut self, total: u64) -> Result<(), FrameEnd> {
        if total <= self.units {
            return Ok(());
        }
        match self.budget.try_acquire(total - self.units) {
            Ok(true) => {
                self.units = total;
                return Ok(());
            }
            Ok(false) => {}
            Err(_) => return Err(FrameEnd::Stopping),
        }
        let held = std::mem::take(&mut self.units);
        if held > 0 {
            self.budget.signal(held);
        }
        self.budget
            .acquire(total)
            .await
            .map_err(|_| FrameEnd::Stopping)?;
        self.units = total;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.units > 0 {
            self.budget.signal(self.units);
        }
    }
}

/// Why no frame came.
pub enum FrameEnd {
    /// The client closed between requests.
    Closed,
    /// No request for --connections-max-idle-ms.
    Idle,
    /// A request began and did not arrive in full within --request-read-timeout-ms.
    Slow,
    /// A size the broker refuses.
    Bad(String),
    Stopping,
    Io(io::Error),
}

pub struct FrameLimits {
    /// --max-request-bytes.
    pub max: usize,
    /// --connections-max-idle-ms: the wait for a frame's first byte.
    pub idle: Duration,
    /// --request-read-timeout-ms: from a frame's first byte to its last.
    pub timeout: Duration,
}

/// `fut`, unless `deadline` comes first (None).
async fn until<T>(deadline: Instant, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    })
    .await
}

/// Reads one size-prefixed frame. The wait for its first byte is the connection's idle
/// time; from that byte on the whole frame must arrive within the request read timeout
/// (waits for the shard's budget do not count: that is the broker's backpressure, not the
/// client's slowness). The frame's bytes take the shard's request budget as they arrive;
/// it is held with the request until its answer is sent. `framer` carries what the last
/// read of one frame took of the next (see [`Framer`]): one per connection.
pub async fn read_frame(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    framer: &mut Framer,
    limits: &FrameLimits,
    budget: &Rc<glommio::sync::Semaphore>,
) -> Result<(BytesMut, Held), FrameEnd> {
    let mut size = [0u8; 4];
    let mut got = std::mem::take(&mut framer.have);
    size[..got].copy_from_slice(&framer.head[..got]);
    if got == 0 {
        // Between frames: the idle wait.
        got = until(Instant::now() + limits.idle, reader.read(&mut size))
            .await
            .ok_or(FrameEnd::Idle)?
            .map_err(FrameEnd::Io)?;
        if got == 0 {
            return Err(FrameEnd::Closed);
        }
    }
    let mut deadline = Instant::now() + limits.timeout;
    while got < 4 {
        got += read_some(reader, &mut size[got..], deadline).await?;
    }
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(FrameEnd::Bad(format!("negative request frame size {size}")));
    }
    let size = size as usize;
    if size > limits.max {
        return Err(FrameEnd::Bad(format!(
            "request frame of {size} bytes exceeds --max-request-bytes={}",
            limits.max
        )));
    }
    let mut held = Held {
        budget: budget.clone(),
        units: 0,
    };
    // Capacity only, zeroed a step at a time just before the socket reads fill it: a large
    // frame's pages are touched as its bytes arrive, so memory follows what was sent rather
    // than what was announced, and each step is zeroed while the read that overwrites it is
    // about to run (in cache), once. Zeroing the whole frame up front (calloc) cost about 6 %
    // of a producing shard's CPU, most of it page faults on memory the allocator had just
    // given back to the kernel. Room for the next frame's size prefix after it (see Framer).
    let mut buf = BytesMut::with_capacity(size + 4);
    let mut len = 0;
    while len < size {
        let want = (size - len).min(FRAME_STEP.max(len));
        // Waiting for the budget is the broker's backpressure, not the client's slowness:
        // it does not count against the deadline.
        let waited = Instant::now();
        held.ensure((len + want) as u64).await?;
        deadline += waited.elapsed();
        // The frame's last step reads on into the next frame's size prefix.
        let end = if len + want == size {
            size + 4
        } else {
            len + want
        };
        if buf.len() < end {
            buf.resize(end, 0);
        }
        len += read_some(reader, &mut buf[len..end], deadline).await?;
    }
    framer.have = len - size;
    framer.head[..framer.have].copy_from_slice(&buf[size..len]);
    buf.truncate(size);
    Ok((buf, held))
}

/// One read of at least a byte before `deadline`.
async fn read_some(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, FrameEnd> {
    match until(deadline, reader.read(buf)).await {
        None => Err(FrameEnd::Slow),
        Some(Ok(0)) => Err(FrameEnd::Io(io::ErrorKind::UnexpectedEof.into())),
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(FrameEnd::Io(e)),
    }
}
