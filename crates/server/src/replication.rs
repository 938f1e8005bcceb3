//! The leader side of replication, on the partition's owner shard: each follower's progress
//! (from its fetches), the high watermark (the lowest log end offset in the ISR), ISR
//! changes proposed to the metadata quorum (Kafka's AlterPartition), and acks=all answers
//! that wait for the ISR. Also the role a metadata snapshot gives each partition this
//! broker replicates: leader (a new epoch in its log) or follower (a fetcher pulls it).
//!
//! Follows Kafka's Partition / ReplicaManager: a follower is caught up when it fetched from
//! at least the leader's log end offset as of its previous fetch; one not caught up for
//! `--replica-lag-time-max-ms` leaves the ISR; one whose fetch offset reaches the high
//! watermark (and the start of the leader's epoch) joins it again.

use crate::shard::{produce_error, PartitionError, PartitionKey, ProduceError, Shard};
use runnel_log::{AppendInfo, Log};
use runnel_metadata::cluster::Command;
use runnel_metadata::PartitionMeta;
use runnel_protocol::code;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The first transactional batch of a transaction on this partition is checked with the
/// producer's transaction coordinator (KIP-890 part 1); later ones, with the transaction
/// open here already, are not. The origin to append with: verified for this producer id
/// and epoch only, so no other producer's batch in the same request opens a transaction on
/// the strength of the check.
async fn verify_transaction(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    log: &Log,
    records: &bytes::BytesMut,
    txn: Option<(Arc<str>, i16)>,
) -> Result<runnel_log::Origin, PartitionError> {
    let Ok(h) = runnel_record::BatchHeader::parse(records) else {
        return Ok(runnel_log::Origin::Client); // the append refuses it
    };
    if first_transactional(log, records).is_none() {
        // Its transaction is open here already (an earlier check).
        return Ok(runnel_log::Origin::Client);
    }
    let Some((id, version)) = txn else {
        return Err((
            code::INVALID_RECORD,
            "transactional records in a produce request without a transactional id".into(),
        ));
    };
    crate::txns::verify(shard, &id, h.producer_id, h.producer_epoch, key, version)
        .await
        .map(|()| runnel_log::Origin::Verified {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
        })
        .map_err(|c| {
            (
                c,
                format!(
                    "{}-{} is not in the open transaction of {id} (producer {} epoch {})",
                    key.0, key.1, h.producer_id, h.producer_epoch
                ),
            )
        })
}

/// The producer id of a transactional batch whose producer has no transaction open on
/// this partition yet: the coordinator must confirm the partition is in it.
fn first_transactional(log: &Log, records: &bytes::BytesMut) -> Option<i64> {
    let h = runnel_record::BatchHeader::parse(records).ok()?;
    (h.is_transactional() && !h.is_control() && !log.in_transaction(h.producer_id))
        .then_some(h.producer_id)
}

/// How long an ISR change may take to commit before the leader tries again.
const ALTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A partition this broker leads, with other replicas.
pub struct Leading {
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_isr: i32,
    pub followers: HashMap<i32, Progress>,
    /// An ISR change is in flight (one at a time, as Kafka's pending AlterPartition).
    pub altering: bool,
    /// The ISR that change proposes. Until it commits, the high watermark counts the
    /// members of both (Kafka's maximal ISR, KIP-497): a replica joining must have what
    /// is acknowledged meanwhile, and one leaving still counts until it is out.
    pub pending: Option<Vec<i32>>,
    /// Set when this broker stops leading in this epoch: acks=all waiters give up.
    pub lost: Rc<crate::shard::Latch>,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Its log end offset: the offset of its last fetch (-1: not fetched this epoch).
    pub leo: i64,
    pub caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end offset when that fetch came.
    pub leader_leo_at_last_fetch: i64,
}

/// A partition this broker follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    pub leader: i32,
    pub epoch: i32,
    /// The log was truncated to where the leader's log agrees with it, in this epoch.
    pub truncated: bool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// min.insync.replicas for a partition: the topic's, the flag's, or 2 when it has three
