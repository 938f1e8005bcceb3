//! The smaller APIs: ListOffsets, OffsetForLeaderEpoch, DeleteRecords, CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeConfigs and DescribeCluster.

use crate::admin::{self, AdminOp, NewTopic};
use crate::shard::{Shard, ShardMsg};
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
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

/// Where a partition this broker leads lives, or the error: it does not exist, another
/// broker leads it, or the client's leader epoch is not the current one.
fn locate(
    shard: &Shard,
    topic: &str,
    partition: i32,
    client_epoch: i32,
) -> Result<(Arc<str>, usize), i16> {
    shard.check_leader(topic, partition, client_epoch)?;
    match shard.snapshot().topic(topic) {
        Some(m) => Ok((m.name.clone(), shard.owner(topic, partition))),
        None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
    }
}

pub async fn list_offsets(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ListOffsetsRequest = decode!(req);
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let answer = match locate(shard, &t.name.0, p.partition_index, p.current_leader_epoch) {
                Err(c) => Err(c),
                Ok((name, owner)) => {
                    let key = (name, p.partition_index);
                    let timestamp = p.timestamp;
                    match shard
                        .call(owner, |reply| ShardMsg::ListOffset {
                            key,
                            timestamp,
                            committed: req.version >= 2 && body.isolation_level == 1,
                            reply,
                        })
                        .await
                    {
                        Some(Ok(found)) => Ok(found),
                        Some(Err((c, _))) => Err(c),
                        None => Err(code::NOT_LEADER_OR_FOLLOWER),
                    }
                }
            };
            match answer {
                // A timestamp after the last record: offset -1, timestamp -1 (as Kafka).
                Ok(None) => {}
                Ok(Some(found)) => {
                    r = r.with_timestamp(found.timestamp).with_offset(found.offset);
                    if req.version >= 4 {
                        r = r.with_leader_epoch(0);
                    }
                }
                Err(c) => r = r.with_error_code(c),
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &ListOffsetsResponse::default().with_topics(topics),
    )
}

pub async fn offset_for_leader_epoch(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: OffsetForLeaderEpochRequest = decode!(req);
    let mut topics = Vec::new();
    for t in &body.topics {
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let mut r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match locate(shard, &t.topic.0, p.partition, p.current_leader_epoch) {
                Err(c) => r = r.with_error_code(c),
                Ok((name, owner)) => {
                    let key = (name, p.partition);
                    let epoch = p.leader_epoch;
                    match shard
                        .call(owner, |reply| ShardMsg::EpochEnd { key, epoch, reply })
                        .await
                    {
                        Some(Ok((epoch, end))) => {
                            r = r.with_leader_epoch(epoch).with_end_offset(end)
                        }
                        Some(Err((c, _))) => r = r.with_error_code(c),
                        None => r = r.with_error_code(code::NOT_LEADER_OR_FOLLOWER),
                    }
                }
            }
            partitions.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    )
}

pub async fn delete_records(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DeleteRecordsRequest = decode!(req);
    let mut topics = Vec::new();
    for t in &body.topics {
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let mut r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match locate(shard, &t.name.0, p.partition_index, -1) {
                Err(c) => r = r.with_error_code(c),
                // As Kafka: records of an internal topic are the broker's. Deleting committed
                // offsets would lose every group's position at the next restart's replay.
                Ok((name, _)) if runnel_metadata::cluster::is_internal(&name) => {
                    r = r.with_error_code(code::INVALID_TOPIC_EXCEPTION)
                }
                Ok((name, owner)) => {
                    let key = (name, p.partition_index);
                    let offset = p.offset;
                    match shard
                        .call(owner, |reply| ShardMsg::DeleteRecords {
                            key,
                            offset,
                            reply,
                        })
                        .await
                    {
                        Some(Ok(low)) => r = r.with_low_watermark(low),
                        Some(Err((c, _))) => r = r.with_error_code(c),
                        None => r = r.with_error_code(code::NOT_LEADER_OR_FOLLOWER),
                    }
                }
            }
            partitions.push(r);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &DeleteRecordsResponse::default().with_topics(topics),
    )
}

