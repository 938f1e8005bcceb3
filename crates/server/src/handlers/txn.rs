//! The transaction APIs (KIP-98, KIP-447, KIP-664): decode, send to the transactional id's
//! coordinator shard ([`runnel_group::txn`], driven by [`crate::txns`]), encode for the
//! version. Also WriteTxnMarkers (the coordinator's markers, from another broker's
//! coordinator or this one's) and TxnOffsetCommit (to the group coordinator).

use crate::shard::{Shard, ShardMsg, TxnOp};
use futures_channel::oneshot;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_group::txn::{TxnPartition, TxnReply, TxnState};
use runnel_group::GroupOp;
use runnel_protocol::{code, encode_or_close, sb, topic_name, Outcome, Request};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

macro_rules! decode {
    ($req:expr) => {
        match $req.decode_body() {
            Ok(b) => b,
            Err(e) => return Outcome::Close(e),
        }
    };
}

/// Kafka's OPERATION_NOT_ATTEMPTED: the other partitions of a request one of whose
/// partitions was refused.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// PRODUCER_FENCED is newer than some clients: below `since` they get
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
fn fenced_for(c: i16, version: i16, since: i16) -> i16 {
    if c == code::PRODUCER_FENCED && version < since {
        code::INVALID_PRODUCER_EPOCH
    } else {
        c
    }
}

/// Sends a transaction operation (built around its reply channel) to the id's coordinator
/// and waits for the answer.
async fn ask(
    shard: &Rc<Shard>,
    id: &str,
    make: impl FnOnce(oneshot::Sender<TxnReply>) -> TxnOp,
) -> TxnReply {
    let (tx, rx) = oneshot::channel();
    let failed = |error| TxnReply {
        error,
        producer_id: -1,
        producer_epoch: -1,
    };
    if id.is_empty() {
        return failed(code::INVALID_REQUEST);
    }
    if let Err(c) = crate::txns::ask(shard, id, make(tx)).await {
        return failed(c);
    }
    rx.await
        .unwrap_or_else(|_| failed(code::COORDINATOR_NOT_AVAILABLE))
}

/// InitProducerId with a transactional id (the admin handler passes those here).
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    req: &Request,
    body: &InitProducerIdRequest,
) -> Outcome {
    let id = body
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let expected = (body.producer_id.0, body.producer_epoch);
    let mut resp = InitProducerIdResponse::default();
    if (expected.0 < 0) != (expected.1 < 0) {
        resp = resp
            .with_error_code(code::INVALID_REQUEST)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        return encode_or_close(req.correlation_id, req.version, &resp);
    }
    let timeout_ms = body.transaction_timeout_ms;
    let r = ask(shard, &id, |reply| TxnOp::InitProducerId {
        id: id.clone(),
        timeout_ms,
        expected,
        reply,
    })
    .await;
    resp = resp
        .with_error_code(fenced_for(r.error, req.version, 4))
        .with_producer_id(ProducerId(r.producer_id))
        .with_producer_epoch(r.producer_epoch);
    encode_or_close(req.correlation_id, req.version, &resp)
}

/// A code per partition, by topic.
type Codes = Vec<(String, Vec<(i32, i16)>)>;

/// The partitions of a request that exist; Err (with each one's code) if any does not.
fn check_partitions(
    shard: &Shard,
    topics: &[(String, Vec<i32>)],
) -> Result<Vec<TxnPartition>, Codes> {
    let snapshot = shard.snapshot();
    let mut ok = Vec::new();
    let mut bad = false;
    let mut codes = Vec::new();
    for (t, ps) in topics {
        let meta = snapshot.topic(t);
        let mut rows = Vec::new();
        for &p in ps {
            match meta {
                Some(m) if (0..m.partitions).contains(&p) && !internal_unwritable(t) => {
                    ok.push((m.name.clone(), p));
                    rows.push((p, OPERATION_NOT_ATTEMPTED));
                }
                _ => {
                    bad = true;
                    rows.push((p, code::UNKNOWN_TOPIC_OR_PARTITION));
                }
            }
        }
        codes.push((t.clone(), rows));
    }
    if bad {
        Err(codes)
    } else {
        Ok(ok)
    }
}

/// `__transaction_state` is never part of a transaction.
fn internal_unwritable(topic: &str) -> bool {
    topic == runnel_group::txn::TOPIC
}

