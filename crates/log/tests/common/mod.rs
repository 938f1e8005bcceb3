//! Test helpers: RecordBatch v2 bytes built the way a producer builds them, and a runner.
#![allow(dead_code)]

use bytes::BytesMut;
use std::future::Future;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

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
    let base_ts = *timestamps.iter().min().expect("at least one record");
    let max_ts = *timestamps.iter().max().expect("at least one record");
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = Vec::new();
        r.push(0u8); // attributes
        put_varint(&mut r, timestamps[i] - base_ts); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        let key = format!("k{i}");
        put_varint(&mut r, key.len() as i64);
        r.extend_from_slice(key.as_bytes());
        put_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        put_varint(&mut r, 0); // headers
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let n = values.len() as i32;
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&b[..])
}

/// `n` records of `size` bytes each, value bytes derived from `seed`.
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

fn crc32c(data: &[u8]) -> u32 {
    // Bitwise CRC-32C (Castagnoli): independent of the crate under test.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
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

/// Lets every other ready task of the executor run once before this one goes on.
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    YieldNow(false).await
}