pub async fn create_topics(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: CreateTopicsRequest = decode!(req);
    let version = req.version;
    let default_partitions = shard.config().default_partitions;
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut new = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in &body.topics {
        let name = t.name.0.to_string();
        let fail = |c: i16, msg: String| {
            let mut r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(c);
            if version >= 1 {
                r = r.with_error_message(Some(sb(&msg)));
            }
            Some(r)
        };
        if !seen.insert(name.clone()) {
            results.push(fail(
                code::INVALID_REQUEST,
                format!("topic {name} appears twice in the request"),
            ));
            continue;
        }
        if !t.assignments.is_empty() && (t.num_partitions != -1 || t.replication_factor != -1) {
            results.push(fail(
                code::INVALID_REQUEST,
                "replica assignments go with numPartitions and replicationFactor -1".into(),
            ));
            continue;
        }
        if t.replication_factor == 0 || t.replication_factor < -1 {
            results.push(fail(
                code::INVALID_REPLICATION_FACTOR,
                format!("replication factor {} is not allowed", t.replication_factor),
            ));
            continue;
        }
        let mut assignment: Vec<(i32, Vec<i32>)> = t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        assignment.sort_by_key(|(p, _)| *p);
        if assignment
            .iter()
            .enumerate()
            .any(|(i, (p, _))| *p != i as i32)
        {
            results.push(fail(
                code::INVALID_REPLICA_ASSIGNMENT,
                "assignments must name partitions 0, 1, ... once each".into(),
            ));
            continue;
        }
        let partitions = match (t.num_partitions, t.assignments.len()) {
            (-1, 0) => default_partitions,
            (-1, n) => n as i32,
            (n, _) => n,
        };
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        results.push(None);
        new.push(NewTopic {
            name,
            partitions,
            replication_factor: (t.replication_factor > 0).then_some(t.replication_factor),
            assignment: (!assignment.is_empty())
                .then(|| assignment.into_iter().map(|(_, r)| r).collect()),
            configs,
        });
    }
    let mut answers = admin::submit(
        shard,
        AdminOp::CreateTopics {
            topics: new.clone(),
            validate_only: body.validate_only,
        },
    )
    .await
    .into_iter();
    let mut new_iter = new.iter();
    let out: Vec<CreatableTopicResult> = results
        .into_iter()
        .map(|r| match r {
            Some(r) => r,
            None => {
                let t = new_iter.next().expect("one new topic per pending result");
                let mut r = CreatableTopicResult::default()
                    .with_name(topic_name(&t.name))
                    .with_error_message(None);
                match answers.next().expect("one answer per new topic") {
                    Ok(meta) => {
                        if !body.validate_only {
                            tracing::info!(topic = %t.name, partitions = t.partitions, "created topic");
                        }
                        if version >= 5 {
                            r = r
                                .with_num_partitions(meta.partitions)
                                .with_replication_factor(
                                    meta.assignment.first().map_or(1, |p| p.replicas.len() as i16),
                                )
                                .with_configs(Some(
                                    topic_configs(shard, &meta.overrides)
                                        .into_iter()
                                        .map(|e| {
                                            CreatableTopicConfigs::default()
                                                .with_name(sb(e.name))
                                                .with_value(Some(sb(&e.value)))
                                                .with_read_only(false)
                                                .with_config_source(e.source)
                                        })
                                        .collect(),
                                ));
                        }
                        if version >= 7 && !body.validate_only {
                            r = r.with_topic_id(uuid::Uuid::from_bytes(meta.id));
                        }
                    }
                    Err((c, msg)) => {
                        r = r.with_error_code(c);
                        if version >= 1 {
                            r = r.with_error_message(Some(sb(&msg)));
                        }
                    }
                }
                r
            }
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        version,
        &CreateTopicsResponse::default().with_topics(out),
    )
}

pub async fn delete_topics(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DeleteTopicsRequest = decode!(req);
    let version = req.version;
    let snapshot = shard.snapshot();
    // v0-5 name topics; v6 names or ids.
    let asked: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        body.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        body.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let names: Vec<Option<String>> = asked
        .iter()
        .map(|(n, id)| match n {
            Some(n) => Some(n.clone()),
            None => snapshot
                .topic_by_id(id.as_bytes())
                .map(|m| m.name.to_string()),
        })
        .collect();
    let known: Vec<String> = names.iter().flatten().cloned().collect();
    let mut answers = admin::submit(shard, AdminOp::DeleteTopics { names: known })
        .await
        .into_iter();
    let responses = asked
        .iter()
        .zip(&names)
        .map(|((_, id), name)| {
            let mut r = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
            let result = match name {
                Some(_) => answers.next().expect("one answer per name"),
                None => Err((code::UNKNOWN_TOPIC_ID, format!("no topic has id {id}"))),
            };
            match result {
                Ok(meta) => {
                    tracing::info!(topic = %meta.name, "deleted topic");
                    if version >= 6 {
                        r = r.with_topic_id(uuid::Uuid::from_bytes(meta.id));
                    }
                }
                Err((c, msg)) => {
                    r = r.with_error_code(c);
                    if version >= 5 {
                        r = r.with_error_message(Some(sb(&msg)));
                    }
                }
            }
            r
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        version,
        &DeleteTopicsResponse::default().with_responses(responses),
    )
}

pub async fn create_partitions(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: CreatePartitionsRequest = decode!(req);
    let wanted: Vec<admin::NewPartitions> = body
        .topics
        .iter()
        .map(|t| {
            let assignment = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|r| r.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            (t.name.0.to_string(), t.count, assignment)
        })
        .collect();
    let answers = admin::submit(
        shard,
        AdminOp::CreatePartitions {
            topics: wanted.clone(),
            validate_only: body.validate_only,
        },
    )
    .await;
    let results = wanted
        .iter()
        .zip(answers)
        .map(|((name, count, _), r)| {
            let mut out = CreatePartitionsTopicResult::default().with_name(topic_name(name));
            match r {
                Ok(_) => {
                    if !body.validate_only {
                        tracing::info!(topic = %name, partitions = count, "added partitions");
                    }
                }
                Err((c, msg)) => out = out.with_error_code(c).with_error_message(Some(sb(&msg))),
            }
            out
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        req.version,
        &CreatePartitionsResponse::default().with_results(results),
    )
}

/// ElectLeaders: preferred leader election (kafka-leader-election.sh), through the metadata
/// log. Unclean election (v1+, type 1) is refused.
pub async fn elect_leaders(shard: &Rc<Shard>, req: &Request) -> Outcome {
    use kafka_protocol::messages::elect_leaders_response::{
        ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
    };
    use runnel_metadata::cluster::{Command, Outcome as Done};
    let body: ElectLeadersRequest = decode!(req);
    let mut asked: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    // A name no topic can have is answered here (it has no place in a log command).
    let mut unknown = Vec::new();
    if let Some(list) = &mut asked {
        list.retain(|(t, p)| {
            let ok = runnel_metadata::validate_topic_name(t).is_ok();
            if !ok {
                unknown.push(((t.clone(), *p), code::UNKNOWN_TOPIC_OR_PARTITION));
            }
            ok
        });
    }
    type Elected = Vec<((String, i32), i16)>;
    let results: Result<Elected, (i16, String)> = if body.election_type != 0 {
        Err((
            code::INVALID_REQUEST,
            "only preferred leader election is supported".into(),
        ))
    } else if asked.as_ref().is_some_and(|l| l.is_empty()) {
        Ok(Vec::new())
    } else {
        let timeout = std::time::Duration::from_millis(body.timeout_ms.clamp(1000, 60_000) as u64);
        match shard
            .shared
            .controller
            .propose(
                vec![Command::ElectPreferred {
                    topics: asked.clone(),
                }],
                timeout,
            )
            .await
        {
            Ok(Ok(mut r)) => match r.pop() {
                Some(Ok(Done::Elected(v))) => Ok(v),
                Some(Err(e)) => Err(e),
                _ => Err((code::UNKNOWN_SERVER_ERROR, "no election result".into())),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err((code::REQUEST_TIMED_OUT, "the broker is stopping".into())),
        }
    };
    let mut resp = ElectLeadersResponse::default();
    // v0 has no top-level error: the partitions asked for carry it.
    let results = match results {
        Err((c, msg)) if req.version == 0 => {
            tracing::info!("leader election refused: {msg}");
            Ok(asked
                .iter()
                .flatten()
                .map(|tp| (tp.clone(), c))
                .collect::<Vec<_>>())
        }
        other => other,
    };
    match results.map(|mut v| {
        v.extend(unknown);
        v
    }) {
        Err((c, msg)) => {
            tracing::info!("leader election refused: {msg}");
            resp = resp.with_error_code(c);
        }
        Ok(v) => {
            let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
            for ((t, p), c) in v {
                by_topic.entry(t).or_default().push(
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(c)
                        .with_error_message(election_message(c).map(sb)),
                );
            }
            resp.replica_election_results = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(&t))
                        .with_partition_result(ps)
                })
                .collect();
        }
    }
    encode_or_close(req.correlation_id, req.version, &resp)
}

/// The message Kafka gives with a partition's election result (none on success).
fn election_message(c: i16) -> Option<&'static str> {
    match c {
        0 => None,
        code::UNKNOWN_TOPIC_OR_PARTITION => Some("The partition does not exist."),
        runnel_metadata::cluster::code::ELECTION_NOT_NEEDED => {
            Some("Leader election not needed for topic partition.")
        }
        runnel_metadata::cluster::code::PREFERRED_LEADER_NOT_AVAILABLE => {
            Some("The preferred leader was not available.")
        }
        _ => Some("The election failed."),
    }
}

