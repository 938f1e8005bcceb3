//! DescribeLogDirs (kafka-log-dirs.sh, the Admin client's describeLogDirs): the replicas
//! this broker holds in its data dir, each one's size and how far its log end trails the
//! high watermark it knows, and the data dir's total and usable bytes.

use crate::shard::{Shard, ShardMsg};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use runnel_protocol::{code, encode_or_close, Outcome, Request};
use std::collections::BTreeMap;
use std::rc::Rc;

pub async fn describe_log_dirs(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DescribeLogDirsRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    // Every shard's replicas: (topic, partition) -> (size, offset lag).
    let mut all: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for i in 0..shard.shared.nr_shards {
        if let Some(parts) = shard.call(i, |reply| ShardMsg::LogDirs { reply }).await {
            for (key, size, lag) in parts {
                all.insert((key.0.to_string(), key.1), (size as i64, lag));
            }
        }
    }
    // None asks for every replica; otherwise only those named (that this broker has).
    let wanted = |t: &str, p: i32| match &body.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|x| x.topic.0.as_str() == t && x.partitions.contains(&p)),
    };
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for ((t, p), (size, lag)) in all {
        if wanted(&t, p) {
            topics.entry(t).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(size)
                    .with_offset_lag(lag)
                    .with_is_future_key(false),
            );
        }
    }
    let (total, usable) = disk_space(&shard.shared.data_dir);
    let dir = shard
        .shared
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| shard.shared.data_dir.clone());
    let result = DescribeLogDirsResult::default()
        .with_error_code(code::NONE)
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    encode_or_close(
        req.correlation_id,
        req.version,
        &DescribeLogDirsResponse::default().with_results(vec![result]),
    )
}

/// (total, usable) bytes of the file system holding `dir`; (-1, -1) when unknown (Kafka's
/// UNKNOWN_VOLUME_BYTES).
fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => (
            (s.f_blocks.saturating_mul(s.f_frsize)) as i64,
            (s.f_bavail.saturating_mul(s.f_frsize)) as i64,
        ),
        Err(_) => (-1, -1),
    }
}
