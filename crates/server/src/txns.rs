//! The shard's side of transactions: it drives its [`TxnCoordinator`] (the transactional
//! ids placed on this shard), appends its records to `__transaction_state`, writes the
//! transaction markers (to this broker's partitions through their owner shards, to other
//! brokers' with WriteTxnMarkers), replays a partition when this broker starts to lead it,
//! and aborts transactions open past their timeout. Also the partition side's check of a
//! transactional produce with the coordinator (KIP-890's verification).

use crate::peer::Peer;
use crate::shard::{log_error, PartitionError, PartitionKey, Shard, ShardMsg, TxnOp};
use bytes::BytesMut;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_group::txn::{self, MarkerJob, Step, TxnPartition, TxnWrite, TOPIC};
use runnel_log::Log;
use runnel_protocol::code;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a write to `__transaction_state` or a marker waits for the in-sync replicas.
const WRITE_TIMEOUT_MS: i32 = 10_000;
/// Pause between rounds of markers that could not all be written (a leader moving, a
/// broker down): Kafka's coordinator retries them until they are written.
const MARKER_BACKOFF: Duration = Duration::from_millis(100);
/// An inter-broker request's deadline.
/// (Longer than a marker's wait for the other broker's in-sync replicas.)
const PEER_DEADLINE: Duration = Duration::from_secs(15);

/// Idle connections kept per other broker and shard.
const MAX_IDLE_PEERS: usize = 4;

thread_local! {
    /// When this shard last asked for `__transaction_state` to be created.
    static ASKED_TOPIC: Cell<Option<Instant>> = const { Cell::new(None) };
    /// This shard's idle connections to other brokers, for markers and transaction checks.
    static PEERS: std::cell::RefCell<HashMap<String, Vec<Peer>>> = std::cell::RefCell::new(HashMap::new());
}

/// The shard coordinating `id` and its `__transaction_state` partition, once the topic
/// exists.
pub fn coordinator_of(shard: &Shard, id: &str) -> Option<(usize, i32)> {
    let t = shard.snapshot().topic(TOPIC)?.clone();
    let p = txn::partition_for(id, t.partitions);
    Some((shard.owner(TOPIC, p), p))
}

/// Creates `__transaction_state` (at the first transactional request, as Kafka does), so
/// brokers that never see a transaction carry no partitions for it. Answers at once; the
/// client asks again (COORDINATOR_NOT_AVAILABLE) until the topic is there.
pub fn ensure_topic(shard: &Rc<Shard>) {
    if shard.snapshot().topic(TOPIC).is_some() {
        return;
    }
    let due = ASKED_TOPIC.with(|a| {
        let due = a.get().is_none_or(|t| t.elapsed() > Duration::from_secs(5));
        if due {
            a.set(Some(Instant::now()));
        }
        due
    });
    if !due {
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let cfg = shard.config();
        let live = shard.snapshot().live_brokers().count().max(1) as i16;
        let rf = cfg.transaction_state_log_replication_factor.min(live);
        let mut configs = BTreeMap::new();
        // Compacted, as Kafka's: each transactional id's latest state stays.
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("retention.ms".to_string(), "-1".to_string());
        configs.insert("segment.bytes".to_string(), (100u64 << 20).to_string());
        configs.insert("min.insync.replicas".to_string(), rf.min(2).to_string());
        let op = crate::admin::AdminOp::CreateTopics {
            topics: vec![crate::admin::NewTopic {
                name: TOPIC.to_string(),
                partitions: cfg.transaction_state_log_num_partitions,
                replication_factor: Some(rf),
                assignment: None,
                configs,
            }],
            validate_only: false,
        };
        match crate::admin::submit(&shard, op).await.pop() {
            Some(Ok(_)) => tracing::info!("created {TOPIC}"),
            Some(Err((c, _))) if c == code::TOPIC_ALREADY_EXISTS => {}
            Some(Err((c, msg))) => tracing::warn!(code = c, "cannot create {TOPIC}: {msg}"),
            None => {}
        }
    })
    .detach();
}

/// Sends `op` to the coordinator shard of its transactional id. Err: the code to answer
/// (the topic is being created, or another broker coordinates the id).
pub async fn ask(shard: &Rc<Shard>, id: &str, op: TxnOp) -> Result<(), i16> {
    let Some((to, p)) = coordinator_of(shard, id) else {
        ensure_topic(shard);
        return Err(code::COORDINATOR_NOT_AVAILABLE);
    };
    match shard.check_leader(TOPIC, p, -1) {
        Ok(()) => {}
        Err(code::UNKNOWN_TOPIC_OR_PARTITION) => return Err(code::COORDINATOR_NOT_AVAILABLE),
        Err(_) => return Err(code::NOT_COORDINATOR),
    }
    // The op carries its own reply channel.
    drop(shard.send::<()>(to, |_| ShardMsg::Txn(op)).await);
    Ok(())
}