pub async fn describe_cluster(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let _body: DescribeClusterRequest = decode!(req);
    let snapshot = shard.snapshot();
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(sb(&snapshot.cluster_id))
        .with_controller_id(BrokerId(crate::handlers::metadata::controller_for_clients(
            shard, &snapshot,
        )))
        .with_brokers(
            snapshot
                .live_brokers()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(sb(&b.host))
                        .with_port(b.port)
                        .with_rack(b.rack.as_deref().map(sb))
                })
                .collect(),
        );
    encode_or_close(req.correlation_id, req.version, &resp)
}

pub async fn find_coordinator(shard: &Rc<Shard>, req: &Request) -> Outcome {
    use kafka_protocol::messages::find_coordinator_response::{
        Coordinator, FindCoordinatorResponse,
    };
    const GROUP: i8 = 0;
    const TRANSACTION: i8 = 1;
    let body: FindCoordinatorRequest = decode!(req);
    let version = req.version;
    // A group's coordinator is the leader of its __consumer_offsets partition, a
    // transactional id's the leader of its __transaction_state partition.
    let snapshot = shard.snapshot();
    if body.key_type == TRANSACTION {
        crate::txns::ensure_topic(shard);
    }
    let answer = |key_type: i8, key: &str| -> Result<(i32, StrBytes, i32), (i16, String)> {
        let (topic, partition_for): (&str, fn(&str, i32) -> i32) = match key_type {
            GROUP => (
                runnel_group::offsets::TOPIC,
                runnel_group::offsets::partition_for,
            ),
            TRANSACTION => (runnel_group::txn::TOPIC, runnel_group::txn::partition_for),
            _ => {
                return Err((
                    code::INVALID_REQUEST,
                    format!("unknown coordinator key type {key_type}"),
                ))
            }
        };
        if key.is_empty() && key_type == TRANSACTION {
            return Err((code::INVALID_REQUEST, "empty transactional id".into()));
        }
        let Some(t) = snapshot.topic(topic) else {
            return Err((
                code::COORDINATOR_NOT_AVAILABLE,
                format!("{topic} is not created yet"),
            ));
        };
        let p = partition_for(key, t.partitions);
        let leader = t.partition(p).map_or(-1, |pm| pm.leader);
        match snapshot.brokers.get(&leader) {
            Some(b) if snapshot.is_live(leader) => Ok((b.id, sb(&b.host), b.port)),
            _ => Err((
                code::COORDINATOR_NOT_AVAILABLE,
                format!("{topic}-{p} has no leader"),
            )),
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = body
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match answer(body.key_type, k) {
                    Ok((node, host, port)) => c
                        .with_node_id(BrokerId(node))
                        .with_host(host)
                        .with_port(port),
                    Err((e, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e)
                        .with_error_message(Some(sb(&msg))),
                }
            })
            .collect();
    } else {
        match answer(body.key_type, &body.key) {
            Ok((node, host, port)) => {
                // (Kafka answers v1-3 with the error's name as message: "NONE".)
                resp = resp
                    .with_node_id(BrokerId(node))
                    .with_host(host)
                    .with_port(port)
                    .with_error_message((version >= 1).then(|| sb("NONE")))
            }
            Err((e, msg)) => {
                resp = resp
                    .with_error_code(e)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1);
                if version >= 1 {
                    resp = resp.with_error_message(Some(sb(&msg)));
                }
            }
        }
    }
    encode_or_close(req.correlation_id, version, &resp)
}