fn topic_results(rows: Vec<(String, Vec<(i32, i16)>)>) -> Vec<AddPartitionsToTxnTopicResult> {
    rows.into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(&t))
                .with_results_by_partition(
                    ps.into_iter()
                        .map(|(p, c)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect()
}

fn same_code(topics: &[(String, Vec<i32>)], c: i16) -> Vec<(String, Vec<(i32, i16)>)> {
    topics
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|&p| (p, c)).collect()))
        .collect()
}

/// One transaction's AddPartitionsToTxn (or its verification): a code per partition.
async fn add_one(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[(String, Vec<i32>)],
    verify_only: bool,
    version: i16,
) -> Vec<(String, Vec<(i32, i16)>)> {
    let partitions = match check_partitions(shard, topics) {
        Ok(p) => p,
        Err(codes) => return codes,
    };
    if verify_only {
        let (tx, rx) = oneshot::channel();
        let op = TxnOp::Verify {
            id: id.to_string(),
            producer_id,
            epoch,
            partitions: partitions.clone(),
            reply: tx,
        };
        if let Err(c) = crate::txns::ask(shard, id, op).await {
            return same_code(topics, c);
        }
        let codes = rx.await.unwrap_or_default();
        let mut by: BTreeMap<(Arc<str>, i32), i16> = BTreeMap::new();
        for (p, c) in partitions.into_iter().zip(codes) {
            // Kafka's verification answers a partition outside the transaction with
            // TRANSACTION_ABORTABLE, and a stale epoch with PRODUCER_FENCED.
            let c = match c {
                code::INVALID_TXN_STATE => code::TRANSACTION_ABORTABLE,
                code::INVALID_PRODUCER_EPOCH => code::PRODUCER_FENCED,
                c => c,
            };
            by.insert(p, c);
        }
        return topics
            .iter()
            .map(|(t, ps)| {
                let name: Arc<str> = t.as_str().into();
                let rows = ps
                    .iter()
                    .map(|&p| {
                        let c = by.get(&(name.clone(), p)).copied();
                        (p, c.unwrap_or(code::UNKNOWN_SERVER_ERROR))
                    })
                    .collect();
                (t.clone(), rows)
            })
            .collect();
    }
    let r = ask(shard, id, |reply| TxnOp::AddPartitions {
        id: id.to_string(),
        producer_id,
        epoch,
        partitions,
        reply,
    })
    .await;
    same_code(topics, fenced_for(r.error, version, 2))
}

pub async fn add_partitions_to_txn(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: AddPartitionsToTxnRequest = decode!(req);
    let v = req.version;
    let topics_of = |ts: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partitions.clone()))
            .collect::<Vec<_>>()
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    if v <= 3 {
        let topics = topics_of(&body.v3_and_below_topics);
        let rows = add_one(
            shard,
            &body.v3_and_below_transactional_id.0,
            body.v3_and_below_producer_id.0,
            body.v3_and_below_producer_epoch,
            &topics,
            false,
            v,
        )
        .await;
        resp.results_by_topic_v3_and_below = topic_results(rows);
    } else {
        // v4+: brokers, batched (KIP-890): the partition leaders' verification.
        for t in &body.transactions {
            let topics = topics_of(&t.topics);
            let rows = add_one(
                shard,
                &t.transactional_id.0,
                t.producer_id.0,
                t.producer_epoch,
                &topics,
                t.verify_only,
                v,
            )
            .await;
            resp.results_by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results(rows)),
            );
        }
    }
    encode_or_close(req.correlation_id, v, &resp)
}

pub async fn add_offsets_to_txn(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: AddOffsetsToTxnRequest = decode!(req);
    let group = body.group_id.0.to_string();
    let (_, p) = crate::groups::coordinator_of(shard, &group);
    let partitions = vec![(Arc::from(runnel_group::offsets::TOPIC), p)];
    let id = body.transactional_id.0.to_string();
    let r = ask(shard, &id, |reply| TxnOp::AddPartitions {
        id: id.clone(),
        producer_id: body.producer_id.0,
        epoch: body.producer_epoch,
        partitions,
        reply,
    })
    .await;
    let resp =
        AddOffsetsToTxnResponse::default().with_error_code(fenced_for(r.error, req.version, 2));
    encode_or_close(req.correlation_id, req.version, &resp)
}

