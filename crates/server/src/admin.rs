//! Topic administration: a request becomes commands in the metadata log (proposed from
//! whichever shard took it), answered once they have applied on this broker and every
//! shard has the snapshot they made, so a client told a topic exists can use it on any
//! connection to this broker. Shard 0 applies each snapshot the controller hands over
//! ([`apply_updates`]).

use crate::shard::{PartitionError, Shard, ShardMsg};
use runnel_controller::Applied;
use runnel_metadata::cluster::{self, Command, Outcome};
use runnel_metadata::{self as metadata, TopicMeta};
use runnel_protocol::code;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// None: --default-replication-factor.
    pub replication_factor: Option<i16>,
    /// Explicit replicas per partition.
    pub assignment: Option<Vec<Vec<i32>>>,
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
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
}

/// CreatePartitions for one topic: its name, the new count, explicit replicas of the new
/// partitions.
pub type NewPartitions = (String, i32, Option<Vec<Vec<i32>>>);

/// One answer per topic of the operation, in order.
pub type AdminResult = Vec<Result<Arc<TopicMeta>, PartitionError>>;

/// How long a metadata change may take to commit before the request times out.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The replication factor of a topic created without one.
pub fn default_replication_factor(shard: &Shard) -> i16 {
    shard
        .config()
        .default_replication_factor
        .unwrap_or_else(|| shard.snapshot().live_brokers().count().clamp(1, 3) as i16)
}

/// Runs `op` through the metadata log (or, validate_only, against this broker's snapshot).
pub async fn submit(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    let snapshot = shard.snapshot();
    let mut early: Vec<Option<PartitionError>> = Vec::new();
    let mut commands = Vec::new();
    let validate_only = match op {
        AdminOp::CreateTopics {
            topics,
            validate_only,
        } => {
            let total: i64 = snapshot
                .topics
                .values()
                .map(|t| i64::from(t.partitions))
                .sum();
            for mut t in topics {
                match normalize_configs(&t.configs) {
                    Ok(c) => t.configs = c,
                    Err(e) => {
                        early.push(Some(e));
                        continue;
                    }
                }
                if let Err(e) = precheck(&t.name, &t.configs, t.assignment.as_deref()) {
                    early.push(Some(e));
                    continue;
                }
                if total + i64::from(t.partitions) > partition_budget() {
                    early.push(Some((
                        code::INVALID_PARTITIONS,
                        format!(
                            "{} more partitions would exceed what this broker's open-file \
                             limit allows ({}); raise LimitNOFILE",
                            t.partitions,
                            partition_budget()
                        ),
                    )));
                    continue;
                }
                early.push(None);
                commands.push(Command::CreateTopic {
                    name: t.name,
                    id: metadata::random_id(),
                    partitions: t.partitions,
                    replication_factor: t
                        .replication_factor
                        .unwrap_or_else(|| default_replication_factor(shard)),
                    assignment: t.assignment,
                    configs: t.configs,
                });
            }
            validate_only
        }
        AdminOp::DeleteTopics { names } => {
            for name in names {
                if metadata::validate_topic_name(&name).is_err() {
                    early.push(Some((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name:?} does not exist"),
                    )));
                    continue;
                }
                early.push(None);
                commands.push(Command::DeleteTopic { name });
            }
            false
        }
        AdminOp::CreatePartitions {
            topics,
            validate_only,
        } => {
            let total: i64 = snapshot
                .topics
                .values()
                .map(|t| i64::from(t.partitions))
                .sum();
            for (name, count, assignment) in topics {
                if metadata::validate_topic_name(&name).is_err() {
                    early.push(Some((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name:?} does not exist"),
                    )));
                    continue;
                }
                if let Err(e) = precheck(&name, &BTreeMap::new(), assignment.as_deref()) {
                    early.push(Some(e));
                    continue;
                }
                let now = snapshot.topic(&name).map_or(0, |t| t.partitions);
                if total + i64::from(count - now).max(0) > partition_budget() {
                    early.push(Some((
                        code::INVALID_PARTITIONS,
                        format!(
                            "more partitions would exceed what this broker's open-file limit \
                             allows ({}); raise LimitNOFILE",
                            partition_budget()
                        ),
                    )));
                    continue;
                }
                early.push(None);
                commands.push(Command::CreatePartitions {
                    name,
                    count,
                    assignment,
                });
            }
            validate_only
        }
    };
    let answers: Vec<cluster::CommandResult> = if commands.is_empty() {
        Vec::new()
    } else if validate_only {
        // The same checks the log's apply makes, on a copy of this broker's snapshot.
        let mut copy = (*snapshot).clone();
        commands
            .iter()
            .map(|c| cluster::apply(&mut copy, c))
            .collect()
    } else {
        let n = commands.len();
        match shard
            .shared
            .controller
            .propose(commands, COMMIT_TIMEOUT)
            .await
        {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => vec![Err(e); n],
            Err(_) => vec![Err((code::REQUEST_TIMED_OUT, "the broker is stopping".into())); n],
        }
    };
    let mut answers = answers.into_iter();
    early
        .into_iter()
        .map(|e| match e {
            Some(e) => Err(e),
            None => match answers.next() {
                Some(Ok(Outcome::Topic(t))) => Ok(t),
                Some(Ok(other)) => Err((
                    code::UNKNOWN_SERVER_ERROR,
                    format!("unexpected outcome {other:?}"),
                )),
                Some(Err(e)) => Err(e),
                None => Err((code::UNKNOWN_SERVER_ERROR, "no answer".into())),
            },
        })
        .collect()
}