pub async fn init_producer_id(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: InitProducerIdRequest = decode!(req);
    let mut resp = InitProducerIdResponse::default();
    if body.transactional_id.is_some() {
        return crate::handlers::txn::init_producer_id(shard, req, &body).await;
    }
    let (producer_id, epoch) = (body.producer_id.0, body.producer_epoch);
    match shard
        .call(0, |reply| ShardMsg::InitProducerId {
            producer_id,
            epoch,
            reply,
        })
        .await
    {
        Some(Ok((id, epoch))) => {
            resp = resp
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Some(Err((c, msg))) => {
            tracing::warn!("InitProducerId failed: {msg}");
            resp = resp.with_error_code(c).with_producer_epoch(-1);
        }
        None => {
            resp = resp
                .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
                .with_producer_epoch(-1)
        }
    }
    encode_or_close(req.correlation_id, req.version, &resp)
}

/// Kafka's ConfigSource values.
mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's ConfigType values (DescribeConfigs v3+).
mod ctype {
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
}

struct ConfigEntry {
    name: &'static str,
    value: String,
    source: i8,
    config_type: i8,
    doc: &'static str,
}

/// Every topic config Kafka defines, with its value in effect and where it came from: the
/// topic's override, this broker's flag, or Kafka's default.
fn topic_configs(shard: &Shard, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    let c = shard.config();
    let opt = |v: Option<u64>| v.map_or(i64::MAX.to_string(), |v| v.to_string());
    // Topic configs whose default is a broker flag: (value, set by the operator).
    let from_flags: BTreeMap<&str, (String, bool)> = [
        (
            "flush.messages",
            (
                opt(c.flush_interval_messages),
                c.flush_interval_messages.is_some(),
            ),
        ),
        (
            "flush.ms",
            (opt(c.flush_interval_ms), c.flush_interval_ms.is_some()),
        ),
        (
            "max.message.bytes",
            (
                c.max_message_bytes.to_string(),
                c.max_message_bytes != 1_048_588,
            ),
        ),
        (
            "min.insync.replicas",
            (
                c.min_insync_replicas.unwrap_or(1).to_string(),
                c.min_insync_replicas.is_some(),
            ),
        ),
        ("preallocate", (c.preallocate.to_string(), c.preallocate)),
        (
            "cleanup.policy",
            (
                c.log_cleanup_policy.clone(),
                c.log_cleanup_policy != "delete",
            ),
        ),
        (
            "delete.retention.ms",
            (
                c.log_cleaner_delete_retention_ms.to_string(),
                c.log_cleaner_delete_retention_ms != runnel_log::DEFAULT_DELETE_RETENTION_MS,
            ),
        ),
        (
            "min.compaction.lag.ms",
            (
                c.log_cleaner_min_compaction_lag_ms.to_string(),
                c.log_cleaner_min_compaction_lag_ms != 0,
            ),
        ),
        (
            "max.compaction.lag.ms",
            (
                c.log_cleaner_max_compaction_lag_ms.to_string(),
                c.log_cleaner_max_compaction_lag_ms != i64::MAX as u64,
            ),
        ),
        (
            "min.cleanable.dirty.ratio",
            (
                c.log_cleaner_min_cleanable_ratio.to_string(),
                c.log_cleaner_min_cleanable_ratio != 0.5,
            ),
        ),
        (
            "retention.bytes",
            (c.retention_bytes.to_string(), c.retention_bytes != -1),
        ),
        (
            "retention.ms",
            (
                c.retention_ms.to_string(),
                c.retention_ms != runnel_log::DEFAULT_RETENTION_MS as i64,
            ),
        ),
        (
            "segment.bytes",
            (
                c.segment_bytes.to_string(),
                c.segment_bytes != runnel_log::DEFAULT_SEGMENT_BYTES,
            ),
        ),
        (
            "segment.ms",
            (
                c.segment_ms.to_string(),
                c.segment_ms != runnel_log::DEFAULT_SEGMENT_MS,
            ),
        ),
    ]
    .into_iter()
    .collect();
    runnel_metadata::topic_config::TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = match (overrides.get(d.name), from_flags.get(d.name)) {
                (Some(v), _) => (v.clone(), source::DYNAMIC_TOPIC_CONFIG),
                (None, Some((v, true))) => (v.clone(), source::STATIC_BROKER_CONFIG),
                (None, Some((v, false))) => (v.clone(), source::DEFAULT_CONFIG),
                (None, None) => (d.default.to_string(), source::DEFAULT_CONFIG),
            };
            ConfigEntry {
                name: d.name,
                value,
                source,
                config_type: d.kind.config_type(),
                doc: d.doc,
            }
        })
        .collect()
}