/// replicas or more (else 1).
pub fn min_insync(shard: &Shard, overrides: &BTreeMap<String, String>, replicas: usize) -> i32 {
    let default = shard
        .config()
        .min_insync_replicas
        .unwrap_or(if replicas >= 3 { 2 } else { 1 });
    runnel_metadata::min_insync_replicas(default, overrides)
}

/// Gives a partition this shard owns and this broker replicates the role the snapshot says:
/// a new leader starts its epoch in the log; a follower is handed to the fetcher for its
/// leader. Runs before the shard sees the snapshot.
pub async fn assign(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    pm: &PartitionMeta,
    overrides: &BTreeMap<String, String>,
) -> Result<(), String> {
    // A fetcher truncating this partition closes its log and opens it again: the role
    // goes to the log in place once that is done.
    let replacing = shard.replacing.borrow().get(key).cloned();
    if let Some(done) = replacing {
        done.wait().await;
    }
    let log = &shard.log(key).map_err(|(_, e)| e)?;
    if log.offline_reason().is_some() {
        // An offline replica neither leads nor follows (a leadership the quorum gave it
        // before its report applied goes away with the report); it is reported.
        forget(shard, key);
        return Ok(());
    }
    let me = shard.node_id();
    let replicated = pm.replicas.len() > 1;
    if pm.leader == me {
        shard.following.borrow_mut().remove(key);
        // (During a reassignment the replica set is the union of two: the target's size
        // is the replication factor.)
        let min_isr = min_insync(shard, overrides, pm.target().len());
        let same_epoch = shard
            .leading
            .borrow()
            .get(key)
            .is_some_and(|l| l.epoch == pm.leader_epoch);
        if !same_epoch {
            if let Some(old) = shard.leading.borrow_mut().remove(key) {
                old.lost.set();
            }
            log.begin_epoch(pm.leader_epoch)
                .await
                .map_err(|e| format!("{}-{}: {e}", key.0, key.1))?;
            let now = now_ms();
            let followers = pm
                .replicas
                .iter()
                .filter(|r| **r != me)
                .map(|r| {
                    // ISR members count as caught up now: they get a full lag time to
                    // fetch from the new leader before they are dropped.
                    let caught_up_ms = if pm.isr.contains(r) { now } else { 0 };
                    (
                        *r,
                        Progress {
                            leo: -1,
                            caught_up_ms,
                            last_fetch_ms: 0,
                            leader_leo_at_last_fetch: -1,
                        },
                    )
                })
                .collect();
            if replicated && pm.leader_epoch > 0 {
                tracing::info!(
                    topic = %key.0, partition = key.1,
                    "leading in epoch {} with ISR {:?}", pm.leader_epoch, pm.isr
                );
            }
            shard.leading.borrow_mut().insert(
                key.clone(),
                Leading {
                    epoch: pm.leader_epoch,
                    replicas: pm.replicas.clone(),
                    isr: pm.isr.clone(),
                    min_isr,
                    followers,
                    altering: false,
                    pending: None,
                    lost: Rc::new(crate::shard::Latch::default()),
                },
            );
        } else if let Some(l) = shard.leading.borrow_mut().get_mut(key) {
            l.isr = pm.isr.clone();
            l.min_isr = min_isr;
            if l.replicas != pm.replicas {
                // A reassignment added replicas (they fetch from scratch, outside the ISR
                // until they catch up); those it removes go with the next epoch.
                for r in pm.replicas.iter().filter(|r| **r != me) {
                    l.followers.entry(*r).or_insert(Progress {
                        leo: -1,
                        caught_up_ms: 0,
                        last_fetch_ms: 0,
                        leader_leo_at_last_fetch: -1,
                    });
                }
                l.followers.retain(|r, _| pm.replicas.contains(r));
                l.replicas = pm.replicas.clone();
            }
        }
        log.set_replicated(replicated);
        update_high_watermark(shard, key, log);
        return Ok(());
    }
    if let Some(old) = shard.leading.borrow_mut().remove(key) {
        old.lost.set();
    }
    log.set_replicated(true);
    if pm.leader < 0 {
        shard.following.borrow_mut().remove(key);
        return Ok(());
    }
    let next = Following {
        leader: pm.leader,
        epoch: pm.leader_epoch,
        truncated: false,
    };
    let changed = {
        let mut following = shard.following.borrow_mut();
        match following.get(key) {
            Some(f) if f.leader == next.leader && f.epoch == next.epoch => false,
            _ => {
                following.insert(key.clone(), next);
                true
            }
        }
    };
    if changed {
        tracing::debug!(
            topic = %key.0, partition = key.1,
            "following broker {} in epoch {}", pm.leader, pm.leader_epoch
        );
        crate::fetcher::ensure(shard, pm.leader);
    }
    Ok(())
}

