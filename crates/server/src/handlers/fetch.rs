//! Fetch: read plans from the owner shards, long polling woken by appends, and a response
//! whose record bytes are file ranges (see [`runnel_protocol::fetch_response`]).

use crate::shard::{PartitionError, Shard, ShardMsg};
use futures_lite::future;
use kafka_protocol::messages::FetchRequest;
use runnel_log::ReadPlan;
use runnel_protocol::code;
use runnel_protocol::fetch_response::{self, FileRange, PartitionOut, TopicOut};
use runnel_protocol::{Outcome, Request};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a fetch may wait, whatever the client asks (Kafka has no cap; a bound keeps
/// shutdown prompt and a broken client from parking requests forever).
const MAX_WAIT: Duration = Duration::from_secs(30);

struct Wanted {
    topic: usize,
    name: Arc<str>,
    partition: i32,
    offset: i64,
    partition_max_bytes: u64,
    /// The leader epoch the client fetches in (-1: none).
    epoch: i32,
    /// KIP-392: a replica in the consumer's rack it should fetch from instead.
    redirect: Option<i32>,
    /// Answered without asking the owner (unknown topic, bad epoch).
    error: Option<i16>,
    /// A replica a reassignment is adding, not yet in sync, fetches it: its bytes count
    /// against the leader's replication throttle.
    throttled: bool,
    /// Throttled and the throttle is overdrawn: read for its offsets only (the follower's
    /// progress still counts), no records.
    held: bool,
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: FetchRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let version = req.version;
    let snapshot = shard.snapshot();
    // A follower replica's fetch (Kafka's replica id: in the body until v14, in ReplicaState
    // from v15): it reads past the high watermark, and its offsets are its progress.
    let replica_id = if version >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    // KIP-392: a consumer that names its rack (client.rack) is sent to an in-sync replica
    // in that rack, and a follower serves such consumers (from v11). A consumer that names
    // no rack is never sent to a follower, so one that fetches there has stale metadata:
    // NOT_LEADER_OR_FOLLOWER sends it back to the leader.
    let client_rack = if version >= 11 && replica.is_none() {
        body.rack_id.as_str()
    } else {
        ""
    };

    // Sessions (KIP-227) are not kept: every fetch is a full one, and session id 0 in the
    // answer tells the client so. A client that names a session gets
    // FETCH_SESSION_ID_NOT_FOUND and starts over sessionless.
    // Epoch -1 with a session id closes that session: served as a sessionless fetch.
    if version >= 7 && body.session_id != 0 && body.session_epoch != -1 {
        return Outcome::Reply(fetch_response::encode(
            req.correlation_id,
            version,
            0,
            code::FETCH_SESSION_ID_NOT_FOUND,
            0,
            &[],
            &[],
        ));
    }

    let mut topics: Vec<TopicOut> = Vec::with_capacity(body.topics.len());
    let mut wanted: Vec<Wanted> = Vec::new();
    for t in &body.topics {
        let meta = if version >= 13 {
            snapshot.topic_by_id(t.topic_id.as_bytes())
        } else {
            snapshot.topic(t.topic.0.as_str())
        };
        let (name, id): (Arc<str>, _) = match meta {
            Some(m) => (m.name.clone(), m.id),
            None => (t.topic.0.as_str().into(), *t.topic_id.as_bytes()),
        };
        let ti = topics.len();
        for p in &t.partitions {
            let error = match meta {
                None if version >= 13 => Some(code::UNKNOWN_TOPIC_ID),
                None => Some(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(m) if !(0..m.partitions).contains(&p.partition) => {
                    Some(code::UNKNOWN_TOPIC_OR_PARTITION)
                }
                Some(m) => m.partition(p.partition).and_then(|pm| {
                    if !client_rack.is_empty() {
                        shard.check_serves(pm, p.current_leader_epoch).err()
                    } else {
                        shard.check_leads(pm, p.current_leader_epoch).err()
                    }
                }),
            };
            let redirect = match meta.and_then(|m| m.partition(p.partition)) {
                Some(pm) if error.is_none() && !client_rack.is_empty() => {
                    preferred_read_replica(shard, &snapshot, pm, client_rack)
                }
                _ => None,
            };
            let throttled = replica.is_some_and(|r| {
                meta.and_then(|m| m.partition(p.partition))
                    // (As Kafka's: a replica already in sync is never throttled.)
                    .is_some_and(|pm| pm.adding.contains(&r) && !pm.isr.contains(&r))
            });
            let held = throttled && shard.leader_throttle.exhausted();
            wanted.push(Wanted {
                throttled,
                held,
                topic: ti,
                name: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                // A redirected partition is read for its offsets only.
                partition_max_bytes: if redirect.is_some() || held {
                    0
                } else {
                    p.partition_max_bytes.max(0) as u64
                },
                epoch: p.current_leader_epoch,
                redirect,
                error,
            });
        }
        topics.push(TopicOut {
            name,
            id,
            partitions: Vec::new(),
        });
    }

    // The broker's fetch.max.bytes caps what any client asks for (and keeps the frame
    // size within an i32).
    let fetch_max = u64::from(shard.config().fetch_max_bytes);
    let max_bytes = (body.max_bytes.max(0) as u64).min(fetch_max);
    for w in &mut wanted {
        w.partition_max_bytes = w.partition_max_bytes.min(fetch_max);
    }
    let min_bytes = body.min_bytes.max(0) as u64;
    let deadline =
        Instant::now() + Duration::from_millis(body.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    // read_committed (isolation level 1): up to the last stable offset, with the aborted
    // transactions of what is read. A follower replica always reads everything.
    let committed = body.isolation_level == 1 && replica.is_none();
    let results = loop {
        let results = read_all(shard, &wanted, max_bytes, replica, committed).await;
        let total: u64 = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|p| p.len)
            .sum();
        // (A redirect is answered at once too, as Kafka does.)
        let any_error =
            results.iter().any(|r| r.is_err()) || wanted.iter().any(|w| w.redirect.is_some());
        // As Kafka: answer at once with min_bytes of data, with an error, or at the deadline.
        if total >= min_bytes || any_error || wanted.is_empty() || Instant::now() >= deadline {
            break results;
        }
        // Wait for an append to any of the partitions, or the deadline.
        if !wait_for_data(
            shard,
            &wanted,
            &results,
            deadline,
            replica.is_some(),
            committed,
        )
        .await
        {
            break read_all(shard, &wanted, max_bytes, replica, committed).await;
        }
    };
    if replica.is_some() {
        let sent: u64 = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|p| p.len)
            .sum();
        let throttled: u64 = wanted
            .iter()
            .zip(&results)
            .filter(|(w, _)| w.throttled)
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|p| p.len)
            .sum();
        shard.leader_throttle.charge(throttled);
        let c = shard.counters();
        if shard.config().zero_copy {
            c.replica_fetch_bytes_spliced.add(sent);
        } else {
            c.replica_fetch_bytes_copied.add(sent);
        }
    }

    let mut leaders = std::collections::BTreeSet::new();
    for (w, r) in wanted.iter().zip(results) {
        let out = match r {
            Ok(plan) => PartitionOut {
                index: w.partition,
                error_code: code::NONE,
                high_watermark: plan.high_watermark,
                last_stable_offset: plan.last_stable_offset,
                log_start_offset: plan.log_start_offset,
                records: (plan.len > 0 && w.redirect.is_none()).then(|| FileRange {
                    file: plan.file.clone(),
                    offset: plan.position,
                    len: plan.len,
                    source: Some((w.name.clone(), w.partition)),
                }),
                current_leader: None,
                preferred_read_replica: w.redirect.unwrap_or(-1),
                // (Kafka skips the read, and sends null, when it redirects.)
                aborted: (committed && w.redirect.is_none()).then(|| plan.aborted.clone()),
            },
            Err((c, hw_lso)) => {
                // KIP-951: with a leadership error, name the current leader.
                let current_leader = matches!(
                    c,
                    code::NOT_LEADER_OR_FOLLOWER
                        | code::FENCED_LEADER_EPOCH
                        | code::UNKNOWN_LEADER_EPOCH
                )
                .then(|| snapshot.partition(&w.name, w.partition))
                .flatten()
                .map(|pm| {
                    if pm.leader >= 0 {
                        leaders.insert(pm.leader);
                    }
                    (pm.leader, pm.leader_epoch)
                });
                PartitionOut {
                    index: w.partition,
                    error_code: c,
                    high_watermark: hw_lso.map_or(-1, |(_, hw)| hw),
                    last_stable_offset: hw_lso.map_or(-1, |(_, hw)| hw),
                    log_start_offset: hw_lso.map_or(-1, |(lso, _)| lso),
                    records: None,
                    current_leader,
                    preferred_read_replica: -1,
                    aborted: None,
                }
            }
        };
        topics[w.topic].partitions.push(out);
    }
    let endpoints: Vec<fetch_response::NodeEndpoint> = leaders
        .iter()
        .filter_map(|id| snapshot.brokers.get(id))
        .map(|b| fetch_response::NodeEndpoint {
            id: b.id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        })
        .collect();
    Outcome::Reply(fetch_response::encode(
        req.correlation_id,
        version,
        0,
        code::NONE,
        0,
        &topics,
        &endpoints,
    ))
}

