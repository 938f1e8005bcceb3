//! The partition log: a directory of segment files holding RecordBatch v2 bytes exactly as
//! they are served, with sparse offset and time indexes, in Apache Kafka's layout.
//!
//! ```text
//! <data-dir>/<topic>-<partition>/00000000000000000000.log        batches, as served
//!                               /00000000000000000000.index      relative offset u32 -> position u32
//!                               /00000000000000000000.timeindex  timestamp i64 -> relative offset u32
//! ```
//!
//! A [`Log`] lives on one executor (its owner shard) and is never shared across threads; the
//! [`ReadPlan`]s it hands out are `Send` and keep their segment file open on their own, so a
//! segment deleted by retention stays readable to a fetch already holding its plan.
//! This crate knows nothing about the network.

pub mod checkpoint;
pub mod clean;
mod config;
pub mod epochs;
pub mod index;
mod log;
pub mod producer_state;
mod recovery;
mod reserve;
mod segment;
mod truncate;

pub use config::*;
pub use log::{
    is_device_error, split_validated, AppendInfo, Log, LogStats, OpenOptions, ReadPlan,
    TimestampOffset, Upto, LEADER_EPOCH, MAX_RELATIVE_OFFSET, SHORTFALL_DIVISOR,
};
pub use producer_state::Origin;
pub use segment::{file_name, parse_file_name, AbortedTxn};

use runnel_record::BatchError;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Kafka error codes the broker answers with for log errors.
pub mod error_codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_RECORD: i16 = 87;
    pub const INVALID_TIMESTAMP: i16 = 32;
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size} bytes does not fit a segment of {segment_bytes} bytes")]
    BatchTooLarge { size: u64, segment_bytes: u64 },
    #[error("{path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "{path} is corrupt at byte {position} (offset {offset}), below the recovery point \
         {recovery_point}: data that was flushed is damaged, so the partition is not opened. \
         Inspect the file, restore it from a replica or backup, or move the partition \
         directory away to start it empty"
    )]
    CorruptBelowRecoveryPoint {
        path: PathBuf,
        position: u64,
        offset: i64,
        recovery_point: i64,
        reason: String,
    },
    #[error("{0}")]
    Sequence(#[from] producer_state::SequenceError),
    #[error("{0} are not supported")]
    Unsupported(String),
    #[error(
        "the batches of one append claim {records} records; at most {max} fit a segment's \
         relative offsets"
    )]
    TooManyRecords { records: i64, max: i64 },
    #[error("the log {dir} is offline after a storage error ({reason}); restart the broker to recover it")]
    Offline { dir: PathBuf, reason: String },
    #[error("the log {0} is closed")]
    Closed(PathBuf),
    /// `records`: each keyless record's index in its batch, which the produce answer lists
    /// (KIP-467) so that a client fails those records alone with INVALID_RECORD.
    #[error("a compacted topic cannot accept a record without a key ({} record(s) of the batch have none)", records.len())]
    KeylessRecord { records: Vec<i32> },
    #[error("invalid log config: {0}")]
    Config(String),
    #[error("replicated batches must continue the log at offset {expected} or later, not {got}")]
    NotContiguous { expected: i64, got: i64 },
    #[error(
        "timestamp {timestamp} is out of range: records may be at most {before_ms} ms older and \
         {after_ms} ms newer than the broker's clock ({now}) \
         (message.timestamp.before.max.ms / after.max.ms)"
    )]
    InvalidTimestamp {
        timestamp: i64,
        now: i64,
        before_ms: u64,
        after_ms: u64,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The Kafka error code a produce or fetch response carries for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::OffsetOutOfRange { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            LogError::InvalidBatch(e) => e.kafka_error_code(),
            LogError::BatchTooLarge { .. } => error_codes::MESSAGE_TOO_LARGE,
            LogError::Sequence(producer_state::SequenceError::StaleEpoch { .. }) => {
                error_codes::INVALID_PRODUCER_EPOCH
            }
            LogError::Sequence(producer_state::SequenceError::OutOfOrder { .. }) => {
                error_codes::OUT_OF_ORDER_SEQUENCE_NUMBER
            }
            LogError::Sequence(producer_state::SequenceError::TxnState { .. }) => {
                error_codes::INVALID_TXN_STATE
            }
            LogError::Unsupported(_)
            | LogError::TooManyRecords { .. }
            | LogError::KeylessRecord { .. } => error_codes::INVALID_RECORD,
            LogError::NotContiguous { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            LogError::InvalidTimestamp { .. } => error_codes::INVALID_TIMESTAMP,
            LogError::Io { .. }
            | LogError::Corrupt { .. }
            | LogError::CorruptBelowRecoveryPoint { .. }
            | LogError::Closed(_)
            | LogError::Offline { .. }
            | LogError::Config(_) => error_codes::KAFKA_STORAGE_ERROR,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