/// Forgets a partition's role (its log is closing: topic deleted, shard stopping).
pub fn forget(shard: &Shard, key: &PartitionKey) {
    if let Some(old) = shard.leading.borrow_mut().remove(key) {
        old.lost.set();
    }
    shard.following.borrow_mut().remove(key);
}

/// Moves the high watermark of a partition this broker leads to the lowest log end offset
/// in its ISR (its own published end included).
pub fn update_high_watermark(shard: &Shard, key: &PartitionKey, log: &Log) {
    let leading = shard.leading.borrow();
    let Some(l) = leading.get(key) else {
        return;
    };
    let me = shard.node_id();
    // (Its own end as far as it is synced where it had to be: followers may have fetched
    // a group the leader is still syncing.)
    let mut hw = log.settled_end();
    let pending = l.pending.iter().flatten();
    for r in l.isr.iter().chain(pending).filter(|r| **r != me) {
        hw = hw.min(l.followers.get(r).map_or(-1, |f| f.leo));
    }
    if hw >= 0 {
        log.set_high_watermark(hw);
    }
}

/// Checks a follower's fetch before it is served: this broker leads the partition, in the
/// epoch the follower names, and the fetcher is one of its replicas.
pub fn check_follower(
    shard: &Shard,
    key: &PartitionKey,
    replica: i32,
    epoch: i32,
) -> Result<(), PartitionError> {
    let leading = shard.leading.borrow();
    let Some(l) = leading.get(key) else {
        return Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!(
                "broker {} does not lead {}-{}",
                shard.node_id(),
                key.0,
                key.1
            ),
        ));
    };
    if epoch >= 0 && epoch != l.epoch {
        let c = if epoch < l.epoch {
            code::FENCED_LEADER_EPOCH
        } else {
            code::UNKNOWN_LEADER_EPOCH
        };
        return Err((
            c,
            format!(
                "{}-{} is in leader epoch {}, not {epoch}",
                key.0, key.1, l.epoch
            ),
        ));
    }
    if !l.followers.contains_key(&replica) {
        return Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!("broker {replica} is not a replica of {}-{}", key.0, key.1),
        ));
    }
    Ok(())
}

/// A follower's fetch from `offset` (its log end offset) was served: its progress, the ISR
/// it may join, and the high watermark it may move. Called only for an offset the log had
/// (a fetch past the end is answered OFFSET_OUT_OF_RANGE and counts for nothing).
pub fn on_follower_fetch(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    replica: i32,
    offset: i64,
    log: &Log,
) {
    let now = now_ms();
    let leo = log.published_end();
    if offset > leo {
        return;
    }
    let join = {
        let mut leading = shard.leading.borrow_mut();
        let Some(l) = leading.get_mut(key) else {
            return;
        };
        let Some(f) = l.followers.get_mut(&replica) else {
            return;
        };
        if offset >= leo {
            f.caught_up_ms = now;
        } else if offset >= f.leader_leo_at_last_fetch && f.leader_leo_at_last_fetch >= 0 {
            f.caught_up_ms = f.last_fetch_ms;
        }
        f.leo = offset;
        f.last_fetch_ms = now;
        f.leader_leo_at_last_fetch = leo;
        // Kafka's rule for joining the ISR: caught up to the high watermark and to the
        // start of this leader's epoch (it has everything the ISR acknowledged).
        let epoch_start = log.epoch_start(l.epoch).unwrap_or(leo);
        !l.isr.contains(&replica)
            && !l.altering
            && offset >= log.high_watermark()
            && offset >= epoch_start
            && shard.snapshot().is_live(replica)
    };
    if join {
        let (from, mut to) = {
            let leading = shard.leading.borrow();
            let l = &leading[key];
            (l.isr.clone(), l.isr.clone())
        };
        to.push(replica);
        tracing::info!(
            topic = %key.0, partition = key.1,
            "broker {replica} caught up (offset {offset}): expanding the ISR to {to:?}"
        );
        shard.counters().isr_expands.incr();
        alter_isr(shard, key, from, to);
    }
    update_high_watermark(shard, key, log);
}

