//! A shard's partitions: opening, reconfiguring and deleting them as metadata snapshots
//! arrive, and removing deleted partitions' directories off the executor. A broker holds a
//! log for every partition it is a replica of (leader or not).

use crate::shard::{PartitionKey, Shard};
use runnel_log::{Log, LogConfig, OpenOptions};
use runnel_metadata::{self as metadata, Snapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// Opens the partitions of `snapshot` this broker is a replica of and this shard owns,
/// reconfigures the open ones and closes and deletes those of deleted topics; then
/// publishes the snapshot here.
pub async fn apply_metadata(
    shard: &Rc<Shard>,
    snapshot: Arc<Snapshot>,
    at_startup: bool,
) -> Result<(), String> {
    let nr = shard.shared.nr_shards;
    let old = shard.snapshot();
    // A topic deleted and created again (a new id) within one snapshot: its old logs go
    // first, so the new topic's open below finds no log of the same name.
    let replaced: Vec<PartitionKey> = shard
        .partitions
        .borrow()
        .keys()
        .filter(|(name, _)| match (snapshot.topic(name), old.topic(name)) {
            (Some(new), Some(prev)) => new.id != prev.id,
            _ => false,
        })
        .cloned()
        .collect();
    for key in replaced {
        close_and_delete(shard, &key).await;
    }
    // Open what is new.
    for t in snapshot.topics.values() {
        let config = log_config(&shard.shared.defaults, &t.overrides);
        for (p, pm) in t.assignment.iter().enumerate() {
            let p = p as i32;
            if runnel_metadata::placement::owner(&t.name, p, nr) != shard.id
                || !pm.replicas.contains(&shard.node_id())
            {
                continue;
            }
            let key: PartitionKey = (t.name.clone(), p);
            let existing = shard.partitions.borrow().get(&key).cloned();
            match existing {
                Some(log) => {
                    if log.config() != config {
                        log.set_config(config.clone()).map_err(|e| e.to_string())?;
                    }
                }
                None => {
                    let replicated = pm.replicas.len() > 1;
                    match open_log(shard, &key, &t.id, config.clone(), at_startup, replicated).await
                    {
                        Ok(log) => {
                            shard.unopened.borrow_mut().remove(&key);
                            shard.partitions.borrow_mut().insert(key.clone(), log);
                        }
                        Err(e) => {
                            // As Kafka takes a log dir that fails to load offline and goes
                            // on with the others: this replica is offline (reported), the
                            // rest of the shard is served.
                            let first = shard
                                .unopened
                                .borrow_mut()
                                .insert(key.clone(), e.clone())
                                .is_none();
                            if first {
                                tracing::error!(
                                    topic = %key.0, partition = key.1,
                                    "cannot open the partition's log, it is offline: {e}"
                                );
                            }
                            continue;
                        }
                    }
                }
            }
            crate::replication::assign(shard, &key, pm, &t.overrides).await?;
        }
    }
    // Unopened replicas of partitions no longer here (deleted, moved away) are not offline.
    let me = shard.node_id();
    shard.unopened.borrow_mut().retain(|(name, p), _| {
        snapshot
            .topic(name)
            .and_then(|t| t.partition(*p))
            .is_some_and(|pm| pm.replicas.contains(&me))
    });
    coordinate(shard, &old, &snapshot).await?;
    // Close and delete what is gone (a deleted topic, or one recreated with a new id).
    let doomed: Vec<PartitionKey> = shard
        .partitions
        .borrow()
        .keys()
        .filter(|(name, p)| match (snapshot.topic(name), old.topic(name)) {
            // (A new id was handled before the opening.) A partition a reassignment moved
            // off this broker goes too.
            (Some(new), _) => new
                .partition(*p)
                .is_none_or(|pm| !pm.replicas.contains(&shard.node_id())),
            (None, _) => true,
        })
        .cloned()
        .collect();
    // Dynamic broker configs: the replication throttles.
    let rate = |key: &str, flag: u64| {
        snapshot
            .broker_config(shard.node_id(), key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(flag)
    };
    let c = shard.config();
    shard.leader_throttle.set_rate(
        rate(
            "leader.replication.throttled.rate",
            c.leader_replication_throttled_rate,
        ),
        nr,
    );
    shard.follower_throttle.set_rate(
        rate(
            "follower.replication.throttled.rate",
            c.follower_replication_throttled_rate,
        ),
        nr,
    );
    *shard.snapshot.borrow_mut() = snapshot;
    for key in doomed {
        close_and_delete(shard, &key).await;
    }
    Ok(())
}

/// Takes a partition of a deleted topic (or one no longer replicated here) out of this
/// shard, closes it and deletes its files.
async fn close_and_delete(shard: &Shard, key: &PartitionKey) {
    crate::replication::forget(shard, key);
    let Some(log) = shard.partitions.borrow_mut().remove(key) else {
        return;
    };
    if let Err(e) = log.close().await {
        tracing::warn!(topic = %key.0, partition = key.1, "closing a deleted partition: {e}");
    }
    delete_partition_dir(log.dir().to_path_buf());
}

/// Loads the groups of the `__consumer_offsets` partitions this shard owns and this broker
/// now leads, and forgets those of the partitions it no longer leads: the group
/// coordinator follows the partition's leadership. Runs before this shard sees the new
/// snapshot, so it answers for a group only once its offsets are loaded.
async fn coordinate(shard: &Rc<Shard>, old: &Snapshot, new: &Snapshot) -> Result<(), String> {
    // The transaction coordinator follows `__transaction_state`'s leaderships the same
    // way; a new leader epoch of a partition led here before reloads it too (the
    // coordinator epoch its markers carry changed).
    let txn_topic = runnel_group::txn::TOPIC;
    for (p, partitions, was, is) in leaderships(shard, old, new, txn_topic) {
        if is.is_some() && was != is {
            crate::txns::load(shard, p, partitions, is.unwrap_or(-1)).await?;
        } else if was.is_some() && is.is_none() {
            shard.txn.unload(p);
            tracing::info!(
                partition = p,
                "no longer the transaction coordinator of {txn_topic}-{p}"
            );
        }
    }
    for (p, partitions, was, is) in leaderships(shard, old, new, runnel_group::offsets::TOPIC) {
        if is.is_some() && was.is_none() {
            crate::groups::load(shard, p, partitions).await?;
        } else if was.is_some() && is.is_none() {
            let n = shard.coordinator.unload(p, partitions);
            if n > 0 {
                tracing::info!(
                    partition = p,
                    groups = n,
                    "no longer the coordinator of __consumer_offsets-{p}'s groups"
                );
            }
        }
    }
    Ok(())
}

/// For each partition of the internal topic `topic` this shard owns: (partition, the
/// topic's partition count, the leader epoch this broker led it in before, and now; None
/// where it does not lead it).
fn leaderships(
    shard: &Shard,
    old: &Snapshot,
    new: &Snapshot,
    topic: &str,
) -> Vec<(i32, i32, Option<i32>, Option<i32>)> {
    let Some(t) = new.topic(topic) else {
        return Vec::new();
    };
    let me = shard.node_id();
    let led = |pm: &runnel_metadata::PartitionMeta| (pm.leader == me).then_some(pm.leader_epoch);
    (0..t.partitions)
        .filter(|&p| {
            runnel_metadata::placement::owner(topic, p, shard.shared.nr_shards) == shard.id
        })
        .filter_map(|p| {
            let is = led(t.partition(p)?);
            let was = old
                .topic(topic)
                .filter(|o| o.id == t.id)
                .and_then(|o| o.partition(p))
                .and_then(led);
            Some((p, t.partitions, was, is))
        })
        .collect()
}

/// Kafka's file naming the topic id a partition directory's data belongs to.
pub const PARTITION_METADATA: &str = "partition.metadata";

/// The topic id in a partition directory's `partition.metadata`, if it has one.
pub fn dir_topic_id(dir: &std::path::Path) -> Option<metadata::TopicId> {
    read_dir_topic_id(dir).ok().flatten()
}

/// [`dir_topic_id`], with a file that exists but cannot be read (a failing device) an
/// error rather than no claim: such a directory must not be taken for a fresh one.
fn read_dir_topic_id(dir: &std::path::Path) -> std::io::Result<Option<metadata::TopicId>> {
    let text = match std::fs::read_to_string(dir.join(PARTITION_METADATA)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| metadata::unhex(id.trim())))
}

async fn open_log(
    shard: &Shard,
    key: &PartitionKey,
    topic_id: &metadata::TopicId,
    config: LogConfig,
    at_startup: bool,
    replicated: bool,
) -> Result<Log, String> {
    let dir = shard.shared.data_dir.join(format!("{}-{}", key.0, key.1));
    // A directory left by a deleted topic of the same name (deleted and recreated while
    // this broker was down) holds another topic's records: out of the way first.
    let claimed = read_dir_topic_id(&dir).map_err(|e| {
        format!(
            "cannot read {}: {e}",
            dir.join(PARTITION_METADATA).display()
        )
    })?;
    match claimed {
        Some(id) if id != *topic_id => {
            tracing::warn!(
                dir = %dir.display(),
                "the directory belongs to a deleted topic of the same name: deleting it"
            );
            delete_partition_dir(dir.clone());
        }
        _ => {}
    }
    let claim = dir.join(PARTITION_METADATA);
    let fresh = dir_topic_id(&dir).is_none();
    let ck = (key.0.to_string(), key.1);
    let st = &shard.shared.startup;
    // The checkpoints speak of this directory's data only if it is still there: a
    // partition whose directory is new (its topic recreated while this broker was down)
    // must not take a deleted one's log start offset.
    let opts = if at_startup && dir.is_dir() {
        OpenOptions {
            recovery_point: st.recovery_points.get(&ck).copied(),
            log_start_offset: st.log_start_offsets.get(&ck).copied(),
            clean_shutdown: st.clean_shutdown,
            // No checkpointed high watermark for a replicated partition (created since the
            // last checkpoint before a crash): nothing is known committed, so it starts at
            // the log start, as Kafka's does; its leader moves it (a partition with one
            // replica publishes its whole log at once).
            high_watermark: st
                .high_watermarks
                .get(&ck)
                .copied()
                .or(replicated.then_some(0)),
        }
    } else {
        OpenOptions::default()
    };
    let had_data = at_startup && dir.is_dir();
    let log = Log::open(&dir, &key.0, key.1, config, opts)
        .await
        .map_err(|e| format!("cannot open partition {}-{}: {e}", key.0, key.1))?;
    if let Some(&c) = st.cleaner_offsets.get(&ck).filter(|_| had_data) {
        log.set_cleaner_checkpoint(c);
    }
    if fresh {
        let text = format!("version: 0\ntopic_id: {}\n", metadata::hex(topic_id));
        runnel_log::checkpoint::write_atomic(&claim, text.into())
            .await
            .map_err(|e| format!("cannot write {}: {e}", claim.display()))?;
    }
    Ok(log)
}

/// Renames a deleted partition's directory out of the way at once (a new topic of the same
/// name may be created right after), then removes it on the deleter thread: removing a large
/// directory is many blocking syscalls, and the segment files may still be held open by
/// in-flight fetches, which keep reading them until they finish.
fn delete_partition_dir(dir: PathBuf) {
    let mut doomed = dir.clone().into_os_string();
    doomed.push(format!(".{}-delete", metadata::hex(&metadata::random_id())));
    let doomed = PathBuf::from(doomed);
    if let Err(e) = std::fs::rename(&dir, &doomed) {
        tracing::warn!("cannot rename {} for deletion: {e}", dir.display());
        return;
    }
    static DELETER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<PathBuf>>> =
        std::sync::OnceLock::new();
    let deleter = DELETER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("runnel-deleter".into())
            .spawn(move || {
                for dir in rx {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!("cannot delete {}: {e}", dir.display());
                    }
                }
            })
            .map_err(|e| tracing::warn!("no deleter thread ({e}): deleting inline"))
            .ok()
            .map(|_| tx)
    });
    let leftover = match deleter {
        Some(tx) => tx.send(doomed).err().map(|e| e.0),
        None => Some(doomed),
    };
    if let Some(doomed) = leftover {
        // No deleter thread: the next start removes it (remove_deleted_dirs).
        tracing::warn!("{} is left for the next start to delete", doomed.display());
    }
}

