//! Request framing over arbitrary bytes, cut into arbitrary reads: the broker's own
//! `read_frame` (runnel_server::frame) reads frame after frame off a reader that hands out
//! the input a few bytes at a time, against a small `--max-request-bytes` and a request
//! budget. What it returns must be exactly what a plain reading of the stream says: the
//! same frames, then the same end (the stream closed between frames, a size refused, or
//! the stream cut inside a frame), each frame holding budget for exactly its bytes, and
//! all of the budget back once the frames are dropped. It must never panic or wait.
//!
//! Input: byte 0 picks --max-request-bytes (`16 << (byte0 % 16)`: 16 B to 512 KiB, so
//! frames cross the budget's 256 KiB steps), byte 1 the budget beyond it, bytes 2-3 seed
//! the read sizes; the rest is the stream.

use futures_lite::AsyncRead;
use runnel_server::frame::{read_frame, FrameEnd, FrameLimits, Framer};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Hands out `data` in reads of 1 to 64 bytes (or a whole buffer), as the seed says; then
/// end of stream. Never pending: a framing wait would be a hang.
struct Chunked<'a> {
    data: &'a [u8],
    at: usize,
    rng: crate::Rng,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let left = self.data.len() - self.at;
        let step = match self.rng.below(4) {
            0 => buf.len(),
            _ => 1 + self.rng.below(64),
        };
        let n = step.min(left).min(buf.len());
        let at = self.at;
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

/// How a stream ends, read plainly.
#[derive(Debug, PartialEq)]
enum End {
    Closed,
    Refused,
    Cut,
}

/// The frames of `stream` and how it ends, read plainly with `max` as the size limit.
fn model(stream: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            return (frames, End::Closed);
        }
        if rest.len() < 4 {
            return (frames, End::Cut);
        }
        let size = i32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        if size < 0 || size as usize > max {
            return (frames, End::Refused);
        }
        let size = size as usize;
        if rest.len() < 4 + size {
            return (frames, End::Cut);
        }
        frames.push(&rest[4..4 + size]);
        at += 4 + size;
    }
}

pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let max = 16usize << (data[0] % 16);
    let budget_units = (max + usize::from(data[1]) * 1024) as u64;
    let seed = u64::from(u16::from_le_bytes([data[2], data[3]])) + 1;
    let stream = &data[4..];
    let (want, want_end) = model(stream, max);
    crate::block_on(async {
        let budget = Rc::new(glommio::sync::Semaphore::new(budget_units));
        let limits = FrameLimits {
            max,
            idle: Duration::from_secs(3600),
            timeout: Duration::from_secs(3600),
        };
        let mut reader = Chunked {
            data: stream,
            at: 0,
            rng: crate::Rng::new(seed),
        };
        let mut got = Vec::new();
        let mut framer = Framer::default();
        let end = loop {
            match read_frame(&mut reader, &mut framer, &limits, &budget).await {
                Ok((frame, held)) => {
                    // Taken in steps as the bytes arrive, and in the end exactly the
                    // frame's bytes.
                    assert_eq!(held.units(), frame.len() as u64, "budget held");
                    got.push(frame);
                    drop(held);
                    assert_eq!(budget.available(), budget_units, "budget not returned");
                }
                Err(FrameEnd::Closed) => break End::Closed,
                Err(FrameEnd::Bad(_)) => break End::Refused,
                Err(FrameEnd::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    break End::Cut
                }
                Err(FrameEnd::Io(e)) => panic!("an I/O error from a reader that has none: {e}"),
                Err(FrameEnd::Idle | FrameEnd::Slow) => {
                    panic!("a deadline hit by a reader that never waits")
                }
                Err(FrameEnd::Stopping) => panic!("the budget closed"),
            }
        };
        assert_eq!(got.len(), want.len(), "frames read");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g[..], *w, "a frame's bytes");
        }
        assert_eq!(end, want_end, "how the stream ended");
        assert_eq!(budget.available(), budget_units);
    });
}

/// Seeds: real-looking streams (two frames, a frame cut short, a negative size, a size
/// one past the limit, a 300 KiB frame crossing a budget step, a frame whose successor's
/// size prefix is cut after 2 bytes).
pub fn seeds() -> Vec<Vec<u8>> {
    let frame = |body: &[u8]| {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let api_versions = [
        0u8, 18, 0, 3, 0, 0, 0, 1, 0, 4, b'e', b'2', b'e', b'!', 0, 0,
    ];
    let mut out = Vec::new();
    // Max 16 << 8 = 4 KiB, budget +1 KiB.
    let mut two = vec![8, 1, 7, 0];
    two.extend(frame(&api_versions));
    two.extend(frame(&api_versions));
    out.push(two.clone());
    let mut cut = two.clone();
    cut.truncate(cut.len() - 3);
    out.push(cut);
    let mut negative = vec![8, 1, 9, 0];
    negative.extend((-5i32).to_be_bytes());
    out.push(negative);
    let mut over = vec![8, 1, 9, 0];
    over.extend(4097i32.to_be_bytes());
    over.extend([0; 16]);
    out.push(over);
    // Max 16 << 15 = 512 KiB.
    let mut large = vec![15, 0, 3, 1];
    large.extend(frame(&vec![0x5a; 300 << 10]));
    large.extend(frame(&api_versions));
    out.push(large);
    // The read that ends a frame takes part of the next one's size prefix, and the stream
    // ends there.
    let mut half = vec![8, 1, 7, 0];
    half.extend(frame(&api_versions));
    half.extend([0, 0]);
    out.push(half);
    out
}