/// Proposes an ISR change for a partition this broker leads; the new ISR takes effect when
/// the snapshot carrying it arrives (`assign`).
fn alter_isr(shard: &Rc<Shard>, key: &PartitionKey, from: Vec<i32>, to: Vec<i32>) {
    let epoch = {
        let mut leading = shard.leading.borrow_mut();
        let Some(l) = leading.get_mut(key) else {
            return;
        };
        l.altering = true;
        l.pending = Some(to.clone());
        l.epoch
    };
    let command = Command::AlterIsr {
        topic: key.0.to_string(),
        partition: key.1,
        leader: shard.node_id(),
        leader_epoch: epoch,
        from,
        to,
    };
    let rx = shard
        .shared
        .controller
        .propose(vec![command], ALTER_TIMEOUT);
    let (shard, key) = (shard.clone(), key.clone());
    glommio::spawn_local(async move {
        let result = rx.await;
        match &result {
            Ok(Ok(results)) => {
                if let Some(Err((c, msg))) = results.first() {
                    tracing::info!(topic = %key.0, partition = key.1, "ISR change refused ({c}): {msg}");
                }
            }
            Ok(Err((c, msg))) => {
                tracing::info!(topic = %key.0, partition = key.1, "ISR change not committed ({c}): {msg}")
            }
            Err(_) => {}
        }
        if let Some(l) = shard.leading.borrow_mut().get_mut(&key) {
            if l.epoch == epoch {
                l.altering = false;
                l.pending = None;
            }
        }
        // The ISR the change left (applied or not) sets the high watermark now.
        if let Ok(log) = shard.log(&key) {
            update_high_watermark(&shard, &key, &log);
        }
    })
    .detach();
}

/// Tells the controller about this shard's replicas that are offline after a storage
/// error (Kafka's broker reports its offline log dirs): a log that went offline, or one
/// that could not be opened. The replica leaves the ISR and its leadership moves to another
/// in-sync replica. Each once per run and topic id; retried on the next check if the
/// controller did not take it.
pub fn report_offline(shard: &Rc<Shard>, logs: &[Log]) {
    let snapshot = shard.snapshot();
    let mut offline: Vec<PartitionKey> = logs
        .iter()
        .filter(|l| l.offline_reason().is_some())
        .map(|l| (l.topic().into(), l.partition()))
        .collect();
    offline.extend(shard.unopened.borrow().keys().cloned());
    // Forget what is no longer offline here (its topic deleted, perhaps created again):
    // a new log of the same name that fails is reported again.
    shard
        .offline_reported
        .borrow_mut()
        .retain(|key, _| offline.contains(key));
    for key in offline {
        // (A topic the snapshot no longer has is being deleted: nothing to report.)
        let Some(topic_id) = snapshot.topic(&key.0).map(|t| t.id) else {
            continue;
        };
        if shard
            .offline_reported
            .borrow_mut()
            .insert(key.clone(), topic_id)
            == Some(topic_id)
        {
            continue;
        }
        tracing::warn!(
            topic = %key.0, partition = key.1,
            "reporting this replica offline to the controller; it stays offline until a restart"
        );
        let command = Command::ReplicaOffline {
            broker: shard.node_id(),
            incarnation: shard.shared.incarnation,
            topic: key.0.to_string(),
            topic_id,
            partition: key.1,
        };
        let rx = shard
            .shared
            .controller
            .propose(vec![command], ALTER_TIMEOUT);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let retry = match rx.await {
                Ok(Ok(results)) => {
                    if let Some(Err((c, msg))) = results.first() {
                        tracing::info!(topic = %key.0, partition = key.1, "offline report refused ({c}): {msg}");
                    }
                    false
                }
                Ok(Err((c, msg))) => {
                    tracing::info!(topic = %key.0, partition = key.1, "offline report not committed ({c}): {msg}");
                    true
                }
                Err(_) => true,
            };
            let mut reported = shard.offline_reported.borrow_mut();
            if retry && reported.get(&key) == Some(&topic_id) {
                reported.remove(&key);
            }
        })
        .detach();
    }
}