/// The broker's own settings, under Kafka's broker config names.
fn broker_configs(shard: &Shard) -> Vec<ConfigEntry> {
    let c = shard.config();
    let e = |name, value: String, config_type, doc| ConfigEntry {
        name,
        value,
        source: source::STATIC_BROKER_CONFIG,
        config_type,
        doc,
    };
    vec![
        e(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            1,
            "Create topics on Metadata requests.",
        ),
        e(
            "broker.id",
            shard.node_id().to_string(),
            ctype::INT,
            "This broker's id.",
        ),
        e(
            "log.dirs",
            c.data_dir.display().to_string(),
            ctype::STRING,
            "The data directory.",
        ),
        e(
            "log.retention.bytes",
            c.retention_bytes.to_string(),
            ctype::LONG,
            "Default retention.bytes.",
        ),
        e(
            "log.retention.ms",
            c.retention_ms.to_string(),
            ctype::LONG,
            "Default retention.ms.",
        ),
        e(
            "log.segment.bytes",
            c.segment_bytes.to_string(),
            ctype::INT,
            "Default segment.bytes.",
        ),
        e(
            "log.roll.ms",
            c.segment_ms.to_string(),
            ctype::LONG,
            "Default segment.ms.",
        ),
        e(
            "message.max.bytes",
            c.max_message_bytes.to_string(),
            ctype::INT,
            "Default max.message.bytes.",
        ),
        e(
            "num.partitions",
            c.default_partitions.to_string(),
            ctype::INT,
            "Partitions of an auto-created topic.",
        ),
        e(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            ctype::INT,
            "The largest request accepted.",
        ),
    ]
    .into_iter()
    // Kafka lists broker.rack unset too (a null value); here only when --rack is given.
    .chain(c.rack.as_ref().map(|rack| {
        e(
            "broker.rack",
            rack.clone(),
            ctype::STRING,
            "This broker's rack.",
        )
    }))
    .chain(dynamic_broker_configs(shard))
    .collect()
}