/// Runs a transaction operation on this (its coordinator's) shard.
pub async fn run(shard: &Rc<Shard>, op: TxnOp) {
    let c = &shard.txn;
    match op {
        TxnOp::InitProducerId {
            id,
            timeout_ms,
            expected,
            reply,
        } => {
            // A fresh id only when the coordinator needs one (a new transactional id, or
            // an exhausted epoch): asking shard 0 costs a message; ids are plentiful.
            let fresh = match shard
                .call(0, |reply| ShardMsg::InitProducerId {
                    producer_id: -1,
                    epoch: -1,
                    reply,
                })
                .await
            {
                Some(Ok((pid, _))) => pid,
                _ => {
                    let _ = reply.send(error_reply(code::COORDINATOR_NOT_AVAILABLE));
                    return;
                }
            };
            let step = c.init_producer_id(&id, timeout_ms, expected, fresh);
            let _ = reply.send(drive(shard, step).await);
        }
        TxnOp::AddPartitions {
            id,
            producer_id,
            epoch,
            partitions,
            reply,
        } => {
            let step = c.add_partitions(&id, producer_id, epoch, &partitions);
            let _ = reply.send(drive(shard, step).await);
        }
        TxnOp::EndTxn {
            id,
            producer_id,
            epoch,
            commit,
            reply,
        } => {
            let step = c.end_txn(&id, producer_id, epoch, commit);
            let _ = reply.send(drive(shard, step).await);
        }
        TxnOp::Verify {
            id,
            producer_id,
            epoch,
            partitions,
            reply,
        } => {
            let codes = partitions
                .iter()
                .map(|p| c.verify(&id, producer_id, epoch, p))
                .collect();
            let _ = reply.send(codes);
        }
        TxnOp::Describe { ids, reply } => {
            let out = ids
                .into_iter()
                .map(|id| {
                    let r = c.describe(&id);
                    (id, r)
                })
                .collect();
            let _ = reply.send(out);
        }
        TxnOp::List {
            states,
            producer_ids,
            min_duration_ms,
            reply,
        } => {
            let _ = reply.send(c.list(&states, &producer_ids, min_duration_ms));
        }
    }
}

fn error_reply(error: i16) -> txn::TxnReply {
    txn::TxnReply {
        error,
        producer_id: -1,
        producer_epoch: -1,
    }
}

/// Does what a step asks (a write, then markers) and gives the client's answer.
async fn drive(shard: &Rc<Shard>, step: Step) -> txn::TxnReply {
    match step {
        Step::Reply(r) => r,
        Step::Write(w) => {
            let result = write(shard, &w).await;
            let done = shard.txn.written(w, result);
            if let Some(job) = done.markers {
                glommio::spawn_local(send_markers(shard.clone(), job)).detach();
            }
            done.reply
                .unwrap_or_else(|| error_reply(code::UNKNOWN_SERVER_ERROR))
        }
    }
}

/// This shard's log of `__transaction_state` partition `p`.
fn state_log(shard: &Shard, p: i32) -> Option<Log> {
    shard
        .partitions
        .borrow()
        .get(&(Arc::from(TOPIC), p))
        .cloned()
}

/// Appends a coordinator record and waits for the in-sync replicas, as Kafka's coordinator
/// appends with acks=all; errors mapped as Kafka's TransactionStateManager maps them.
async fn write(shard: &Rc<Shard>, w: &TxnWrite) -> Result<(), i16> {
    let Some(log) = state_log(shard, w.partition) else {
        return Err(code::NOT_COORDINATOR);
    };
    if shard.check_leader(TOPIC, w.partition, -1).is_err() {
        return Err(code::NOT_COORDINATOR);
    }
    let now = shard.txn.now_ms();
    let mut b = runnel_record::builder::BatchBuilder::new(now);
    b.append(now, Some(&w.key), Some(&w.value), &[]);
    let buf = BytesMut::from(&b.build()[..]);
    let info = match log.append(buf, shard.config().sync_on_acks_all).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(transactional_id = %w.transactional_id, "{TOPIC} write failed: {e}");
            return Err(code::NOT_COORDINATOR);
        }
    };
    let key = (Arc::from(TOPIC), w.partition);
    crate::replication::update_high_watermark(shard, &key, &log);
    crate::replication::await_isr(shard, &key, &log, info.last_offset, WRITE_TIMEOUT_MS)
        .await
        .map_err(|(c, msg)| {
            tracing::warn!(transactional_id = %w.transactional_id, "{TOPIC} write not replicated: {msg}");
            match c {
                code::NOT_LEADER_OR_FOLLOWER | code::KAFKA_STORAGE_ERROR => code::NOT_COORDINATOR,
                _ => code::COORDINATOR_NOT_AVAILABLE,
            }
        })
}

