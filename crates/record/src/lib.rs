//! A zero-copy view over Kafka RecordBatch v2 bytes.
//!
//! Runnel keeps one binary format from producer to disk to consumer: a producer's batch is
//! validated here, given its offsets in place ([`set_base_offset`], [`set_partition_leader_epoch`],
//! neither of which is covered by the CRC), written as it came and later served as it is.
//! Nothing in this crate allocates per record or decompresses anything, except
//! [`recompress`] (a topic's compression.type).
//!
//! Layout (all big-endian), 61 bytes of header then the records:
//! baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17,
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57.
//! The CRC-32C covers attributes..end.

pub mod builder;
pub mod compact;
pub mod control;
mod error;
mod header;
pub mod recompress;
mod records;

pub use error::BatchError;
pub use header::{BatchHeader, Compression, TimestampType};
pub use records::{RawRecords, Record, RecordHeader, Records};

/// Size of the RecordBatch v2 header; the records start here.
pub const HEADER_LEN: usize = 61;
/// baseOffset (8) + batchLength (4): the bytes not counted by batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// The only message format Runnel accepts.
pub const MAGIC_V2: i8 = 2;
/// Timestamp meaning "none" (Kafka's RecordBatch.NO_TIMESTAMP).
pub const NO_TIMESTAMP: i64 = -1;
/// Producer id meaning "not idempotent".
pub const NO_PRODUCER_ID: i64 = -1;

pub(crate) const OFF_BASE_OFFSET: usize = 0;
pub(crate) const OFF_BATCH_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORD_COUNT: usize = 57;

/// Validates that `batch` holds exactly one well-formed RecordBatch v2 as a producer sends it:
/// magic, length, CRC-32C, codec, record count against lastOffsetDelta, timestamps and, for
/// uncompressed batches, the framing of every record. Compressed records are never inflated.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::LengthMismatch {
            batch_length: header.batch_length,
            available: batch.len(),
        });
    }
    let computed = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let compression = header.compression()?;
    if header.record_count <= 0 {
        return Err(BatchError::NoRecords {
            record_count: header.record_count,
        });
    }
    if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
        return Err(BatchError::RecordCountMismatch {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    header.check_timestamps()?;
    let compressed = batch.len() - HEADER_LEN;
    let max = max_records(compression, compressed);
    if i64::from(header.record_count) > max {
        return Err(BatchError::ImplausibleRecordCount {
            record_count: header.record_count,
            compressed,
            max,
        });
    }
    if compression == Compression::None {
        check_records(&batch[HEADER_LEN..], header.record_count)?;
    }
    Ok(header)
}

/// The framing of `count` uncompressed records, with offset deltas 0, 1, ...
/// recordCount and lastOffsetDelta already agree, so a walk that finds a different number
/// of records is a framing error, not a header one: it is reported as such rather than as
/// a RecordCountMismatch quoting the walked count as "recordCount".
pub(crate) fn check_records(records: &[u8], count: i32) -> Result<(), BatchError> {
    let mut n = 0i32;
    for record in Records::new(records) {
        let record = record?;
        if n == count {
            return Err(BatchError::BadRecord {
                reason: "more records than recordCount",
            });
        }
        if record.offset_delta != n {
            return Err(BatchError::BadOffsetDelta {
                index: n,
                offset_delta: record.offset_delta,
            });
        }
        n += 1;
    }
    if n != count {
        return Err(BatchError::BadRecord {
            reason: "fewer records than recordCount",
        });
    }
    Ok(())
}

/// The most records `len` bytes of records compressed with `compression` can hold. The broker
/// never inflates compressed batches, so their recordCount is the producer's claim; this
/// bound keeps a false claim from costing more offsets (and segment rolls) than its bytes
/// could honestly hold. A record takes at least 7 bytes uncompressed (length, attributes,
/// timestamp delta, offset delta, key length, value length and header count, one byte
/// each), and no codec expands its input more than these ratios (deflate's maximum is
/// 1032:1; snappy's copy ops give at most 64 bytes per 3; an LZ4 length byte adds 255; a
/// zstd block of up to 128 KiB can be a 4-byte RLE block), rounded up for slack.
pub fn max_records(compression: Compression, len: usize) -> i64 {
    let ratio: i64 = match compression {
        Compression::None => 1,
        Compression::Gzip => 1100,
        Compression::Snappy => 64,
        Compression::Lz4 => 300,
        Compression::Zstd => 1 << 17,
    };
    (len as i64).saturating_mul(ratio) / 7 + 1
}

/// Checks a stored batch when it is read back (recovery, index rebuild): header, length and
/// CRC. Cheaper than [`validate`] and free of producer-only rules, so compacted or empty
/// batches a future Runnel might write still pass.
pub fn verify_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::LengthMismatch {
            batch_length: header.batch_length,
            available: batch.len(),
        });
    }
    let computed = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Rewrites baseOffset in place. Not covered by the CRC, so the batch stays valid.
///
/// Panics if `batch` is shorter than 8 bytes; meant for a batch [`validate`] accepted.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites partitionLeaderEpoch in place. Not covered by the CRC.
///
/// Panics if `batch` is shorter than 16 bytes; meant for a batch [`validate`] accepted.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Rewrites maxTimestamp and recomputes the CRC: for a batch whose header's max is not its
/// records' (see `BatchHeader::check_timestamps`).
///
/// Panics if `batch` is shorter than the header; pass exactly one batch.
pub fn set_max_timestamp(batch: &mut [u8], timestamp_ms: i64) {
    batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    set_crc(batch);
}

/// Stamps LogAppendTime: sets the timestamp-type attribute bit and maxTimestamp, then
/// recomputes the CRC. The one case where the broker touches CRC-covered bytes.
///
/// Panics if `batch` is shorter than the header; meant for a batch [`validate`] accepted (the
/// CRC is recomputed over whatever `batch` holds, so pass exactly one batch).
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = i16::from_be_bytes([batch[OFF_ATTRIBUTES], batch[OFF_ATTRIBUTES + 1]])
        | header::ATTR_TIMESTAMP_TYPE;
    batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    set_crc(batch);
}

/// Recomputes the CRC-32C over attributes..end of `batch` (exactly one batch) and writes it
/// into the header: for code that edits CRC-covered header fields (LogAppendTime, the load
/// generator's patched batches, tests that craft batches with false claims).
///
/// Panics if `batch` is shorter than the header.
pub fn set_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a buffer of concatenated batches (a produce request's records field, a segment
/// file's bytes) into batches without validating their CRCs. Yields `(position, header)`;
/// a trailing partial batch yields one [`BatchError::Truncated`] (or
/// [`BatchError::ShortHeader`] when not even its header is there) and ends the iteration, as
/// does a batch whose magic or batchLength is unusable.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Batches {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Position just past the last complete batch yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos == self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match BatchHeader::parse(rest) {
            Ok(header) if header.total_len() <= rest.len() => {
                let at = self.pos;
                self.pos += header.total_len();
                Some(Ok((at, header)))
            }
            Ok(header) => {
                self.done = true;
                Some(Err(BatchError::Truncated {
                    needed: header.total_len(),
                    available: rest.len(),
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
