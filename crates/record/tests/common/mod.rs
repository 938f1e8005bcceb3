//! Shared fixtures and byte-level helpers for the integration tests.
//!
//! Fixture batches come from kafka-protocol's RecordBatch encoder, an implementation independent
//! of this crate; the helpers here damage them at precise positions and, where a test needs to
//! reach a check that comes after the CRC, re-frame them (batchLength and CRC-32C recomputed).
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, RecordSet, TimestampType as KTimestampType,
};

pub const PRODUCER_ID: i64 = 4242;
pub const PRODUCER_EPOCH: i16 = 7;
pub const BASE_SEQUENCE: i32 = 10;
/// A plausible wall-clock base for fixture timestamps.
pub const T0: i64 = 1_700_000_000_000;

pub const CODECS: [KCompression; 5] = [
    KCompression::None,
    KCompression::Gzip,
    KCompression::Snappy,
    KCompression::Lz4,
    KCompression::Zstd,
];

/// Byte positions of the header fields (restated here rather than taken from the crate, so a
/// wrong constant in the crate cannot hide behind its own tests).
pub const AT_BASE_OFFSET: usize = 0;
pub const AT_BATCH_LENGTH: usize = 8;
pub const AT_LEADER_EPOCH: usize = 12;
pub const AT_MAGIC: usize = 16;
pub const AT_CRC: usize = 17;
pub const AT_ATTRIBUTES: usize = 21;
pub const AT_LAST_OFFSET_DELTA: usize = 23;
pub const AT_BASE_TIMESTAMP: usize = 27;
pub const AT_MAX_TIMESTAMP: usize = 35;
pub const AT_PRODUCER_ID: usize = 43;
pub const AT_PRODUCER_EPOCH: usize = 51;
pub const AT_BASE_SEQUENCE: usize = 53;
pub const AT_RECORD_COUNT: usize = 57;
pub const HEADER: usize = 61;

/// What a test wants in one record; turned into a kafka-protocol record by [`krecords`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

impl Spec {
    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Self {
        Spec {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
            timestamp,
        }
    }

    pub fn header(mut self, key: &str, value: Option<&[u8]>) -> Self {
        self.headers
            .push((key.to_string(), value.map(<[u8]>::to_vec)));
        self
    }
}

/// Five records covering keys, null keys, empty keys, tombstones, empty values, binary bytes,
/// headers with null and empty values, and timestamps out of order (the first is not the
/// smallest; the largest appears twice).
pub fn sample_specs() -> Vec<Spec> {
    let big: Vec<u8> = b"payload-".iter().copied().cycle().take(300).collect();
    let binary: Vec<u8> = (0..=255u8).collect();
    vec![
        Spec::new(Some(b"user-0"), Some(b"hello"), T0 + 500)
            .header("trace-id", Some(b"abc-123"))
            .header("flag", None),
        Spec::new(None, Some(&big), T0 + 100),
        Spec::new(Some(b""), None, T0 + 900).header("", Some(b"")),
        Spec::new(Some(b"user-3"), Some(b""), T0 + 300).header("bin", Some(&[0xff, 0x00, 0x80])),
        Spec::new(Some(&binary), Some(&binary[..17]), T0 + 900),
    ]
}

/// Producer-side properties of a fixture batch.
#[derive(Debug, Clone, Copy)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

pub const IDEMPOTENT: Producer = Producer {
    id: PRODUCER_ID,
    epoch: PRODUCER_EPOCH,
    base_sequence: BASE_SEQUENCE,
    transactional: false,
};

pub const PLAIN: Producer = Producer {
    id: -1,
    epoch: -1,
    base_sequence: -1,
    transactional: false,
};

pub fn krecords(specs: &[Spec], producer: Producer) -> Vec<KRecord> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| KRecord {
            transactional: producer.transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: KTimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset - sequence is constant;
            // without a producer id the batch's baseSequence comes out as -1.
            sequence: producer.base_sequence + i as i32,
            timestamp: s.timestamp,
            key: s.key.clone().map(Bytes::from),
            value: s.value.clone().map(Bytes::from),
            headers: s
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect(),
        })
        .collect()
}

/// Encodes `specs` as one RecordBatch v2 with kafka-protocol's encoder.
pub fn encode_with(specs: &[Spec], codec: KCompression, producer: Producer) -> Vec<u8> {
    let records = krecords(specs, producer);
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("kafka-protocol encodes the fixture");
    buf.to_vec()
}

pub fn encode(specs: &[Spec], codec: KCompression) -> Vec<u8> {
    encode_with(specs, codec, IDEMPOTENT)
}

/// The sample batch, uncompressed.
pub fn sample_batch() -> Vec<u8> {
    encode(&sample_specs(), KCompression::None)
}

/// Decodes exactly one batch with kafka-protocol's decoder (which verifies the CRC-32C).
pub fn kdecode(batch: &[u8]) -> Result<RecordSet, String> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| format!("{e:#}"))?;
    if !buf.is_empty() {
        return Err(format!("{} bytes left after one batch", buf.len()));
    }
    Ok(set)
}

pub fn runnel_codec(codec: KCompression) -> runnel_record::Compression {
    match codec {
        KCompression::None => runnel_record::Compression::None,
        KCompression::Gzip => runnel_record::Compression::Gzip,
        KCompression::Snappy => runnel_record::Compression::Snappy,
        KCompression::Lz4 => runnel_record::Compression::Lz4,
        KCompression::Zstd => runnel_record::Compression::Zstd,
    }
}