/// Writes the markers of a transaction to every one of its partitions, retrying those
/// that fail (a leader moving, a broker down) until all are written, then the Complete
/// record. Gives up if this shard stops coordinating the transaction.
pub async fn send_markers(shard: Rc<Shard>, job: MarkerJob) {
    let mut left: Vec<TxnPartition> = job.partitions.clone();
    let mut warned = Instant::now();
    // This job belongs to the coordinator epoch it was made in: after a reload (a new
    // leader epoch of the transaction log's partition) the new load's job takes over.
    let ours = |shard: &Shard| shard.txn.serves(&job.transactional_id) == Ok(job.coordinator_epoch);
    while !left.is_empty() {
        if !ours(&shard) {
            return;
        }
        let snapshot = shard.snapshot();
        let mut by_leader: BTreeMap<i32, Vec<TxnPartition>> = BTreeMap::new();
        for p in left.drain(..) {
            match snapshot.partition(&p.0, p.1) {
                // The topic was deleted: nothing to mark.
                None => {}
                Some(pm) => by_leader.entry(pm.leader).or_default().push(p),
            }
        }
        let mut fenced = false;
        for (leader, parts) in by_leader {
            let results = if leader == shard.node_id() {
                write_local(&shard, &job, &parts).await
            } else if leader < 0 {
                parts
                    .iter()
                    .map(|p| (p.clone(), code::LEADER_NOT_AVAILABLE))
                    .collect()
            } else {
                write_remote(&shard, leader, &job, &parts).await
            };
            for (p, c) in results {
                match c {
                    code::NONE => {}
                    code::UNKNOWN_TOPIC_OR_PARTITION if snapshot.partition(&p.0, p.1).is_none() => {
                    }
                    // A newer epoch of the producer wrote there already (its own abort or
                    // a later transaction): nothing of this one is left open there.
                    code::INVALID_PRODUCER_EPOCH | code::TRANSACTION_COORDINATOR_FENCED => {
                        fenced = true;
                    }
                    _ => left.push(p),
                }
            }
        }
        if fenced {
            tracing::warn!(transactional_id = %job.transactional_id, "markers refused: a newer producer epoch or coordinator");
        }
        if !left.is_empty() {
            if warned.elapsed() > Duration::from_secs(10) {
                warned = Instant::now();
                tracing::warn!(transactional_id = %job.transactional_id, partitions = left.len(), "transaction markers not written yet; retrying");
            }
            glommio::timer::sleep(MARKER_BACKOFF).await;
        }
    }
    if !ours(&shard) {
        return;
    }
    if let Some(w) = shard.txn.markers_done(&job) {
        let result = write(&shard, &w).await;
        shard.txn.written(w, result);
    }
}

/// Markers to this broker's partitions, through their owner shards, concurrently.
async fn write_local(
    shard: &Rc<Shard>,
    job: &MarkerJob,
    parts: &[TxnPartition],
) -> Vec<(TxnPartition, i16)> {
    let mut pending = Vec::with_capacity(parts.len());
    for p in parts {
        let owner = shard.owner(&p.0, p.1);
        let rx = shard
            .send(owner, |reply| ShardMsg::WriteMarker {
                key: p.clone(),
                producer_id: job.producer_id,
                producer_epoch: job.producer_epoch,
                commit: job.commit,
                coordinator_epoch: job.coordinator_epoch,
                reply,
            })
            .await;
        pending.push((p.clone(), rx));
    }
    let mut out = Vec::with_capacity(pending.len());
    for (p, rx) in pending {
        let c = match rx.await {
            Ok(Ok(())) => code::NONE,
            Ok(Err((c, msg))) => {
                tracing::debug!(topic = %p.0, partition = p.1, "marker not written: {msg}");
                c
            }
            Err(_) => code::REQUEST_TIMED_OUT,
        };
        out.push((p, c));
    }
    out
}