/// The broker configs that change at runtime (IncrementalAlterConfigs), as in effect here.
fn dynamic_broker_configs(shard: &Shard) -> Vec<ConfigEntry> {
    let snapshot = shard.snapshot();
    let me = shard.node_id();
    let c = shard.config();
    [
        (
            "leader.replication.throttled.rate",
            c.leader_replication_throttled_rate,
            "Bytes/s this broker as a leader sends to replicas a reassignment adds.",
        ),
        (
            "follower.replication.throttled.rate",
            c.follower_replication_throttled_rate,
            "Bytes/s this broker fetches for replicas a reassignment adds to it.",
        ),
    ]
    .into_iter()
    .map(|(name, flag, doc)| {
        let own = snapshot.broker_configs.get(&me).and_then(|m| m.get(name));
        let cluster = snapshot.broker_configs.get(&-1).and_then(|m| m.get(name));
        let (value, source) = match (own, cluster) {
            (Some(v), _) => (v.clone(), source::DYNAMIC_BROKER_CONFIG),
            (None, Some(v)) => (v.clone(), source::DYNAMIC_DEFAULT_BROKER_CONFIG),
            (None, None) if flag != u64::MAX => (flag.to_string(), source::STATIC_BROKER_CONFIG),
            (None, None) => (i64::MAX.to_string(), source::DEFAULT_CONFIG),
        };
        ConfigEntry {
            name,
            value,
            source,
            config_type: ctype::LONG,
            doc,
        }
    })
    .collect()
}

