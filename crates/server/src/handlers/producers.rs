//! DescribeProducers (KIP-664, kafka-transactions.sh describe-producers): the idempotent
//! and transactional producers a partition's leader remembers, with the first offset of
//! each one's open transaction there (-1: none), which is what holds the last stable
//! offset back (kafka-transactions.sh find-hanging uses it).

use crate::shard::{Shard, ShardMsg};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::*;
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
use std::rc::Rc;
use std::sync::Arc;

pub async fn describe_producers(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DescribeProducersRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let mut topics = Vec::new();
    for t in &body.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::new();
        for &p in &t.partition_indexes {
            let mut out = PartitionResponse::default().with_partition_index(p);
            let known = shard
                .snapshot()
                .topic(&name)
                .is_some_and(|m| (0..m.partitions).contains(&p));
            let answer = if known {
                let key: (Arc<str>, i32) = (Arc::from(name.as_str()), p);
                let owner = shard.owner(&name, p);
                shard
                    .call(owner, |reply| ShardMsg::Producers { key, reply })
                    .await
                    .unwrap_or_else(|| Err((code::NOT_LEADER_OR_FOLLOWER, "shard gone".into())))
            } else {
                Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{name}-{p} does not exist"),
                ))
            };
            match answer {
                Ok(producers) => {
                    out.active_producers = producers
                        .into_iter()
                        .map(
                            |(pid, epoch, last_seq, last_ms, coordinator_epoch, txn_start)| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(pid))
                                    .with_producer_epoch(i32::from(epoch))
                                    .with_last_sequence(last_seq)
                                    .with_last_timestamp(last_ms)
                                    .with_coordinator_epoch(coordinator_epoch)
                                    .with_current_txn_start_offset(txn_start)
                            },
                        )
                        .collect();
                }
                Err((c, msg)) => out = out.with_error_code(c).with_error_message(Some(sb(&msg))),
            }
            partitions.push(out);
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &DescribeProducersResponse::default().with_topics(topics),
    )
}