/// Markers to another broker's partitions: Kafka's WriteTxnMarkers, as its coordinator
/// sends them.
async fn write_remote(
    shard: &Rc<Shard>,
    leader: i32,
    job: &MarkerJob,
    parts: &[TxnPartition],
) -> Vec<(TxnPartition, i16)> {
    let failed = |c: i16| parts.iter().map(|p| (p.clone(), c)).collect();
    let Some(addr) = broker_addr(shard, leader) else {
        return failed(code::LEADER_NOT_AVAILABLE);
    };
    let mut topics: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t.clone()).or_default().push(*p);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(job.producer_id))
        .with_producer_epoch(job.producer_epoch)
        .with_transaction_result(job.commit)
        .with_coordinator_epoch(job.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        )]);
    let resp: WriteTxnMarkersResponse =
        match call_peer(&addr, ApiKey::WriteTxnMarkers, 1, &req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, "WriteTxnMarkers failed: {e}");
                return failed(code::REQUEST_TIMED_OUT);
            }
        };
    let mut codes: HashMap<TxnPartition, i16> = HashMap::new();
    for m in resp.markers {
        for t in m.topics {
            let name: Arc<str> = t.name.0.as_str().into();
            for p in t.partitions {
                codes.insert((name.clone(), p.partition_index), p.error_code);
            }
        }
    }
    parts
        .iter()
        .map(|p| {
            (
                p.clone(),
                codes.get(p).copied().unwrap_or(code::UNKNOWN_SERVER_ERROR),
            )
        })
        .collect()
}

fn broker_addr(shard: &Shard, id: i32) -> Option<String> {
    let snapshot = shard.snapshot();
    let b = snapshot.brokers.get(&id)?;
    snapshot
        .is_live(id)
        .then(|| format!("{}:{}", b.host, b.port))
}

async fn call_peer<Req, Resp>(
    addr: &str,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String>
where
    Req: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
    Resp: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    // An idle connection to that broker if this shard has one (one request at a time on
    // each: concurrent calls open more), else a new one; kept for the next call unless the
    // call failed.
    let idle = PEERS.with(|p| p.borrow_mut().get_mut(addr).and_then(Vec::pop));
    let reused = idle.is_some();
    let fresh = || async {
        let mut p = Peer::connect(addr, 16 << 20, PEER_DEADLINE).await?;
        p.client_id = "runnel-transaction-coordinator";
        Ok::<Peer, String>(p)
    };
    let mut peer = match idle {
        Some(p) => p,
        None => fresh().await?,
    };
    let mut r = peer.call(key, version, req).await;
    if r.is_err() && reused {
        // The other broker may have closed an idle connection (or restarted): once more on
        // a new one.
        peer = fresh().await?;
        r = peer.call(key, version, req).await;
    }
    if r.is_ok() {
        PEERS.with(|p| {
            let mut p = p.borrow_mut();
            let idle = p.entry(addr.to_string()).or_default();
            if idle.len() < MAX_IDLE_PEERS {
                idle.push(peer);
            }
        });
    }
    r
}

/// WriteTxnMarkers on a partition's owner shard: the marker appended (and replicated, as
/// Kafka appends markers with acks=all); for `__consumer_offsets`, the group coordinator
/// applies or drops the producer's pending offsets.
pub async fn write_marker(
    shard: &Rc<Shard>,
    key: &PartitionKey,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), PartitionError> {
    if !shard.leading.borrow().contains_key(key) {
        return Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!(
                "broker {} does not lead {}-{}",
                shard.node_id(),
                key.0,
                key.1
            ),
        ));
    }
    let offsets = &*key.0 == runnel_group::offsets::TOPIC;
    if offsets && !shard.coordinator.has_loaded(key.1) {
        // Its groups' pending offsets are being replayed: the marker must come after, or
        // they would wait for it forever. The coordinator sends it again.
        return Err((
            code::COORDINATOR_LOAD_IN_PROGRESS,
            format!("{}-{} is loading", key.0, key.1),
        ));
    }
    let log = shard.log(key)?;
    let info = log
        .append_marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            shard.config().sync_on_acks_all,
        )
        .await
        .map_err(log_error)?;
    crate::replication::update_high_watermark(shard, key, &log);
    crate::replication::await_isr(shard, key, &log, info.last_offset, WRITE_TIMEOUT_MS).await?;
    if offsets {
        shard.coordinator.complete_txn(key.1, producer_id, commit);
    }
    Ok(())
}

