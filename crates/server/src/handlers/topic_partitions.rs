//! DescribeTopicPartitions (KIP-966): the partitions of the named topics (or of every
//! topic, in name order) with leaders, replicas and ISRs, paginated by a partition limit
//! and a cursor, as the Java admin client's describeTopics asks for them. There is no
//! eligible-leader-replicas set here (KIP-966's ELR): those fields are empty.

use crate::shard::Shard;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::*;
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, topic_name, Outcome, Request};
use std::rc::Rc;

/// Kafka's default for the request's limit (max.request.partition.size.limit).
const MAX_PARTITIONS: i32 = 2000;

pub async fn describe_topic_partitions(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DescribeTopicPartitionsRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let snapshot = shard.snapshot();
    let mut names: Vec<String> = if body.topics.is_empty() {
        snapshot.topics.keys().map(|t| t.to_string()).collect()
    } else {
        body.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    // The cursor names the first topic and partition of this page.
    let (from_topic, from_partition) = body.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index.max(0))
    });
    let limit = if body.response_partition_limit > 0 {
        body.response_partition_limit.min(MAX_PARTITIONS)
    } else {
        MAX_PARTITIONS
    };
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    for name in names.iter().filter(|n| **n >= from_topic) {
        let Some(meta) = snapshot.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_name(Some(topic_name(name)))
                    .with_topic_authorized_operations(i32::MIN),
            );
            continue;
        };
        if left == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(0),
            );
            break;
        }
        let first = if *name == from_topic {
            from_partition
        } else {
            0
        };
        let mut partitions = Vec::new();
        for (p, pm) in meta.assignment.iter().enumerate().skip(first as usize) {
            if left == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(name))
                        .with_partition_index(p as i32),
                );
                break;
            }
            left -= 1;
            let offline = snapshot.offline_replicas(pm);
            let mut out = DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(pm.leader))
                .with_leader_epoch(pm.leader_epoch)
                .with_replica_nodes(ids(&pm.replicas))
                .with_isr_nodes(ids(&pm.isr))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(ids(&offline));
            if pm.leader < 0 {
                out = out.with_error_code(code::LEADER_NOT_AVAILABLE);
            }
            partitions.push(out);
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(uuid::Uuid::from_bytes(meta.id))
                .with_is_internal(runnel_metadata::cluster::is_internal(&meta.name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

/// Every operation on a topic, as Kafka answers without an authorizer (KIP-430's bit per
/// AclOperation: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS).
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
