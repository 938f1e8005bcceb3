//! The shard's side of consumer groups: it drives its [`runnel_group::Coordinator`] (the
//! groups placed on this shard), does the coordinator's writes to `__consumer_offsets`,
//! replays the offsets at start, and runs the group timers.

use crate::offsets_store;
use crate::shard::Shard;
use runnel_group::offsets::{self, TOPIC};
use runnel_group::{code, GroupOp, PendingWrite};
use runnel_log::Log;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The shard coordinating `group`, and the group's `__consumer_offsets` partition: the
/// owner of that partition.
pub fn coordinator_of(shard: &Shard, group: &str) -> (usize, i32) {
    let partitions = shard
        .snapshot()
        .topic(TOPIC)
        .map_or(offsets::DEFAULT_PARTITIONS, |t| t.partitions);
    let p = offsets::partition_for(group, partitions);
    (shard.owner(TOPIC, p), p)
}

/// This shard's log of the group's `__consumer_offsets` partition.
fn offsets_log(shard: &Shard, group: &str) -> Option<Log> {
    let (_, p) = coordinator_of(shard, group);
    shard
        .partitions
        .borrow()
        .get(&(Arc::from(TOPIC), p))
        .cloned()
}

/// How long a commit waits for the in-sync replicas (Kafka's offsets.commit.timeout.ms).
const COMMIT_TIMEOUT_MS: i32 = 5000;

/// Runs a group operation on this (its coordinator's) shard, with the write it may need.
pub async fn run(shard: &Shard, mut op: GroupOp) {
    // A KIP-848 group's assignment follows the metadata this shard has, whichever shard
    // the heartbeat came through (two shards a snapshot apart would otherwise flip it).
    if let GroupOp::ConsumerHeartbeat(args, _) = &mut op {
        args.snapshot = shard.snapshot();
    }
    if let Some(w) = shard.coordinator.handle(op) {
        let _ = write(shard, w, shard.coordinator.config.durable_commits).await;
    }
}

/// Appends a coordinator's records to the group's partition and completes the write with
/// the outcome, awaiting nothing else in between (see [`PendingWrite`]).
async fn write(shard: &Shard, w: PendingWrite, durable: bool) -> Result<(), i16> {
    let result = if w.records.is_empty() {
        Ok(())
    } else {
        match offsets_log(shard, &w.group) {
            None => Err(code::COORDINATOR_NOT_AVAILABLE),
            // A replica this broker no longer leads takes no coordinator writes.
            Some(_)
                if shard
                    .check_leader(TOPIC, coordinator_of(shard, &w.group).1, -1)
                    .is_err() =>
            {
                Err(code::NOT_COORDINATOR)
            }
            Some(log) => match offsets_store::append(&log, &w.records, w.txn, durable).await {
                Err(e) => {
                    // As Kafka's coordinators answer a failed append (a full disk, an I/O
                    // error): NOT_COORDINATOR, which clients retry after finding the
                    // coordinator again; KAFKA_STORAGE_ERROR is not an OffsetCommit error
                    // they know.
                    tracing::warn!(group = %w.group, "__consumer_offsets write failed: {e}");
                    Err(code::NOT_COORDINATOR)
                }
                // As Kafka's coordinator appends with acks=all: a commit is answered (and
                // applied) once every in-sync replica has it, so it survives a failover.
                Ok(info) => {
                    let key = (Arc::from(TOPIC), coordinator_of(shard, &w.group).1);
                    crate::replication::update_high_watermark(shard, &key, &log);
                    crate::replication::await_isr(shard, &key, &log, info.last_offset, COMMIT_TIMEOUT_MS)
                        .await
                        .map_err(|(c, msg)| {
                            tracing::warn!(group = %w.group, "__consumer_offsets write not replicated: {msg}");
                            if c == code::NOT_LEADER_OR_FOLLOWER { code::NOT_COORDINATOR } else { c }
                        })
                }
            },
        }
    };
    shard.coordinator.complete(w, result);
    result
}