/// Checks with the producer's transaction coordinator that `key` is in its open
/// transaction, before the first transactional batch of a transaction is written there
/// (KIP-890 part 1: no hanging transaction from a batch the coordinator never heard of).
/// Ok(()) or the code for the produce answer at `version`.
pub async fn verify(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    key: &PartitionKey,
    version: i16,
) -> Result<(), i16> {
    let c = ask_verify(shard, id, producer_id, epoch, key).await;
    Err(match c {
        code::NONE => return Ok(()),
        code::PRODUCER_FENCED | code::INVALID_PRODUCER_EPOCH => code::INVALID_PRODUCER_EPOCH,
        // Not in the transaction: the producer must abort (Kafka's 120 from Produce v11,
        // INVALID_TXN_STATE before).
        code::INVALID_TXN_STATE if version >= 11 => code::TRANSACTION_ABORTABLE,
        code::INVALID_TXN_STATE => code::INVALID_TXN_STATE,
        code::INVALID_PRODUCER_ID_MAPPING => code::INVALID_PRODUCER_ID_MAPPING,
        // The coordinator is busy or moving: retriable, without a metadata refresh.
        _ => code::NOT_ENOUGH_REPLICAS,
    })
}

async fn ask_verify(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    key: &PartitionKey,
) -> i16 {
    let Some((to, p)) = coordinator_of(shard, id) else {
        return code::COORDINATOR_NOT_AVAILABLE;
    };
    let snapshot = shard.snapshot();
    let Some(leader) = snapshot.partition(TOPIC, p).map(|pm| pm.leader) else {
        return code::COORDINATOR_NOT_AVAILABLE;
    };
    if leader == shard.node_id() {
        let (tx, rx) = futures_channel::oneshot::channel();
        let op = TxnOp::Verify {
            id: id.to_string(),
            producer_id,
            epoch,
            partitions: vec![key.clone()],
            reply: tx,
        };
        // The op carries its own reply channel.
        drop(shard.send::<()>(to, |_| ShardMsg::Txn(op)).await);
        return rx
            .await
            .ok()
            .and_then(|c| c.first().copied())
            .unwrap_or(code::COORDINATOR_NOT_AVAILABLE);
    }
    let Some(addr) = broker_addr(shard, leader) else {
        return code::COORDINATOR_NOT_AVAILABLE;
    };
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(key.0.to_string())))
                .with_partitions(vec![key.1])]),
    ]);
    match call_peer::<_, AddPartitionsToTxnResponse>(&addr, ApiKey::AddPartitionsToTxn, 4, &req)
        .await
    {
        Ok(r) if r.error_code != code::NONE => r.error_code,
        Ok(r) => r
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|c| *c != code::NONE)
            .map(|c| {
                if c == code::TRANSACTION_ABORTABLE {
                    code::INVALID_TXN_STATE
                } else {
                    c
                }
            })
            .unwrap_or(code::NONE),
        Err(e) => {
            tracing::debug!("transaction check with broker {leader} failed: {e}");
            code::COORDINATOR_NOT_AVAILABLE
        }
    }
}

/// Replays `__transaction_state` partition `p` (this broker now leads it, in
/// `leader_epoch`) into this shard's coordinator, then finishes the transactions it finds
/// prepared.
pub async fn load(
    shard: &Rc<Shard>,
    p: i32,
    partitions: i32,
    leader_epoch: i32,
) -> Result<(), String> {
    shard.txn.loading(p, partitions);
    let Some(log) = state_log(shard, p) else {
        shard.txn.load_partition(p, leader_epoch, HashMap::new());
        return Ok(());
    };
    let mut state: HashMap<String, txn::TxnMeta> = HashMap::new();
    crate::offsets_store::for_each_record(&log, |_, key, value| {
        let Some(id) = key.and_then(txn::decode_key) else {
            return;
        };
        match value.and_then(txn::decode_value) {
            Some(m) => {
                state.insert(id, m);
            }
            None => {
                state.remove(&id);
            }
        }
    })
    .await
    .map_err(|e| {
        shard.txn.unload(p);
        format!("cannot load {}: {e}", log.dir().display())
    })?;
    let n = state.len();
    let jobs = shard.txn.load_partition(p, leader_epoch, state);
    if n > 0 {
        tracing::info!(
            partition = p,
            transactional_ids = n,
            prepared = jobs.len(),
            "loaded transaction state"
        );
    }
    for job in jobs {
        glommio::spawn_local(send_markers(shard.clone(), job)).detach();
    }
    Ok(())
}

/// Transactions open past their timeout are aborted; Complete records that failed to
/// write are tried again.
pub async fn timers(shard: Rc<Shard>) {
    let every = Duration::from_millis(
        shard
            .config()
            .transaction_abort_timed_out_transaction_cleanup_interval_ms,
    );
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), shard.stopping.wait()).await;
        if shard.stopping.is_set() {
            return;
        }
        let (writes, jobs) = shard.txn.tick();
        for w in writes {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                drive(&shard, Step::Write(w)).await;
            })
            .detach();
        }
        for job in jobs {
            glommio::spawn_local(send_markers(shard.clone(), job)).detach();
        }
    }
}
