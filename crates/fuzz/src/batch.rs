//! RecordBatch validation and the batch splitter: a produce request's records field as the
//! log receives it ([`runnel_log::split_validated`]), then what the broker does with a valid
//! batch: walk its records (inflating a compressed one, bounded), recompress it (a topic's
//! compression.type) and filter it (the log cleaner).
//!
//! The first input byte picks a mode: with its low bit set, every batch's CRC is recomputed
//! before validation, so mutations get past the checksum into the fields behind it.

use bytes::BytesMut;
use runnel_record::compact::{filter_batch, for_each_record};
use runnel_record::recompress::{recompress, Codec};
use runnel_record::{Compression, HEADER_LEN};

/// The most a fuzz input may inflate to (the broker's own bound is larger; the point here
/// is that the bound holds, not its size).
const MAX_INFLATED: usize = 8 << 20;

pub fn run(data: &[u8]) {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let mut records = BytesMut::from(records);
    if mode & 1 == 1 {
        fix_crcs(&mut records);
    }
    let Ok(batches) = runnel_log::split_validated(records) else {
        return;
    };
    for (header, bytes) in &batches {
        assert_eq!(header.total_len(), bytes.len());
        let mut n = 0i64;
        let walked = for_each_record(bytes, header, MAX_INFLATED, |_| n += 1);
        if header.compression() == Ok(Compression::None) {
            // validate() checked every record's framing: the walk agrees.
            assert!(
                walked.is_ok(),
                "a validated batch's records do not walk: {walked:?}"
            );
            assert_eq!(n, i64::from(header.record_count));
        }
        let to = if header.compression() == Ok(Compression::Lz4) {
            Compression::None
        } else {
            Compression::Lz4
        };
        if let Ok(Some(out)) = recompress(
            bytes,
            header,
            Codec {
                compression: to,
                level: None,
            },
            MAX_INFLATED,
        ) {
            // What recompression writes is a valid batch with the same records.
            let h = runnel_record::validate(&out).expect("a recompressed batch validates");
            assert_eq!(h.record_count, header.record_count);
            assert_eq!(h.base_offset, header.base_offset);
        }
        if walked.is_ok() {
            let kept = filter_batch(bytes, header, MAX_INFLATED, |_| true, None);
            assert!(kept.is_ok() || header.compression() != Ok(Compression::None));
        }
    }
}

/// Recomputes the CRC of every batch the length fields delimit.
fn fix_crcs(buf: &mut [u8]) {
    let mut at = 0;
    while buf.len() - at >= HEADER_LEN {
        let len = i32::from_be_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(12)) else {
            return;
        };
        if total < HEADER_LEN || total > buf.len() - at {
            return;
        }
        runnel_record::set_crc(&mut buf[at..at + total]);
        at += total;
    }
}

/// The records fields of a Produce request frame (as the request corpus holds them), each
/// with both modes: real clients' batches as seeds.
pub fn from_produce_frame(frame: &[u8]) -> Vec<Vec<u8>> {
    use kafka_protocol::messages::{ApiKey, ProduceRequest};
    thread_local! {
        static HOST: std::rc::Rc<str> = "/127.0.0.1".into();
    }
    let Ok(req) =
        HOST.with(|h| runnel_protocol::parse_header(bytes::Bytes::copy_from_slice(frame), h))
    else {
        return Vec::new();
    };
    if req.api_key != ApiKey::Produce {
        return Vec::new();
    }
    let Ok(body) = req.decode_body::<ProduceRequest>() else {
        return Vec::new();
    };
    body.topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .flat_map(|r| [[&[0u8][..], r].concat(), [&[1u8][..], r].concat()])
        .collect()
}

/// Seeds: producer batches (keys, values, headers, a transactional and a control one) in
/// every codec, alone and back to back, with both modes.
pub fn seeds() -> Vec<Vec<u8>> {
    use runnel_record::builder::BatchBuilder;
    let mut plain = Vec::new();
    let mut b = BatchBuilder::new(1_700_000_000_000).producer(7, 0, 0);
    for i in 0..5u8 {
        b.append(
            1_700_000_000_000 + i64::from(i),
            Some(&[b'k', i]),
            Some(&[i; 40]),
            &[(&b"h"[..], Some(&b"v"[..]))],
        );
    }
    plain.push(b.build());
    let mut t = BatchBuilder::new(1_700_000_000_000)
        .transactional()
        .producer(8, 1, 3);
    t.append(1_700_000_000_000, None, Some(b"txn"), &[]);
    plain.push(t.build());
    let mut out = Vec::new();
    for batch in &plain {
        let h = runnel_record::validate(batch).expect("a built batch validates");
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let codec = Codec {
                compression: c,
                level: None,
            };
            if let Ok(Some(z)) = recompress(batch, &h, codec, MAX_INFLATED) {
                out.push([&[0u8][..], &z].concat());
                out.push([&[1u8][..], &z].concat());
            }
        }
        out.push([&[0u8][..], batch].concat());
        out.push([&[1u8][..], batch].concat());
    }
    out.push([&[1u8][..], &plain[0], &plain[1]].concat());
    out
}
