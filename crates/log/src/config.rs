//! Per-log settings, named as Kafka's topic configs are (segment.bytes, segment.ms, ...).

/// Settings of one partition log. Defaults are Kafka's.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// segment.bytes: roll the active segment before it would grow past this. Index positions
    /// are u32, and Kafka caps it at i32::MAX too.
    pub segment_bytes: u64,
    /// segment.ms: roll the active segment once it is this old, even if not full.
    pub segment_ms: Option<u64>,
    /// segment.jitter.ms: each segment rolls up to this much before segment.ms (its own
    /// amount, so partitions created together do not all roll at once).
    pub segment_jitter_ms: u64,
    /// segment.index.bytes: roll once the segment's offset index (8-byte entries) or time
    /// index (12-byte entries) would outgrow this, as Kafka rolls on a full index.
    pub segment_index_bytes: u64,
    /// retention.ms: delete closed segments whose newest record is older; None keeps forever.
    pub retention_ms: Option<u64>,
    /// retention.bytes: delete the oldest segments while the log is larger; None: no limit.
    pub retention_bytes: Option<u64>,
    /// flush.messages: fdatasync after this many appended records; None: leave it to the OS.
    pub flush_messages: Option<u64>,
    /// flush.ms: fdatasync data older than this, checked by [`crate::Log::flush_if_due`].
    pub flush_ms: Option<u64>,
    /// index.interval.bytes: one offset index entry per this many appended bytes.
    pub index_interval_bytes: u32,
    /// message.timestamp.type=LogAppendTime: the broker stamps each batch's maxTimestamp.
    pub log_append_time: bool,
    /// Reserve a new segment's blocks (fallocate, keeping the file size) when it is created,
    /// so appends never wait on block allocation.
    pub preallocate: bool,
    /// CreateTime records may be at most this much older / newer than the broker's clock
    /// (message.timestamp.before.max.ms / after.max.ms; u64::MAX: no bound).
    pub timestamp_before_max_ms: u64,
    pub timestamp_after_max_ms: u64,
    /// producer.id.expiration.ms: forget an idempotent producer idle for this long.
    pub producer_id_expiration_ms: u64,
    /// compression.type other than `producer`: batches with another codec are rewritten
    /// with this one ([`runnel_record::recompress`]).
    pub compression: Option<runnel_record::recompress::Codec>,
    /// max.message.bytes: the largest batch, checked again after a recompression (the
    /// produce path checks the batch as it came).
    pub max_message_bytes: u64,
    /// file.delete.delay.ms: a segment that retention or DeleteRecords removes is renamed
    /// `*.deleted` and unlinked this much later, as Kafka does (0: at once; leftovers are
    /// removed by recovery at the next start).
    pub file_delete_delay_ms: u64,
    /// cleanup.policy has `compact`: the log cleaner keeps the latest record of each key,
    /// and records without a key are refused.
    pub compact: bool,
    /// cleanup.policy has `delete`: retention.ms and retention.bytes remove old segments.
    pub delete: bool,
    /// delete.retention.ms: a tombstone stays this long after the cleaner first saw it.
    pub delete_retention_ms: u64,
    /// min.compaction.lag.ms: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: u64,
    /// max.compaction.lag.ms: a record older than this is compacted whatever the dirty ratio.
    pub max_compaction_lag_ms: u64,
    /// min.cleanable.dirty.ratio: clean once dirty bytes are more than this share.
    pub min_cleanable_dirty_ratio: f64,
}

pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
pub const DEFAULT_SEGMENT_MS: u64 = 7 * 24 * 3600 * 1000;
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Kafka's file.delete.delay.ms default: a minute.
pub const DEFAULT_FILE_DELETE_DELAY_MS: u64 = 60_000;
/// Kafka's segment.index.bytes default: 10 MiB.
pub const DEFAULT_SEGMENT_INDEX_BYTES: u64 = 10 << 20;
/// Kafka 4's default message.timestamp.after.max.ms: an hour.
pub const DEFAULT_TIMESTAMP_AFTER_MAX_MS: u64 = 3_600_000;
/// Kafka's delete.retention.ms default: a day.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 3600 * 1000;
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: u64 = 24 * 3600 * 1000;
/// The smallest segment.bytes Kafka accepts (LogConfig's atLeast(LegacyRecord.RECORD_OVERHEAD_V0)
/// is 14; we require room for at least one batch header).
pub const MIN_SEGMENT_BYTES: u64 = 61;
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: Some(DEFAULT_SEGMENT_MS),
            segment_jitter_ms: 0,
            segment_index_bytes: DEFAULT_SEGMENT_INDEX_BYTES,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            flush_messages: None,
            flush_ms: None,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            log_append_time: false,
            preallocate: true,
            timestamp_before_max_ms: u64::MAX,
            timestamp_after_max_ms: DEFAULT_TIMESTAMP_AFTER_MAX_MS,
            producer_id_expiration_ms: DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            compression: None,
            max_message_bytes: u64::MAX,
            file_delete_delay_ms: 0,
            compact: false,
            delete: true,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: u64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

impl LogConfig {
    /// Checks the values a log cannot work with; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(format!(
                "segment.bytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.segment_ms == Some(0) {
            return Err("segment.ms must be positive".into());
        }
        if self.flush_messages == Some(0) {
            return Err("flush.messages must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        Ok(())
    }
}
