//! Test helpers: RecordBatch v2 bytes built the way a producer builds them, and a runner.
#![allow(dead_code)]

use bytes::BytesMut;
use std::future::Future;

/// An uncompressed producer batch (baseOffset 0) of `values`, with record i at timestamp
/// `base_ts + i` and key `k<i>`.
pub fn batch_with(values: &[Vec<u8>], base_ts: i64) -> BytesMut {
    let timestamps: Vec<i64> = (0..values.len() as i64).map(|i| base_ts + i).collect();
    batch_at(values, &timestamps)
}

/// An uncompressed producer batch of `values` with record i at `timestamps[i]` (in any
/// order, as producers may send them): baseTimestamp is the smallest, maxTimestamp the
/// largest.
pub fn batch_at(values: &[Vec<u8>], timestamps: &[i64]) -> BytesMut {
    assert_eq!(values.len(), timestamps.len());
    // baseTimestamp is the smallest timestamp, as kafka-protocol's encoder writes it.
    let base_ts = *timestamps.iter().min().expect("at least one record");
    let mut b = runnel_record::builder::BatchBuilder::new(base_ts);
    for (i, (v, ts)) in values.iter().zip(timestamps).enumerate() {
        b.append(*ts, Some(format!("k{i}").as_bytes()), Some(v), &[]);
    }
    BytesMut::from(&b.build()[..])
}

pub fn batch(n: usize, size: usize, seed: u8, base_ts: i64) -> BytesMut {
    batch_with(&record_values(n, size, seed), base_ts)
}

/// `n` values of `size` bytes each, derived from `seed`.
pub fn record_values(n: usize, size: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..size)
                .map(|j| seed.wrapping_add((i + j) as u8))
                .collect()
        })
        .collect()
}

/// Runs an async test body on a fresh glommio executor.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    runnel_runtime::run_local(f)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// (Not every test file that includes this module yields.)
#[allow(unused_imports)]
pub use runnel_runtime::yield_now;

/// Polls both futures in one task, `a` first: both start (e.g. queue their appends) before
/// any other task of the executor runs.
pub async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}
