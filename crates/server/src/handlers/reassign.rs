//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): an operator moves
//! a partition's replicas to other brokers (kafka-reassign-partitions.sh). The reassignment
//! is a metadata command per partition; the replicas it adds catch up by fetching as any
//! follower does, the leader adds them to the ISR, and the quorum then drops the replicas
//! it removes (runnel_metadata::cluster's `reassign`).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::*;
use runnel_metadata::cluster::Command;
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::shard::Shard;

macro_rules! decode {
    ($req:expr) => {
        match $req.decode_body() {
            Ok(b) => b,
            Err(e) => return Outcome::Close(e),
        }
    };
}

type Answer = Result<(), (i16, String)>;

pub async fn alter(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: AlterPartitionReassignmentsRequest = decode!(req);
    let snapshot = shard.snapshot();
    // Per partition asked for: its answer, or the command that will give it.
    let mut asked: Vec<(String, i32, Option<Answer>)> = Vec::new();
    let mut commands = Vec::new();
    for t in &body.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let current = snapshot
                .topic(&name)
                .and_then(|m| m.partition(p.partition_index));
            let early = match (&target, current) {
                // (A name no topic can have has no place in a log command either.)
                (_, None) => Some(Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{name}-{} does not exist", p.partition_index),
                ))),
                (Some(r), _) if r.is_empty() => Some(Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    "a partition needs at least one replica".to_string(),
                ))),
                (Some(r), Some(pm))
                    if req.version >= 1
                        && !body.allow_replication_factor_change
                        && r.len() != pm.original().len() =>
                {
                    Some(Err((
                        code::INVALID_REPLICATION_FACTOR,
                        format!(
                            "{name}-{}: {} replicas asked for, it has {}, and the request \
                             does not allow a replication factor change",
                            p.partition_index,
                            r.len(),
                            pm.original().len()
                        ),
                    )))
                }
                _ => None,
            };
            if early.is_none() {
                commands.push(Command::Reassign {
                    topic: name.clone(),
                    partition: p.partition_index,
                    target,
                });
            }
            asked.push((name.clone(), p.partition_index, early));
        }
    }
    let mut results: Vec<Answer> = Vec::new();
    let mut top = code::NONE;
    let mut top_message = None;
    if !commands.is_empty() {
        let timeout = std::time::Duration::from_millis(body.timeout_ms.clamp(1000, 60_000) as u64);
        let n = commands.len();
        match shard.shared.controller.propose(commands, timeout).await {
            Ok(Ok(rs)) => results = rs.into_iter().map(|r| r.map(|_| ())).collect(),
            Ok(Err((c, msg))) => results = vec![Err((c, msg)); n],
            Err(_) => {
                top = code::REQUEST_TIMED_OUT;
                top_message = Some("the broker is stopping".to_string());
            }
        }
    }
    let mut results = results.into_iter();
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for (name, partition, early) in asked {
        let answer = match early {
            Some(a) => a,
            None => results
                .next()
                .unwrap_or_else(|| Err((code::REQUEST_TIMED_OUT, "no answer".into()))),
        };
        // (kafka-protocol's default message is "", Kafka's is null when there is no error.)
        let mut out = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_message(None);
        match answer {
            Ok(()) => tracing::info!(topic = %name, partition, "reassignment accepted"),
            Err((c, msg)) => {
                tracing::info!(topic = %name, partition, "reassignment refused: {msg}");
                out = out.with_error_code(c).with_error_message(Some(sb(&msg)));
            }
        }
        by_topic.entry(name).or_default().push(out);
    }
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(body.allow_replication_factor_change)
        .with_error_code(top)
        .with_error_message(top_message.map(|m| sb(&m)))
        .with_responses(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopicResponse::default()
                        .with_name(topic_name(&t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    encode_or_close(req.correlation_id, req.version, &resp)
}

pub async fn list(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ListPartitionReassignmentsRequest = decode!(req);
    let snapshot = shard.snapshot();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match &body.topics {
        None => snapshot
            .topics
            .keys()
            .map(|t| (t.to_string(), None))
            .collect(),
        Some(ts) => ts
            .iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes.clone())))
            .collect(),
    };
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for (name, only) in wanted {
        let Some(t) = snapshot.topic(&name) else {
            continue;
        };
        let partitions: Vec<OngoingPartitionReassignment> = t
            .assignment
            .iter()
            .enumerate()
            .filter(|(p, pm)| {
                pm.reassigning() && only.as_ref().is_none_or(|o| o.contains(&(*p as i32)))
            })
            .map(|(p, pm)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(p as i32)
                    .with_replicas(ids(&pm.replicas))
                    .with_adding_replicas(ids(&pm.adding))
                    .with_removing_replicas(ids(&pm.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&name))
                    .with_partitions(partitions),
            );
        }
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &ListPartitionReassignmentsResponse::default()
            .with_error_message(None)
            .with_topics(topics),
    )
}
