use crate::*;

pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;
/// KIP-534: baseTimestamp holds the batch's delete horizon (set by the log cleaner).
pub(crate) const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Compression codec of a batch's records (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

/// Attributes bit 3: who set the timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The decoded 61-byte RecordBatch v2 header. Plain values, cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`. Checks only what is needed to frame the
    /// batch safely: enough bytes for a header, magic 2 and a sane batchLength. `buf` may hold
    /// less than the whole batch; see [`BatchHeader::total_len`].
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        // v0/v1 message sets carry their magic at the same position (offset 16), so an old
        // client is told "unsupported magic", not "corrupt".
        if buf.len() > OFF_MAGIC && buf[OFF_MAGIC] as i8 != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic {
                magic: buf[OFF_MAGIC] as i8,
            });
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::ShortHeader {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, OFF_BATCH_LENGTH);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadBatchLength { batch_length });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, OFF_BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(buf, OFF_LEADER_EPOCH),
            magic: buf[OFF_MAGIC] as i8,
            crc: be_u32(buf, OFF_CRC),
            attributes: be_i16(buf, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(buf, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(buf, OFF_PRODUCER_ID),
            producer_epoch: be_i16(buf, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(buf, OFF_BASE_SEQUENCE),
            record_count: be_i32(buf, OFF_RECORD_COUNT),
        })
    }

    /// Bytes the whole batch occupies: batchLength plus the 12 bytes before it.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record (baseOffset + lastOffsetDelta).
    ///
    /// baseOffset is not covered by the CRC, so a batch that passes [`crate::validate`] or
    /// [`crate::verify_stored`] can carry any value there; the sum wraps as Kafka's (Java
    /// `long`) arithmetic does rather than panicking.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset the next batch in the log starts at (wrapping, see
    /// [`BatchHeader::last_offset`]).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(match self.attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            codec => {
                return Err(BatchError::UnsupportedCompression { codec: codec as u8 });
            }
        })
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The delete horizon the log cleaner set (KIP-534): tombstones and transaction markers
    /// in the batch may go once it has passed. None when not set.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// CreateTime: baseTimestamp is the first record's timestamp and maxTimestamp the largest,
    /// so max >= base whenever timestamps are present; -1 means "none" for both. A first
    /// record without a timestamp (base -1) bounds nothing: librdkafka then writes the max
    /// of the records that have one, or 0 when none has (the log puts the records' true
    /// max in its place, as Kafka's validator does).
    ///
    /// LogAppendTime: [`crate::set_log_append_time`] stamps maxTimestamp with the broker's
    /// clock and leaves baseTimestamp as the producer wrote it, so the stamp may well be
    /// earlier than a (skewed) producer's base. Only require the stamp to be a real time and
    /// the base to be -1 or non-negative.
    pub(crate) fn check_timestamps(&self) -> Result<(), BatchError> {
        let (base, max) = (self.base_timestamp, self.max_timestamp);
        let ok = match self.timestamp_type() {
            TimestampType::CreateTime => match (base, max) {
                (NO_TIMESTAMP, m) => m >= NO_TIMESTAMP,
                (b, m) => b >= 0 && m >= b,
            },
            TimestampType::LogAppendTime => max >= 0 && (base == NO_TIMESTAMP || base >= 0),
        };
        if ok {
            Ok(())
        } else {
            Err(BatchError::BadTimestamps { base, max })
        }
    }
}