/// Removes directories left by deletions a crash interrupted.
pub fn remove_deleted_dirs(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with("-delete") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The log settings of a topic: the broker's defaults with the topic's overrides applied.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = defaults.clone();
    for (k, v) in overrides {
        let n = v.parse::<i64>().ok();
        match k.as_str() {
            "segment.bytes" => c.segment_bytes = n.unwrap_or(0) as u64,
            "segment.ms" => c.segment_ms = n.map(|n| n as u64),
            "segment.jitter.ms" => c.segment_jitter_ms = n.map_or(0, |n| n.max(0) as u64),
            "segment.index.bytes" => {
                c.segment_index_bytes =
                    n.map_or(runnel_log::DEFAULT_SEGMENT_INDEX_BYTES, |n| n.max(0) as u64)
            }
            "retention.ms" => c.retention_ms = n.and_then(|n| u64::try_from(n).ok()),
            "retention.bytes" => c.retention_bytes = n.and_then(|n| u64::try_from(n).ok()),
            "cleanup.policy" => {
                c.compact = v.split(',').any(|p| p == "compact");
                c.delete = v.split(',').any(|p| p == "delete");
            }
            "delete.retention.ms" => c.delete_retention_ms = n.map_or(0, |n| n.max(0) as u64),
            "min.compaction.lag.ms" => c.min_compaction_lag_ms = n.map_or(0, |n| n.max(0) as u64),
            "max.compaction.lag.ms" => {
                c.max_compaction_lag_ms = n.map_or(i64::MAX as u64, |n| n.max(1) as u64)
            }
            "min.cleanable.dirty.ratio" => {
                if let Ok(r) = v.parse::<f64>() {
                    c.min_cleanable_dirty_ratio = r.clamp(0.0, 1.0);
                }
            }
            "flush.messages" => c.flush_messages = n.map(|n| n as u64),
            "flush.ms" => c.flush_ms = n.map(|n| n as u64),
            "message.timestamp.type" => c.log_append_time = v == "LogAppendTime",
            "preallocate" => c.preallocate = v == "true",
            "file.delete.delay.ms" => c.file_delete_delay_ms = n.map_or(0, |n| n.max(0) as u64),
            "max.message.bytes" => c.max_message_bytes = n.map_or(u64::MAX, |n| n.max(0) as u64),
            "compression.type" => {
                use runnel_record::Compression as C;
                let compression = match v.as_str() {
                    "uncompressed" => Some(C::None),
                    "gzip" => Some(C::Gzip),
                    "snappy" => Some(C::Snappy),
                    "lz4" => Some(C::Lz4),
                    "zstd" => Some(C::Zstd),
                    _ => None, // producer: batches are kept as they came
                };
                let level = |key: &str| overrides.get(key).and_then(|l| l.parse::<i32>().ok());
                c.compression = compression.map(|compression| runnel_record::recompress::Codec {
                    compression,
                    level: match compression {
                        C::Gzip => level("compression.gzip.level"),
                        C::Lz4 => level("compression.lz4.level"),
                        C::Zstd => level("compression.zstd.level"),
                        _ => None,
                    },
                });
            }
            "message.timestamp.before.max.ms" => {
                c.timestamp_before_max_ms =
                    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(u64::MAX)
            }
            "message.timestamp.after.max.ms" => {
                c.timestamp_after_max_ms = n.and_then(|n| u64::try_from(n).ok()).unwrap_or(u64::MAX)
            }
            "index.interval.bytes" => {
                // (0, Kafka's "index every batch", is 1 here: the same effect.)
                c.index_interval_bytes = n.and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1)
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_apply_over_the_broker_defaults() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".into(), "-1".into());
        o.insert("segment.bytes".into(), "1048576".into());
        let c = log_config(&LogConfig::default(), &o);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
    }

    #[test]
    fn segment_bytes_bounds_agree_with_the_log() {
        assert_eq!(metadata::MIN_SEGMENT_BYTES, runnel_log::MIN_SEGMENT_BYTES);
        // runnel-metadata's error codes are Kafka's too (it cannot use runnel-protocol's).
        use runnel_metadata::cluster::code as m;
        use runnel_protocol::code as p;
        for (a, b) in [
            (m::UNKNOWN_TOPIC_OR_PARTITION, p::UNKNOWN_TOPIC_OR_PARTITION),
            (m::INVALID_TOPIC_EXCEPTION, p::INVALID_TOPIC_EXCEPTION),
            (m::TOPIC_ALREADY_EXISTS, p::TOPIC_ALREADY_EXISTS),
            (m::INVALID_PARTITIONS, p::INVALID_PARTITIONS),
            (m::INVALID_REPLICATION_FACTOR, p::INVALID_REPLICATION_FACTOR),
            (m::INVALID_REPLICA_ASSIGNMENT, p::INVALID_REPLICA_ASSIGNMENT),
            (m::INVALID_CONFIG, p::INVALID_CONFIG),
            (m::INVALID_REQUEST, p::INVALID_REQUEST),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(metadata::MAX_SEGMENT_BYTES, runnel_log::MAX_SEGMENT_BYTES);
    }
}
