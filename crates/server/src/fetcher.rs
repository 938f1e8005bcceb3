//! Follower fetchers: on each shard, one task per leader broker pulls the partitions this
//! shard owns and this broker follows from that leader, with Kafka's own requests (Fetch
//! with this broker's replica id, OffsetForLeaderEpoch), and appends what it gets to the
//! local logs unchanged. Before fetching a partition in a new leader epoch it asks the
//! leader where its own latest epoch ended there, and truncates its log to that point
//! (KIP-101/KIP-279), so replicas never diverge.
//!
//! The leader serves these fetches through the same path as consumers' (file ranges spliced
//! to the socket); the follower reads each response into one buffer and writes the batches
//! from slices of it.

use crate::peer::Peer;
use crate::replication::Following;
use crate::shard::{PartitionKey, Shard};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_log::Log;
use runnel_protocol::code;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Fetch v12: replica id in the body, topic names, KIP-320 epochs; every Kafka since 2.7
/// and Runnel speak it.
const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
/// Pause after a failed connection or a round without progress (not a test wait: the
/// leader is down or busy and will be asked again).
const BACKOFF: Duration = Duration::from_millis(200);

/// Starts the fetcher for `leader` on this shard unless it runs already. It stops by itself
/// once this shard follows nothing on that leader.
pub fn ensure(shard: &Rc<Shard>, leader: i32) {
    if !shard.fetchers.borrow_mut().insert(leader) {
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        run(&shard, leader).await;
        shard.fetchers.borrow_mut().remove(&leader);
    })
    .detach();
}

/// The partitions this shard follows on `leader`.
fn followed(shard: &Shard, leader: i32) -> Vec<(PartitionKey, Following)> {
    shard
        .following
        .borrow()
        .iter()
        .filter(|(_, f)| f.leader == leader)
        // A replica offline after a storage error takes nothing more until a restart.
        .filter(|(k, _)| shard.log(k).is_ok_and(|l| l.offline_reason().is_none()))
        .map(|(k, f)| (k.clone(), *f))
        .collect()
}

async fn run(shard: &Rc<Shard>, leader: i32) {
    let mut peer: Option<Peer> = None;
    let mut pause = false;
    loop {
        if shard.stopping.is_set() {
            return;
        }
        if pause {
            let stop = async {
                shard.stopping.wait().await;
            };
            futures_lite::future::or(glommio::timer::sleep(BACKOFF), stop).await;
            pause = false;
            continue;
        }
        let parts = followed(shard, leader);
        if parts.is_empty() {
            return;
        }
        let conn = match peer.as_mut() {
            Some(p) => p,
            None => {
                let Some(addr) = shard
                    .snapshot()
                    .brokers
                    .get(&leader)
                    .map(|b| format!("{}:{}", b.host, b.port))
                else {
                    pause = true;
                    continue;
                };
                let config = shard.config();
                let max_response = config.replica_fetch_response_max_bytes as usize + (1 << 20);
                let deadline = Duration::from_millis(config.replica_fetch_wait_max_ms as u64)
                    + Duration::from_secs(10);
                match Peer::connect(&addr, max_response, deadline).await {
                    Ok(p) => peer.insert(p),
                    Err(e) => {
                        tracing::debug!(
                            "fetcher: cannot connect to broker {leader} at {addr}: {e}"
                        );
                        pause = true;
                        continue;
                    }
                }
            }
        };
        // (Each request has a deadline of its own; local work, such as a truncation, is
        // never cut short.)
        let round = async {
            let untruncated: Vec<_> = parts.iter().filter(|(_, f)| !f.truncated).collect();
            if !untruncated.is_empty() {
                truncate(shard, conn, &untruncated).await?;
            }
            let ready: Vec<_> = followed(shard, leader)
                .into_iter()
                .filter(|(_, f)| f.truncated)
                .collect();
            if ready.is_empty() {
                return Ok(false);
            }
            fetch(shard, conn, &ready).await
        };
        match round.await {
            Ok(answered) => pause = !answered,
            Err(e) => {
                tracing::debug!("fetcher: broker {leader}: {e}");
                peer = None;
                pause = true;
            }
        }
    }
}