/// The periodic ISR check of a shard's leaderships: followers not caught up for
/// `--replica-lag-time-max-ms` leave the ISR.
pub fn shrink_lagging(shard: &Rc<Shard>) {
    let now = now_ms();
    let lag = shard.config().replica_lag_time_max_ms as i64;
    let me = shard.node_id();
    let mut changes = Vec::new();
    let partitions = shard.partitions.borrow();
    for (key, l) in shard.leading.borrow().iter() {
        // An offline leader's followers cannot fetch: its report, not an ISR of itself,
        // moves the partition on.
        if l.altering
            || partitions
                .get(key)
                .is_some_and(|g| g.offline_reason().is_some())
        {
            continue;
        }
        let out: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|r| *r != me)
            .filter(|r| {
                l.followers
                    .get(r)
                    .is_some_and(|f| now - f.caught_up_ms > lag)
            })
            .collect();
        if !out.is_empty() {
            let to: Vec<i32> = l.isr.iter().copied().filter(|r| !out.contains(r)).collect();
            changes.push((key.clone(), l.isr.clone(), to, out));
        }
    }
    drop(partitions);
    for (key, from, to, out) in changes {
        tracing::warn!(
            topic = %key.0, partition = key.1,
            "brokers {out:?} fell more than {lag} ms behind: shrinking the ISR to {to:?}"
        );
        shard.counters().isr_shrinks.incr();
        alter_isr(shard, &key, from, to);
    }
}

/// The most records, and the most bytes, any follower of this shard's leaderships lacks
/// (from its last fetch).
pub fn max_follower_lag(shard: &Shard) -> (u64, u64) {
    let leading = shard.leading.borrow();
    let partitions = shard.partitions.borrow();
    let (mut max, mut max_bytes) = (0, 0);
    for (key, l) in leading.iter() {
        let Some(log) = partitions.get(key) else {
            continue;
        };
        let end = log.published_end();
        for f in l.followers.values() {
            // A follower that has not fetched in this epoch counts from the log start.
            let from = if f.leo >= 0 {
                f.leo
            } else {
                log.log_start_offset()
            };
            max = max.max((end - from).max(0) as u64);
            max_bytes = max_bytes.max(log.bytes_from(from));
        }
    }
    (max, max_bytes)
}