pub async fn describe_configs(shard: &Rc<Shard>, req: &Request) -> Outcome {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    let body: DescribeConfigsRequest = decode!(req);
    let version = req.version;
    let snapshot = shard.snapshot();
    let results = body
        .resources
        .iter()
        .map(|r| {
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                TOPIC => match snapshot.topic(&r.resource_name) {
                    Some(m) => Ok(topic_configs(shard, &m.overrides)),
                    None => Err((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {} does not exist", &*r.resource_name),
                    )),
                },
                BROKER
                    if r.resource_name.is_empty()
                        || *r.resource_name == *shard.node_id().to_string() =>
                {
                    Ok(broker_configs(shard))
                }
                BROKER => Err((
                    code::INVALID_REQUEST,
                    format!(
                        "this broker is {}, not {}",
                        shard.node_id(),
                        &*r.resource_name
                    ),
                )),
                t => Err((
                    code::INVALID_REQUEST,
                    format!("resource type {t} is not supported"),
                )),
            };
            match entries {
                Ok(entries) => {
                    // (As Kafka: no keys, or an empty list, asks for every config.)
                    let keys = r.configuration_keys.as_ref().filter(|k| !k.is_empty());
                    out.configs = entries
                        .into_iter()
                        .filter(|e| keys.is_none_or(|k| k.iter().any(|k| &**k == e.name)))
                        .map(|e| {
                            let mut c = DescribeConfigsResourceResult::default()
                                .with_name(sb(e.name))
                                .with_value(Some(sb(&e.value)))
                                .with_config_source(e.source);
                            if body.include_synonyms {
                                c = c.with_synonyms(vec![DescribeConfigsSynonym::default()
                                    .with_name(sb(e.name))
                                    .with_value(Some(sb(&e.value)))
                                    .with_source(e.source)]);
                            }
                            if version >= 3 {
                                c = c.with_config_type(e.config_type);
                                c = c.with_documentation(
                                    body.include_documentation.then(|| sb(e.doc)),
                                );
                            }
                            c
                        })
                        .collect();
                }
                Err((c, msg)) => {
                    out = out.with_error_code(c).with_error_message(Some(sb(&msg)));
                }
            }
            out
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        version,
        &DescribeConfigsResponse::default().with_results(results),
    )
}