/// Truncates each partition to where the leader's log agrees with it: the end, on the
/// leader, of this log's latest epoch, or this log's end of the epoch the leader names.
async fn truncate(
    shard: &Rc<Shard>,
    conn: &mut Peer,
    parts: &[&(PartitionKey, Following)],
) -> Result<(), String> {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for (key, f) in parts {
        let Ok(log) = shard.log(key) else { continue };
        let Some(epoch) = log.latest_epoch() else {
            // An empty log has nothing to disagree about.
            mark_truncated(shard, key, f);
            continue;
        };
        topics.entry(&key.0).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(f.epoch)
                .with_leader_epoch(epoch),
        );
        asked.push((key.clone(), *f));
    }
    if asked.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.node_id()))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = conn
        .call(ApiKey::OffsetForLeaderEpoch, EPOCH_VERSION, &req)
        .await?;
    for t in &resp.topics {
        for p in &t.partitions {
            let Some((key, f)) = asked
                .iter()
                .find(|(k, _)| &*k.0 == t.topic.0.as_str() && k.1 == p.partition)
            else {
                continue;
            };
            if p.error_code != code::NONE {
                tracing::debug!(
                    topic = %key.0, partition = key.1,
                    "leader epoch end: error {}", p.error_code
                );
                continue;
            }
            // The answer is for the epoch asked about: the partition may have changed hands
            // while it came.
            let current = shard.following.borrow().get(key).copied();
            if current != Some(*f) {
                continue;
            }
            let Ok(log) = shard.log(key) else { continue };
            let target = if p.leader_epoch < 0 || p.end_offset < 0 {
                // The leader knows none of this log's epochs: keep what the ISR had.
                log.high_watermark()
            } else {
                let mine = if log.latest_epoch() == Some(p.leader_epoch) {
                    log.log_end_offset()
                } else {
                    log.end_offset_for_epoch(p.leader_epoch).1
                };
                p.end_offset.min(mine.max(0))
            };
            if target < log.log_end_offset() {
                let done = Rc::new(crate::shard::Latch::default());
                shard
                    .replacing
                    .borrow_mut()
                    .insert(key.clone(), done.clone());
                let result = replace_log(shard, key, log.truncate_to(target).await);
                shard.replacing.borrow_mut().remove(key);
                done.set();
                result?;
            }
            mark_truncated(shard, key, f);
        }
    }
    Ok(())
}

fn mark_truncated(shard: &Shard, key: &PartitionKey, f: &Following) {
    if let Some(now) = shard.following.borrow_mut().get_mut(key) {
        if now.leader == f.leader && now.epoch == f.epoch {
            now.truncated = true;
        }
    }
}

/// Puts the log a truncation or reset reopened in place of the old one.
fn replace_log(
    shard: &Shard,
    key: &PartitionKey,
    log: Result<Log, runnel_log::LogError>,
) -> Result<(), String> {
    let log = log.map_err(|e| format!("{}-{}: {e}", key.0, key.1))?;
    log.set_replicated(true);
    if let Some(slot) = shard.partitions.borrow_mut().get_mut(key) {
        *slot = log;
    }
    Ok(())
}