/// Produce on the owner shard: the append, and for acks=all on a replicated partition the
/// wait until every in-sync replica has the records (Kafka's delayed produce).
pub async fn produce(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    records: bytes::BytesMut,
    acks: i16,
    timeout_ms: i32,
    txn: Option<(Arc<str>, i16)>,
) -> Result<AppendInfo, ProduceError> {
    let log = shard.log(key)?;
    if let Some(reason) = log.offline_reason() {
        return Err((
            code::KAFKA_STORAGE_ERROR,
            format!("{}-{} is offline: {reason}", key.0, key.1),
        )
            .into());
    }
    let all = acks == -1;
    // Checked here, on the owner shard, too: the connection's shard may have an older
    // snapshot.
    {
        let leading = shard.leading.borrow();
        match leading.get(key) {
            Some(l) if all && (l.isr.len() as i32) < l.min_isr => {
                return Err((
                    code::NOT_ENOUGH_REPLICAS,
                    format!(
                        "{}-{} has {} in-sync replicas, fewer than min.insync.replicas={}",
                        key.0,
                        key.1,
                        l.isr.len(),
                        l.min_isr
                    ),
                )
                    .into());
            }
            Some(_) => {}
            None => {
                return Err((
                    code::NOT_LEADER_OR_FOLLOWER,
                    format!(
                        "broker {} does not lead {}-{}",
                        shard.node_id(),
                        key.0,
                        key.1
                    ),
                )
                    .into())
            }
        }
    }
    let durable = all && shard.config().sync_on_acks_all;
    let pending = match first_transactional(&log, &records) {
        None => log.submit(records, durable, runnel_log::Origin::Client),
        Some(producer_id) => {
            // One check at a time per producer and partition, in arrival order (the
            // semaphore is FIFO), until the append is queued.
            let order_key = (key.clone(), producer_id);
            let gate = shard
                .txn_checks
                .borrow_mut()
                .entry(order_key.clone())
                .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
                .clone();
            let permit = gate.acquire_permit(1).await;
            let checked = verify_transaction(shard, key, &log, &records, txn).await;
            let pending = checked.map(|origin| log.submit(records, durable, origin));
            drop(permit);
            // (The map's and this one: nobody else waits.)
            if Rc::strong_count(&gate) == 2 {
                shard.txn_checks.borrow_mut().remove(&order_key);
            }
            pending?
        }
    };
    let info = pending
        .map_err(|e| produce_error(key, e))?
        .await
        .unwrap_or_else(|_| Err(runnel_log::LogError::Closed(log.dir().to_path_buf())))
        .map_err(|e| produce_error(key, e))?;
    update_high_watermark(shard, key, &log);
    if all {
        await_isr(shard, key, &log, info.last_offset, timeout_ms).await?;
        let leading = shard.leading.borrow();
        if let Some(l) = leading.get(key) {
            if (l.isr.len() as i32) < l.min_isr {
                return Err((
                    code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                    format!(
                        "{}-{} was written, but has {} in-sync replicas, fewer than \
                         min.insync.replicas={}",
                        key.0,
                        key.1,
                        l.isr.len(),
                        l.min_isr
                    ),
                )
                    .into());
            }
        }
    }
    Ok(info)
}

/// Waits until every in-sync replica of a partition this broker leads has `last_offset`
/// (the high watermark passes it): NOT_LEADER_OR_FOLLOWER if the leadership moves first,
/// REQUEST_TIMED_OUT after `timeout_ms`. At once for a partition with one replica.
pub async fn await_isr(
    shard: &Shard,
    key: &PartitionKey,
    log: &Log,
    last_offset: i64,
    timeout_ms: i32,
) -> Result<(), PartitionError> {
    if log.high_watermark() > last_offset {
        return Ok(());
    }
    let Some(lost) = shard.leading.borrow().get(key).map(|l| l.lost.clone()) else {
        return Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!("{}-{}: this broker no longer leads it", key.0, key.1),
        ));
    };
    let wait = async {
        log.wait_for_data(last_offset).await;
        true
    };
    let gone = async {
        lost.wait().await;
        false
    };
    let timeout = async {
        glommio::timer::sleep(Duration::from_millis(timeout_ms.max(0) as u64)).await;
        false
    };
    futures_lite::future::or(wait, futures_lite::future::or(gone, timeout)).await;
    if log.high_watermark() > last_offset {
        Ok(())
    } else if let Some(reason) = log.offline_reason() {
        Err((
            code::KAFKA_STORAGE_ERROR,
            format!("{}-{} went offline: {reason}", key.0, key.1),
        ))
    } else if lost.is_set() {
        Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!(
                "{}-{}: leadership moved before the ISR had the records",
                key.0, key.1
            ),
        ))
    } else {
        Err((
            code::REQUEST_TIMED_OUT,
            format!(
                "{}-{}: the in-sync replicas did not have the records within {timeout_ms} ms",
                key.0, key.1
            ),
        ))
    }
}