// ---- big-endian field access -------------------------------------------------------------

pub fn get_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

pub fn get_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn get_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

// ---- re-framing ---------------------------------------------------------------------------

/// CRC-32C over attributes..end, as RecordBatch v2 defines it.
pub fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[AT_ATTRIBUTES..])
}

/// Stores the CRC-32C of bytes 21..end, big-endian, at 17..21.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc_of(batch);
    batch[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Sets batchLength to match the buffer and recomputes the CRC: after this only the damage a
/// test made on purpose is left.
pub fn reframe(batch: &mut [u8]) {
    let len = (batch.len() - 12) as i32;
    put_i32(batch, AT_BATCH_LENGTH, len);
    fix_crc(batch);
}

/// Sets recordCount and lastOffsetDelta together (recordCount - 1).
pub fn set_count(batch: &mut [u8], count: i32) {
    put_i32(batch, AT_RECORD_COUNT, count);
    put_i32(batch, AT_LAST_OFFSET_DELTA, count - 1);
}

// ---- varints and record layout ------------------------------------------------------------

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Kafka's zig-zag varint (also used for varlong).
pub fn varint(v: i64) -> Vec<u8> {
    let mut u = zigzag(v);
    let mut out = Vec::new();
    loop {
        let byte = (u & 0x7f) as u8;
        u >>= 7;
        if u == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a zig-zag varint at `at`; returns (value, encoded width).
pub fn read_varint(b: &[u8], at: usize) -> (i64, usize) {
    let mut u = 0u64;
    for i in 0..10 {
        let byte = b[at + i];
        u |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (((u >> 1) as i64) ^ -((u & 1) as i64), i + 1);
        }
    }
    panic!("fixture varint at {at} is longer than 10 bytes");
}

/// Positions (absolute, within the batch) of one record's fields, found by a walker that is
/// independent of the crate's.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// First byte of the record (its length varint).
    pub start: usize,
    /// The record's length field value.
    pub length: i64,
    pub attributes_at: usize,
    pub timestamp_delta_at: usize,
    pub offset_delta_at: usize,
    pub key_len_at: usize,
    pub value_len_at: usize,
    pub header_count_at: usize,
    /// Position of the first header's key length, if the record has headers.
    pub first_header_key_len_at: Option<usize>,
    /// One past the record's last byte.
    pub end: usize,
}

/// Walks the records of an uncompressed batch.
pub fn layouts(batch: &[u8]) -> Vec<Layout> {
    let mut out = Vec::new();
    let mut at = HEADER;
    while at < batch.len() {
        let start = at;
        let (length, w) = read_varint(batch, at);
        let body = at + w;
        let end = body + length as usize;
        let attributes_at = body;
        let timestamp_delta_at = attributes_at + 1;
        let (_, w) = read_varint(batch, timestamp_delta_at);
        let offset_delta_at = timestamp_delta_at + w;
        let (_, w) = read_varint(batch, offset_delta_at);
        let key_len_at = offset_delta_at + w;
        let (key_len, w) = read_varint(batch, key_len_at);
        let value_len_at = key_len_at + w + key_len.max(0) as usize;
        let (value_len, w) = read_varint(batch, value_len_at);
        let header_count_at = value_len_at + w + value_len.max(0) as usize;
        let (header_count, w) = read_varint(batch, header_count_at);
        let first_header_key_len_at = (header_count > 0).then_some(header_count_at + w);
        out.push(Layout {
            start,
            length,
            attributes_at,
            timestamp_delta_at,
            offset_delta_at,
            key_len_at,
            value_len_at,
            header_count_at,
            first_header_key_len_at,
            end,
        });
        at = end;
    }
    assert_eq!(
        at,
        batch.len(),
        "fixture records end exactly at the batch end"
    );
    out
}

/// Overwrites the varint at `at` with `value`, which must encode to the same width (so the
/// record keeps its length). Does not fix the CRC.
pub fn overwrite_varint(batch: &mut [u8], at: usize, value: i64) {
    let (_, width) = read_varint(batch, at);
    let bytes = varint(value);
    assert_eq!(
        bytes.len(),
        width,
        "replacement varint {value} must keep the width {width}"
    );
    batch[at..at + width].copy_from_slice(&bytes);
}

/// Replaces bytes `range` of the batch with `with`, then re-frames it.
pub fn splice(batch: &mut Vec<u8>, range: std::ops::Range<usize>, with: &[u8]) {
    batch.splice(range, with.iter().copied());
    reframe(batch);
}

/// Builds a record from raw fields so tests can place deliberately malformed ones: `body` is
/// everything after the length varint; the length is computed unless `length` overrides it.
pub fn raw_record(body: &[u8], length: Option<i64>) -> Vec<u8> {
    let mut out = varint(length.unwrap_or(body.len() as i64));
    out.extend_from_slice(body);
    out
}

/// A well-formed record body (everything after the length varint).
pub fn record_body(
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend(varint(timestamp_delta));
    out.extend(varint(offset_delta));
    for field in [key, value] {
        match field {
            Some(b) => {
                out.extend(varint(b.len() as i64));
                out.extend_from_slice(b);
            }
            None => out.extend(varint(-1)),
        }
    }
    out.extend(varint(headers.len() as i64));
    for (k, v) in headers {
        out.extend(varint(k.len() as i64));
        out.extend_from_slice(k);
        match v {
            Some(b) => {
                out.extend(varint(b.len() as i64));
                out.extend_from_slice(b);
            }
            None => out.extend(varint(-1)),
        }
    }
    out
}
