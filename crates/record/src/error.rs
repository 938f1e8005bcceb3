use thiserror::Error;

/// Every way a batch can be invalid, each mapped to the Kafka error code a produce response
/// carries for it ([`BatchError::kafka_error_code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch header needs {needed} bytes, only {available} available")]
    ShortHeader { needed: usize, available: usize },
    #[error("batch needs {needed} bytes, only {available} available (trailing partial batch)")]
    Truncated { needed: usize, available: usize },
    #[error("batchLength {batch_length} is invalid (minimum 49, and must fit the buffer)")]
    BadBatchLength { batch_length: i32 },
    #[error("batchLength {batch_length} does not match the {available} bytes given")]
    LengthMismatch { batch_length: i32, available: usize },
    #[error("magic {magic} is not supported: only RecordBatch v2 (magic 2) is accepted")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("compression codec {codec} is unknown (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnsupportedCompression { codec: u8 },
    #[error("batch holds no records (recordCount {record_count})")]
    NoRecords { record_count: i32 },
    #[error("lastOffsetDelta {last_offset_delta} does not match recordCount {record_count}")]
    RecordCountMismatch {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error(
        "recordCount {record_count} is more than {max} records of at least 7 bytes could \
         inflate to from {compressed} compressed bytes"
    )]
    ImplausibleRecordCount {
        record_count: i32,
        compressed: usize,
        max: i64,
    },
    #[error("record {index} has offsetDelta {offset_delta}")]
    BadOffsetDelta { index: i32, offset_delta: i32 },
    #[error("record framing is invalid: {reason}")]
    BadRecord { reason: &'static str },
    #[error("timestamps are inconsistent: baseTimestamp {base}, maxTimestamp {max}")]
    BadTimestamps { base: i64, max: i64 },
    #[error("compressed records cannot be read: {reason}")]
    Inflate { reason: String },
    #[error("the records inflate to more than {max} bytes")]
    InflatedTooLarge { max: usize },
    #[error("recompressed with the topic's codec the batch is {size} bytes, over max.message.bytes={max}")]
    Recompressed { size: usize, max: u64 },
}

/// Kafka's CORRUPT_MESSAGE.
pub const CORRUPT_MESSAGE: i16 = 2;
/// Kafka's MESSAGE_TOO_LARGE.
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's INVALID_TIMESTAMP.
pub const INVALID_TIMESTAMP: i16 = 32;
/// Kafka's UNSUPPORTED_COMPRESSION_TYPE.
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
/// Kafka's INVALID_RECORD.
pub const INVALID_RECORD: i16 = 87;

impl BatchError {
    /// The Kafka error code a produce response carries for this error, chosen as Apache
    /// Kafka's broker chooses it: damaged bytes are CORRUPT_MESSAGE, well-formed bytes that
    /// break a record rule are INVALID_RECORD.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::ShortHeader { .. }
            | BatchError::Truncated { .. }
            | BatchError::BadBatchLength { .. }
            | BatchError::LengthMismatch { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::Inflate { .. } => CORRUPT_MESSAGE,
            BatchError::InflatedTooLarge { .. } | BatchError::Recompressed { .. } => {
                MESSAGE_TOO_LARGE
            }
            BatchError::UnsupportedCompression { .. } => UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::BadTimestamps { .. } => INVALID_TIMESTAMP,
            BatchError::UnsupportedMagic { .. }
            | BatchError::NoRecords { .. }
            | BatchError::RecordCountMismatch { .. }
            | BatchError::ImplausibleRecordCount { .. }
            | BatchError::BadOffsetDelta { .. }
            | BatchError::BadRecord { .. } => INVALID_RECORD,
        }
    }
}
