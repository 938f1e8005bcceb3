//! Topic administration. Shard 0 is the single metadata writer: it applies one operation at
//! a time, persists the registry, and hands the new snapshot to every shard (which open or
//! delete their partitions) before it answers, so a client told a topic exists can use it
//! on any connection.

use crate::shard::{PartitionError, Shard, ShardMsg};
use runnel_metadata::{self as metadata, TopicMeta};
use runnel_protocol::code;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum AdminOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
}

/// One answer per topic of the operation, in order.
pub type AdminResult = Vec<Result<Arc<TopicMeta>, PartitionError>>;

/// The most partitions one topic may have; each is a directory and open files.
pub const MAX_PARTITIONS: i32 = 100_000;

/// How many partitions this process can hold open: each needs at least one segment file
/// descriptor (one more per rolled segment), and connections need theirs. Three quarters of
/// the open-file limit above 1024 kept for everything else.
pub fn partition_budget() -> i64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return i64::MAX;
    }
    (lim.rlim_cur as i64 - 1024).max(0) * 3 / 4
}

/// Runs `op` on shard 0 from any shard.
pub async fn submit(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    let n = match &op {
        AdminOp::CreateTopics { topics, .. } => topics.len(),
        AdminOp::DeleteTopics { names } => names.len(),
        AdminOp::CreatePartitions { topics, .. } => topics.len(),
    };
    match shard.call(0, |reply| ShardMsg::Admin { op, reply }).await {
        Some(r) => r,
        None => vec![
            Err((
                code::REQUEST_TIMED_OUT,
                "the broker is shutting down".to_string()
            ));
            n
        ],
    }
}

/// Shard 0's side of [`submit`].
pub async fn run(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    debug_assert_eq!(shard.id, 0, "shard 0 is the metadata writer");
    let _permit = shard.admin_lock.acquire_permit(1).await;
    let snapshot = shard.snapshot();
    let mut topics = snapshot.topics.clone();
    let mut results: AdminResult = Vec::new();
    let mut changed = false;
    match op {
        AdminOp::CreateTopics {
            topics: new,
            validate_only,
        } => {
            for t in new {
                let r = check_new_topic(&topics, &t).map(|()| {
                    let name: Arc<str> = t.name.as_str().into();
                    Arc::new(TopicMeta {
                        name,
                        id: metadata::random_id(),
                        partitions: t.partitions,
                        overrides: t.configs.clone(),
                    })
                });
                if let (Ok(meta), false) = (&r, validate_only) {
                    topics.insert(meta.name.clone(), meta.clone());
                    changed = true;
                }
                results.push(r);
            }
        }
        AdminOp::DeleteTopics { names } => {
            for name in names {
                if name == runnel_group::offsets::TOPIC {
                    results.push(Err((
                        code::INVALID_TOPIC_EXCEPTION,
                        "__consumer_offsets is internal and cannot be deleted".into(),
                    )));
                    continue;
                }
                match topics.remove(name.as_str()) {
                    Some(meta) => {
                        changed = true;
                        results.push(Ok(meta));
                    }
                    None => results.push(Err((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    ))),
                }
            }
        }
        AdminOp::CreatePartitions {
            topics: wanted,
            validate_only,
        } => {
            for (name, count) in wanted {
                let r = match topics.get(name.as_str()) {
                    Some(_) if name == runnel_group::offsets::TOPIC => Err((
                        code::INVALID_TOPIC_EXCEPTION,
                        "__consumer_offsets is internal: its partition count is fixed".into(),
                    )),
                    None => Err((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    )),
                    Some(t) if count <= t.partitions => Err((
                        code::INVALID_PARTITIONS,
                        format!(
                            "topic {name} has {} partitions; the new count must be larger, got {count}",
                            t.partitions
                        ),
                    )),
                    Some(t)
                        if topics.values().map(|t| i64::from(t.partitions)).sum::<i64>()
                            + i64::from(count - t.partitions)
                            > partition_budget() =>
                    {
                        Err((
                            code::INVALID_PARTITIONS,
                            format!(
                                "more partitions would exceed what this broker's open-file \
                                 limit allows ({}); raise LimitNOFILE",
                                partition_budget()
                            ),
                        ))
                    }
                    Some(_) if count > MAX_PARTITIONS => Err((
                        code::INVALID_PARTITIONS,
                        format!("at most {MAX_PARTITIONS} partitions per topic"),
                    )),
                    Some(t) => Ok(Arc::new(TopicMeta {
                        partitions: count,
                        ..(**t).clone()
                    })),
                };
                if let (Ok(meta), false) = (&r, validate_only) {
                    topics.insert(meta.name.clone(), meta.clone());
                    changed = true;
                }
                results.push(r);
            }
        }
    }
    if !changed {
        return results;
    }
    let deleted = snapshot
        .topics
        .iter()
        .any(|(name, t)| topics.get(name).is_none_or(|n| n.id != t.id));
    if let Err(e) = publish(shard, snapshot.with_topics(topics)).await {
        tracing::error!("metadata change failed, rolling it back: {e}");
        // Put every shard and the registry back as they were (closing what was opened).
        let old = snapshot.topics.clone();
        if let Err(e2) = publish(shard, shard.snapshot().with_topics(old)).await {
            tracing::error!("rolling back the metadata change failed too: {e2}");
        }
        return results
            .into_iter()
            .map(|r| r.and(Err((code::KAFKA_STORAGE_ERROR, e.clone()))))
            .collect();
    }
    if deleted {
        // The checkpoints must not keep a deleted partition's offsets: a topic created
        // with the same name would inherit them at the next start.
        crate::checkpoints::write(shard).await;
    }
    results
}