/// KIP-392 (Kafka's RackAwareReplicaSelector): for a consumer in `rack`, the first live
/// in-sync replica in that rack, unless this broker (the leader) is in it.
fn preferred_read_replica(
    shard: &Shard,
    snapshot: &runnel_metadata::Snapshot,
    pm: &runnel_metadata::PartitionMeta,
    rack: &str,
) -> Option<i32> {
    let me = shard.node_id();
    if pm.leader != me {
        return None;
    }
    let rack_of = |id: i32| snapshot.brokers.get(&id).and_then(|b| b.rack.as_deref());
    if rack_of(me) == Some(rack) {
        return None;
    }
    pm.replicas.iter().copied().find(|r| {
        *r != me && pm.isr.contains(r) && snapshot.is_live(*r) && rack_of(*r) == Some(rack)
    })
}

/// A partition's plan, or its error code with (log start, high watermark) where known.
type ReadResult = Result<ReadPlan, (i16, Option<(i64, i64)>)>;

/// Plans every partition concurrently with its own limit, then trims to the response's
/// max_bytes in request order: a partition that would overflow is planned again with what
/// is left (KIP-74: the first partition with data always gets at least one whole batch).
async fn read_all(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: u64,
    replica: Option<i32>,
    committed: bool,
) -> Vec<ReadResult> {
    let first = runnel_runtime::join_all(wanted.iter().map(|w| {
        let shard = shard.clone();
        // A redirected partition is read for its offsets only: no first batch (KIP-74) that
        // would count against the others' budget without being sent.
        let min_one_batch = w.redirect.is_none() && !w.held;
        let (epoch, error, name, partition, offset, limit) = (
            w.epoch,
            w.error,
            w.name.clone(),
            w.partition,
            w.offset,
            w.partition_max_bytes.min(max_bytes),
        );
        async move {
            if let Some(c) = error {
                return Err((c, None));
            }
            let replica = replica.map(|r| (r, epoch));
            read_one(
                &shard,
                name,
                partition,
                offset,
                limit,
                min_one_batch,
                replica,
                committed,
            )
            .await
        }
    }))
    .await;
    let mut used = 0u64;
    let mut out = Vec::with_capacity(first.len());
    for (w, r) in wanted.iter().zip(first) {
        let left = max_bytes.saturating_sub(used).min(w.partition_max_bytes);
        let r = match r {
            // The first partition with data may exceed the limits by its first batch
            // (KIP-74); every other one must fit them.
            Ok(plan) if used == 0 || plan.len <= left => Ok(plan),
            // Over a limit: plan again with what is left (possibly nothing), whole batches only.
            Ok(plan) if left == 0 => Ok(ReadPlan { len: 0, ..plan }),
            Ok(_) => {
                let (name, p) = (w.name.clone(), w.partition);
                let replica = replica.map(|r| (r, w.epoch));
                read_one(shard, name, p, w.offset, left, false, replica, committed).await
            }
            Err(e) => Err(e),
        };
        if let Ok(plan) = &r {
            used += plan.len;
        }
        out.push(r);
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn read_one(
    shard: &Rc<Shard>,
    name: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    min_one_batch: bool,
    replica: Option<(i32, i32)>,
    committed: bool,
) -> ReadResult {
    let owner = shard.owner(&name, partition);
    let key = (name.clone(), partition);
    let r: Option<Result<ReadPlan, PartitionError>> = shard
        .call(owner, |reply| ShardMsg::Read {
            key,
            offset,
            max_bytes,
            min_one_batch,
            replica,
            committed,
            reply,
        })
        .await;
    match r {
        Some(Ok(plan)) => Ok(plan),
        Some(Err((c, _)))
            if c == code::OFFSET_OUT_OF_RANGE
                && shard
                    .snapshot()
                    .partition(&name, partition)
                    .is_some_and(|pm| pm.leader != shard.node_id()) =>
        {
            // A follower behind the consumer's position (it is catching up): not a reason
            // for the consumer to reset, only to fetch from the leader.
            Err((code::NOT_LEADER_OR_FOLLOWER, None))
        }
        Some(Err((c, _))) if c == code::OFFSET_OUT_OF_RANGE => {
            // Tell the client where the log is, so it can reset.
            let key = (name, partition);
            let offsets = shard
                .call(owner, |reply| ShardMsg::Offsets { key, reply })
                .await
                .and_then(Result::ok);
            Err((c, offsets))
        }
        Some(Err((c, msg))) => {
            if c == code::KAFKA_STORAGE_ERROR {
                tracing::warn!(topic = %name, partition, "fetch failed: {msg}");
            }
            Err((c, None))
        }
        None => Err((code::NOT_LEADER_OR_FOLLOWER, None)),
    }
}

/// Waits until one of the partitions has data past what was just read, or the deadline.
/// Returns false on the deadline.
async fn wait_for_data(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    results: &[ReadResult],
    deadline: Instant,
    replica: bool,
    committed: bool,
) -> bool {
    let mut receivers = Vec::new();
    // (A held partition has data, but not for this fetch.)
    for (w, r) in wanted.iter().zip(results).filter(|(w, _)| !w.held) {
        let Ok(plan) = r else { continue };
        let key = (w.name.clone(), w.partition);
        // Data beyond the current high watermark is new to this consumer; a follower
        // waits for the log end to pass its fetch offset.
        let (offset, upto) = if replica {
            (w.offset, runnel_log::Upto::LogEnd)
        } else if committed {
            // Data below a moving last stable offset (a transaction ended).
            (
                plan.last_stable_offset.max(w.offset),
                runnel_log::Upto::Stable,
            )
        } else {
            (
                plan.high_watermark.max(w.offset),
                runnel_log::Upto::HighWatermark,
            )
        };
        let owner = shard.owner(&w.name, w.partition);
        receivers.push(
            shard
                .send(owner, |reply| ShardMsg::WaitForData {
                    key,
                    offset,
                    upto,
                    reply,
                })
                .await,
        );
    }
    if receivers.is_empty() {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return false;
    }
    let any = async {
        // Resolves on the first answer (each answer means data, or a closing log).
        let mut set = receivers;
        future::poll_fn(|cx| {
            for rx in set.iter_mut() {
                if std::pin::Pin::new(rx).poll(cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
            }
            std::task::Poll::Pending
        })
        .await
    };
    let timeout = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        false
    };
    // Shutdown answers long polls at once (with what there is).
    let stopping = async {
        shard.stopping.wait().await;
        false
    };
    future::or(any, future::or(timeout, stopping)).await
}

use std::future::Future as _;