/// Topic configs as Kafka checks them, in the form they are stored (INVALID_CONFIG naming
/// the first bad one).
pub fn normalize_configs(
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PartitionError> {
    configs
        .iter()
        .map(|(k, v)| {
            metadata::topic_config::normalize_topic_config(k, v)
                .map(|v| (k.clone(), v))
                .map_err(|e| (code::INVALID_CONFIG, e))
        })
        .collect()
}

/// What must hold before a request's names, configs and assignments go into a metadata
/// log command (its text has no room for spaces or line breaks in them): the same checks
/// the log's apply makes, done first.
fn precheck(
    name: &str,
    configs: &BTreeMap<String, String>,
    assignment: Option<&[Vec<i32>]>,
) -> Result<(), PartitionError> {
    metadata::validate_topic_name(name).map_err(|e| (code::INVALID_TOPIC_EXCEPTION, e))?;
    for (k, v) in configs {
        metadata::validate_topic_config(k, v).map_err(|e| (code::INVALID_CONFIG, e))?;
    }
    if let Some(a) = assignment {
        if a.iter().any(|r| r.is_empty() || r.iter().any(|b| *b < 0)) {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                "every partition needs at least one replica, of broker ids >= 0".into(),
            ));
        }
    }
    Ok(())
}

/// Shard 0: applies every snapshot the controller hands over on every shard, then answers
/// the proposals it carries.
pub async fn apply_updates(
    shard: Rc<Shard>,
    mut applied: futures_channel::mpsc::UnboundedReceiver<Applied>,
) {
    use futures_lite::StreamExt;
    while let Some(Applied { snapshot, replies }) = applied.next().await {
        let before = shard.snapshot();
        // (Or moved off this broker by a reassignment.)
        let me = shard.node_id();
        let deleted = before
            .topics
            .iter()
            .any(|(name, t)| match snapshot.topic(name) {
                Some(n) if n.id == t.id => t
                    .assignment
                    .iter()
                    .zip(&n.assignment)
                    .any(|(a, b)| a.replicas.contains(&me) && !b.replicas.contains(&me)),
                _ => true,
            });
        let published = publish(&shard, snapshot).await;
        if let Err(e) = &published {
            tracing::error!("applying a metadata snapshot failed: {e}");
        }
        if deleted {
            // The checkpoints must not keep a deleted partition's offsets: a topic created
            // with the same name would inherit them at the next start.
            crate::checkpoints::write(&shard).await;
        }
        for (reply, answer) in replies {
            let answer = match &published {
                Ok(()) => answer,
                Err(e) => answer.map(|rs| {
                    rs.into_iter()
                        .map(|r| r.and(Err((code::KAFKA_STORAGE_ERROR, e.clone()))))
                        .collect()
                }),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Applies the snapshot on every shard.
async fn publish(shard: &Rc<Shard>, snapshot: Arc<metadata::Snapshot>) -> Result<(), String> {
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
    let mut first = Ok(());
    for r in runnel_runtime::join_all(calls).await {
        if first.is_ok() {
            first = r;
        }
    }
    first
}