fn check_new_topic(
    topics: &BTreeMap<Arc<str>, Arc<TopicMeta>>,
    t: &NewTopic,
) -> Result<(), PartitionError> {
    metadata::validate_topic_name(&t.name).map_err(|e| (code::INVALID_TOPIC_EXCEPTION, e))?;
    if topics.contains_key(t.name.as_str()) {
        return Err((
            code::TOPIC_ALREADY_EXISTS,
            format!("topic {} already exists", t.name),
        ));
    }
    // Kafka refuses names that collide once '.' and '_' are treated alike (metric names).
    let norm = |s: &str| s.replace('.', "_");
    if let Some(other) = topics.keys().find(|k| norm(k) == norm(&t.name)) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!(
                "topic {} collides with existing topic {other} ('.' and '_' are alike)",
                t.name
            ),
        ));
    }
    let total: i64 = topics.values().map(|t| i64::from(t.partitions)).sum();
    if total + i64::from(t.partitions) > partition_budget() {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "{} more partitions would exceed what this broker's open-file limit allows ({}); \
                 raise LimitNOFILE",
                t.partitions,
                partition_budget()
            ),
        ));
    }
    if !(1..=MAX_PARTITIONS).contains(&t.partitions) {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "partition count must be between 1 and {MAX_PARTITIONS}, got {}",
                t.partitions
            ),
        ));
    }
    for (k, v) in &t.configs {
        metadata::validate_topic_config(k, v).map_err(|e| (code::INVALID_CONFIG, e))?;
    }
    Ok(())
}

/// Persists the registry and applies the snapshot on every shard.
async fn publish(shard: &Rc<Shard>, snapshot: metadata::Snapshot) -> Result<(), String> {
    let path = shard.shared.data_dir.join(metadata::TOPICS_FILE);
    runnel_log::checkpoint::write_atomic(&path, metadata::encode_topics(&snapshot.topics).into())
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let snapshot = Arc::new(snapshot);
    let calls = (0..shard.shared.nr_shards).map(|i| {
        let snapshot = snapshot.clone();
        let shard = shard.clone();
        async move {
            shard
                .call(i, |reply| ShardMsg::ApplyMetadata { snapshot, reply })
                .await
                .unwrap_or_else(|| Err(format!("shard {i} is gone")))
        }
    });
    for r in runnel_runtime::join_all(calls).await {
        r?;
    }
    Ok(())
}