pub async fn end_txn(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: EndTxnRequest = decode!(req);
    let id = body.transactional_id.0.to_string();
    let r = ask(shard, &id, |reply| TxnOp::EndTxn {
        id: id.clone(),
        producer_id: body.producer_id.0,
        epoch: body.producer_epoch,
        commit: body.committed,
        reply,
    })
    .await;
    let mut resp = EndTxnResponse::default().with_error_code(fenced_for(r.error, req.version, 2));
    if req.version >= 5 {
        resp = resp
            .with_producer_id(ProducerId(r.producer_id))
            .with_producer_epoch(r.producer_epoch);
    }
    encode_or_close(req.correlation_id, req.version, &resp)
}

/// WriteTxnMarkers: a transaction coordinator (another broker's, or this one's through
/// [`crate::txns`]) has a transaction's markers written to the partitions led here.
pub async fn write_txn_markers(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: WriteTxnMarkersRequest = decode!(req);
    let mut markers = Vec::with_capacity(body.markers.len());
    for m in &body.markers {
        let mut pending = Vec::new();
        for t in &m.topics {
            let name: Arc<str> = t.name.0.as_str().into();
            for &p in &t.partition_indexes {
                let known = shard
                    .snapshot()
                    .partition(&name, p)
                    .is_some_and(|_| shard.check_leader(&name, p, -1).is_ok());
                if !known {
                    let c = match shard.snapshot().partition(&name, p) {
                        None => code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some(_) => code::NOT_LEADER_OR_FOLLOWER,
                    };
                    pending.push((name.clone(), p, Err(c)));
                    continue;
                }
                let owner = shard.owner(&name, p);
                let rx = shard
                    .send(owner, |reply| ShardMsg::WriteMarker {
                        key: (name.clone(), p),
                        producer_id: m.producer_id.0,
                        producer_epoch: m.producer_epoch,
                        commit: m.transaction_result,
                        coordinator_epoch: m.coordinator_epoch,
                        reply,
                    })
                    .await;
                pending.push((name.clone(), p, Ok(rx)));
            }
        }
        let mut by_topic: BTreeMap<Arc<str>, Vec<WritableTxnMarkerPartitionResult>> =
            BTreeMap::new();
        for (t, p, r) in pending {
            let c = match r {
                Err(c) => c,
                Ok(rx) => match rx.await {
                    Ok(Ok(())) => code::NONE,
                    Ok(Err((c, _))) => c,
                    Err(_) => code::NOT_LEADER_OR_FOLLOWER,
                },
            };
            by_topic.entry(t).or_default().push(
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(p)
                    .with_error_code(c),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            WritableTxnMarkerTopicResult::default()
                                .with_name(topic_name(&t))
                                .with_partitions(ps)
                        })
                        .collect(),
                ),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &WriteTxnMarkersResponse::default().with_markers(markers),
    )
}