/// Replays `__consumer_offsets` partition `p` (of `partitions`; this broker now leads it)
/// into this shard's group coordinator, which meanwhile answers its groups
/// COORDINATOR_LOAD_IN_PROGRESS.
pub async fn load(shard: &Rc<Shard>, p: i32, partitions: i32) -> Result<(), String> {
    shard.coordinator.loading(p, partitions);
    let logs: Vec<runnel_log::Log> = shard
        .partitions
        .borrow()
        .get(&(Arc::from(TOPIC), p))
        .cloned()
        .into_iter()
        .collect();
    let started = std::time::Instant::now();
    let mut all = HashMap::new();
    let mut pending = HashMap::new();
    let mut rewrite = Vec::new();
    for log in &logs {
        let replayed = offsets_store::replay(log).await.map_err(|e| {
            // Not loading any more: its groups are answered NOT_COORDINATOR.
            shard.coordinator.unload(p, partitions);
            format!(
                "cannot load committed offsets from {}: {e}",
                log.dir().display()
            )
        })?;
        if replayed.old_format {
            rewrite.push(log.clone());
        }
        all.extend(replayed.live);
        pending.extend(replayed.pending);
    }
    for log in rewrite {
        // Offsets in the layout of an older Runnel: written again in Kafka's, so Kafka's
        // tools read them and the cleaner drops the old records (their keys are the same).
        let records: Vec<_> = all
            .iter()
            .map(|(k, c)| (k.clone(), Some(c.clone())))
            .collect();
        match offsets_store::append(&log, &records, None, true).await {
            Ok(_) => tracing::info!(
                partition = p,
                offsets = records.len(),
                "rewrote committed offsets in Kafka's record schemas"
            ),
            Err(e) => tracing::warn!(partition = p, "cannot rewrite committed offsets: {e}"),
        }
    }
    let n = all.len();
    shard.coordinator.load_txn_offsets(pending);
    shard.coordinator.load_partition(p, all);
    if n > 0 {
        tracing::info!(
            shard = shard.id,
            partition = p,
            offsets = n,
            groups = shard.coordinator.group_count(),
            ms = started.elapsed().as_millis() as u64,
            "loaded committed offsets"
        );
    }
    Ok(())
}

/// Group sessions and rebalance deadlines (every 100 ms), and offsets retention (every
/// minute). (`__consumer_offsets` is compacted by the log cleaner.)
pub async fn timers(shard: Rc<Shard>) {
    let mut last_slow = std::time::Instant::now();
    // The topics (name -> id) as last seen: a name gone, or back with another id, is a
    // deleted topic whose committed offsets go too. Deleted topics (-> when seen) stay in
    // `gone` until their tombstones are written, retried at each slow tick.
    let mut seen = shard.snapshot();
    let mut gone: HashMap<Arc<str>, i64> = HashMap::new();
    loop {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let slow = last_slow.elapsed() >= Duration::from_secs(60);
        let now = shard.snapshot();
        let mut retry = slow && !gone.is_empty();
        if now.version != seen.version {
            let at = shard.coordinator.wall_ms();
            for (name, t) in &seen.topics {
                if now.topics.get(name).is_none_or(|n| n.id != t.id) {
                    gone.insert(name.clone(), at);
                    retry = true;
                }
            }
            seen = now;
        }
        if retry {
            let mut all_written = true;
            for (group, keys) in shard.coordinator.offsets_of_deleted(&gone) {
                let n = keys.len();
                let w = shard.coordinator.expire(&group, keys);
                if write(&shard, w, false).await.is_ok() {
                    tracing::info!(%group, offsets = n, "removed the committed offsets of deleted topics");
                } else {
                    all_written = false;
                }
            }
            if all_written {
                gone.clear();
            }
        }
        let expired = shard.coordinator.tick(slow);
        if !slow {
            continue;
        }
        last_slow = std::time::Instant::now();
        for (group, keys) in expired {
            let n = keys.len();
            let w = shard.coordinator.expire(&group, keys);
            if write(&shard, w, false).await.is_ok() {
                tracing::info!(%group, offsets = n, "expired committed offsets");
            }
        }
    }
}