/// One Fetch from the leader for `parts`, appended to the local logs. Ok(true) when the
/// leader answered any partition without an error (fetch again at once: the leader holds
/// a fetch with nothing new for replica.fetch.wait.max.ms); Ok(false) pauses the fetcher.
async fn fetch(
    shard: &Rc<Shard>,
    conn: &mut Peer,
    parts: &[(PartitionKey, Following)],
) -> Result<bool, String> {
    let config = shard.config();
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    let mut asked: Vec<(PartitionKey, Following, Log, i64)> = Vec::new();
    // Partitions a reassignment is adding to this broker copy under the follower throttle
    // until they are in sync: left out of this fetch while it is overdrawn.
    let snapshot = shard.snapshot();
    let me = shard.node_id();
    let throttled = |key: &PartitionKey| {
        snapshot
            .partition(&key.0, key.1)
            .is_some_and(|pm| pm.adding.contains(&me) && !pm.isr.contains(&me))
    };
    let exhausted = shard.follower_throttle.exhausted();
    for (key, f) in parts {
        if exhausted && throttled(key) {
            continue;
        }
        let Ok(log) = shard.log(key) else { continue };
        let offset = log.published_end();
        topics.entry(&key.0).or_default().push(
            FetchPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(f.epoch)
                .with_fetch_offset(offset)
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(config.replica_fetch_max_bytes),
        );
        asked.push((key.clone(), *f, log, offset));
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(shard.node_id()))
        .with_max_wait_ms(config.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(config.replica_fetch_response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    if asked.is_empty() {
        return Ok(false);
    }
    let resp: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
    let mut answered = false;
    for t in resp.responses {
        for p in t.partitions {
            let Some((key, f, log, offset)) = asked
                .iter()
                .find(|(k, ..)| &*k.0 == t.topic.0.as_str() && k.1 == p.partition_index)
            else {
                continue;
            };
            // The partition may have changed hands (or been truncated) meanwhile.
            let current = shard.following.borrow().get(key).copied();
            if current.is_none_or(|c| c.leader != f.leader || c.epoch != f.epoch) {
                continue;
            }
            match p.error_code {
                code::NONE => answered = true,
                code::OFFSET_OUT_OF_RANGE => {
                    out_of_range(shard, key, log, *offset, p.log_start_offset).await?;
                    continue;
                }
                c => {
                    tracing::debug!(topic = %key.0, partition = key.1, "replica fetch: error {c}");
                    continue;
                }
            }
            let records: Bytes = p.records.unwrap_or_default();
            let fetched = records.len() as u64;
            if throttled(key) {
                shard.follower_throttle.charge(fetched);
            }
            let leo = if records.is_empty() {
                log.published_end()
            } else {
                match log.append_replica(records).await {
                    Ok(leo) => {
                        shard.counters().replica_fetch_bytes.add(fetched);
                        leo
                    }
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, "replica append failed: {e}");
                        if let Some(now) = shard.following.borrow_mut().get_mut(key) {
                            now.truncated = false; // ask the leader again where we agree
                        }
                        continue;
                    }
                }
            };
            log.set_high_watermark(p.high_watermark.min(leo));
            if p.log_start_offset > log.log_start_offset() {
                let to = p.log_start_offset.min(log.high_watermark());
                if to > log.log_start_offset() {
                    let _ = log.delete_records(to).await;
                }
            }
        }
    }
    Ok(answered)
}

/// The leader refused the fetch offset: past its end (this log has a tail the leader lacks:
/// truncate by epochs again) or below its log start (retention removed what this replica
/// lacks: start over empty at the leader's log start).
async fn out_of_range(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    log: &Log,
    offset: i64,
    leader_log_start: i64,
) -> Result<(), String> {
    if leader_log_start > offset {
        tracing::warn!(
            topic = %key.0, partition = key.1,
            "the leader's log starts at {leader_log_start}, past this replica's end {offset}: \
             starting over there"
        );
        let done = Rc::new(crate::shard::Latch::default());
        shard
            .replacing
            .borrow_mut()
            .insert(key.clone(), done.clone());
        let result = replace_log(shard, key, log.reset_to(leader_log_start).await);
        shard.replacing.borrow_mut().remove(key);
        done.set();
        result?;
    } else if let Some(f) = shard.following.borrow_mut().get_mut(key) {
        f.truncated = false;
    }
    Ok(())
}