/// TxnOffsetCommit: offsets held by the group coordinator until the transaction ends. The
/// group's offsets partition must be in the transaction (AddOffsetsToTxn), checked with
/// the transaction coordinator as a produce is.
pub async fn txn_offset_commit(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: TxnOffsetCommitRequest = decode!(req);
    let v = req.version;
    let group = body.group_id.0.to_string();
    let snapshot = shard.snapshot();
    let mut entries = Vec::new();
    // Per topic: each partition, with its code if refused before the coordinator is asked.
    type Layout = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;
    let mut layout: Layout = Vec::new();
    for t in &body.topics {
        let meta = snapshot.topic(&t.name.0);
        let mut rows = Vec::new();
        for p in &t.partitions {
            match meta {
                Some(m) if (0..m.partitions).contains(&p.partition_index) => {
                    entries.push((
                        m.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        if v >= 2 { p.committed_leader_epoch } else { -1 },
                        p.committed_metadata.as_ref().map(|s| s.to_string()),
                    ));
                    rows.push((p.partition_index, None));
                }
                _ => rows.push((p.partition_index, Some(code::UNKNOWN_TOPIC_OR_PARTITION))),
            }
        }
        layout.push((t.name.clone(), rows));
    }
    let (_, offsets_p) = crate::groups::coordinator_of(shard, &group);
    let key = (Arc::from(runnel_group::offsets::TOPIC), offsets_p);
    let checked = crate::txns::verify(
        shard,
        &body.transactional_id.0,
        body.producer_id.0,
        body.producer_epoch,
        &key,
        // TxnOffsetCommit v4 knows TRANSACTION_ABORTABLE as Produce v11 does.
        if v >= 4 { 11 } else { 10 },
    )
    .await
    .map_err(|c| match c {
        // The coordinator is busy: the client retries this.
        code::NOT_ENOUGH_REPLICAS => code::CONCURRENT_TRANSACTIONS,
        c => c,
    });
    let result = match checked {
        Err(c) => Err(c),
        Ok(()) if entries.is_empty() => Ok(Vec::new()),
        Ok(()) => crate::handlers::groups::ask(shard, &group, |reply| GroupOp::TxnCommit {
            group: group.clone(),
            producer_id: body.producer_id.0,
            producer_epoch: body.producer_epoch,
            generation: if v >= 3 { body.generation_id } else { -1 },
            member_id: if v >= 3 {
                body.member_id.to_string()
            } else {
                String::new()
            },
            instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
            offsets: entries,
            reply,
        })
        .await
        .unwrap_or_else(Err),
    };
    let result = result.map_err(|c| {
        if c == code::COORDINATOR_LOAD_IN_PROGRESS && v < 2 {
            code::COORDINATOR_NOT_AVAILABLE
        } else {
            c
        }
    });
    let mut codes = match &result {
        Ok(c) => c.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let topics = layout
        .into_iter()
        .map(|(name, rows)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, pre)| {
                            let c = match (pre, &result) {
                                (Some(c), _) => c,
                                (None, Err(e)) => *e,
                                (None, Ok(_)) => codes.next().unwrap_or(code::NONE),
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        v,
        &TxnOffsetCommitResponse::default().with_topics(topics),
    )
}

pub async fn describe_transactions(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DescribeTransactionsRequest = decode!(req);
    let mut states = Vec::with_capacity(body.transactional_ids.len());
    for id in &body.transactional_ids {
        let id = id.0.to_string();
        let out = TransactionState::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
            .with_transaction_state(sb(""))
            .with_transaction_start_time_ms(-1)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let answer = if id.is_empty() {
            Err(code::INVALID_REQUEST)
        } else {
            let (tx, rx) = oneshot::channel();
            let op = TxnOp::Describe {
                ids: vec![id.clone()],
                reply: tx,
            };
            match crate::txns::ask(shard, &id, op).await {
                Err(c) => Err(c),
                Ok(()) => rx
                    .await
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map_or(Err(code::COORDINATOR_NOT_AVAILABLE), |(_, r)| r),
            }
        };
        states.push(match answer {
            Err(c) => out.with_error_code(c),
            Ok(m) => {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    by_topic.entry(t).or_default().push(*p);
                }
                out.with_transaction_state(sb(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(topic_name(t))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            }
        });
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

/// ListTransactions: every shard's coordinator is asked (each serves the ids of the
/// `__transaction_state` partitions it owns and this broker leads).
pub async fn list_transactions(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ListTransactionsRequest = decode!(req);
    const NAMES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let states: Vec<String> = body.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<StrBytes> = states
        .iter()
        .filter(|s| !NAMES.contains(&s.as_str()))
        .map(|s| sb(s))
        .collect();
    let pids: Vec<i64> = body.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration = if req.version >= 1 {
        body.duration_filter
    } else {
        -1
    };
    let pattern = match body
        .transactional_id_pattern
        .as_ref()
        .filter(|_| req.version >= 2)
        .filter(|p| !p.is_empty())
        .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
    {
        Some(Err(_)) => {
            let resp = ListTransactionsResponse::default()
                .with_error_code(code::INVALID_REGULAR_EXPRESSION);
            return encode_or_close(req.correlation_id, req.version, &resp);
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let mut listed: Vec<(String, i64, TxnState)> = Vec::new();
    for to in 0..shard.shared.nr_shards {
        let (tx, rx) = oneshot::channel();
        let op = TxnOp::List {
            states: states.clone(),
            producer_ids: pids.clone(),
            min_duration_ms: min_duration,
            reply: tx,
        };
        // The op carries its own reply channel.
        drop(shard.send::<()>(to, |_| ShardMsg::Txn(op)).await);
        if let Ok(mut l) = rx.await {
            listed.append(&mut l);
        }
    }
    let resp = ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(
            listed
                .into_iter()
                .filter(|(id, _, s)| {
                    *s != TxnState::Dead && pattern.as_ref().is_none_or(|r| r.is_match(id))
                })
                .map(|(id, pid, s)| {
                    ListedTxn::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                        .with_producer_id(ProducerId(pid))
                        .with_transaction_state(sb(s.name()))
                })
                .collect(),
        );
    encode_or_close(req.correlation_id, req.version, &resp)
}
