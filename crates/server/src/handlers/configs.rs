//! AlterConfigs and IncrementalAlterConfigs: topic configs (any Kafka 4.x topic config) and
//! this project's dynamic broker configs (the replication throttles), changed through the
//! metadata log, so every broker applies them (open partitions take a topic's new config
//! when the snapshot arrives) and they survive restarts.

use crate::shard::{PartitionError, Shard};
use kafka_protocol::messages::*;
use runnel_metadata::cluster::{Command, ConfigResource};
use runnel_metadata::topic_config::{self, Kind};
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, sb, Outcome, Request};
use std::collections::BTreeMap;
use std::rc::Rc;

macro_rules! decode {
    ($req:expr) => {
        match $req.decode_body() {
            Ok(b) => b,
            Err(e) => return Outcome::Close(e),
        }
    };
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// IncrementalAlterConfigs' operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// One resource of a request: what it names, and each config's operation and value.
struct Asked {
    resource_type: i8,
    name: String,
    ops: Vec<(String, i8, Option<String>)>,
}

pub async fn alter_configs(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: AlterConfigsRequest = decode!(req);
    let asked: Vec<Asked> = body
        .resources
        .iter()
        .map(|r| Asked {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            ops: r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        SET,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect(),
        })
        .collect();
    let results = run(shard, &asked, true, body.validate_only).await;
    let responses = asked
        .iter()
        .zip(results)
        .map(|(a, r)| {
            let mut out = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_message(None)
                .with_resource_type(a.resource_type)
                .with_resource_name(sb(&a.name));
            if let Err((c, msg)) = r {
                out = out.with_error_code(c).with_error_message(Some(sb(&msg)));
            }
            out
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        req.version,
        &AlterConfigsResponse::default().with_responses(responses),
    )
}

pub async fn incremental_alter_configs(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: IncrementalAlterConfigsRequest = decode!(req);
    let asked: Vec<Asked> = body
        .resources
        .iter()
        .map(|r| Asked {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            ops: r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect(),
        })
        .collect();
    let results = run(shard, &asked, false, body.validate_only).await;
    let responses = asked
        .iter()
        .zip(results)
        .map(|(a, r)| {
            let mut out =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_message(None)
                    .with_resource_type(a.resource_type)
                    .with_resource_name(sb(&a.name));
            if let Err((c, msg)) = r {
                out = out.with_error_code(c).with_error_message(Some(sb(&msg)));
            }
            out
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        req.version,
        &IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

/// Checks each resource, proposes the valid ones (unless `validate_only`) in one metadata
/// log entry, and returns one answer per resource.
async fn run(
    shard: &Rc<Shard>,
    asked: &[Asked],
    replace: bool,
    validate_only: bool,
) -> Vec<Result<(), PartitionError>> {
    let mut answers: Vec<Option<Result<(), PartitionError>>> = Vec::new();
    let mut commands = Vec::new();
    for a in asked {
        match command(shard, a, replace) {
            Ok(_) if validate_only => answers.push(Some(Ok(()))),
            Ok(c) => {
                commands.push(c);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let mut results = Vec::new().into_iter();
    if !commands.is_empty() {
        let n = commands.len();
        let r = shard
            .shared
            .controller
            .propose(commands, std::time::Duration::from_secs(30))
            .await;
        results = match r {
            Ok(Ok(rs)) => rs.into_iter().map(|r| r.map(|_| ())).collect::<Vec<_>>(),
            Ok(Err(e)) => vec![Err(e); n],
            Err(_) => vec![Err((code::REQUEST_TIMED_OUT, "the broker is stopping".into())); n],
        }
        .into_iter();
    }
    asked
        .iter()
        .zip(answers)
        .map(|(a, early)| {
            let r = early.unwrap_or_else(|| {
                results
                    .next()
                    .unwrap_or_else(|| Err((code::UNKNOWN_SERVER_ERROR, "no answer".into())))
            });
            match &r {
                Ok(()) if !validate_only => tracing::info!(
                    resource_type = a.resource_type,
                    name = %a.name,
                    "configs changed: {:?}",
                    a.ops
                ),
                Err((_, msg)) => tracing::info!(
                    resource_type = a.resource_type,
                    name = %a.name,
                    "config change refused: {msg}"
                ),
                _ => {}
            }
            r
        })
        .collect()
}

/// The metadata command for one resource, every value checked and normalized.
fn command(shard: &Shard, a: &Asked, replace: bool) -> Result<Command, PartitionError> {
    let snapshot = shard.snapshot();
    let (resource, current): (ConfigResource, BTreeMap<String, String>) = match a.resource_type {
        TOPIC => match snapshot.topic(&a.name) {
            Some(t) => (ConfigResource::Topic(a.name.clone()), t.overrides.clone()),
            None => {
                return Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {:?} does not exist", a.name),
                ))
            }
        },
        BROKER => {
            let id = if a.name.is_empty() {
                -1
            } else {
                match a.name.parse::<i32>() {
                    Ok(id) if snapshot.brokers.contains_key(&id) => id,
                    _ => {
                        return Err((
                            code::INVALID_REQUEST,
                            format!("{:?} is not a registered broker id", a.name),
                        ))
                    }
                }
            };
            let current = snapshot
                .broker_configs
                .get(&id)
                .cloned()
                .unwrap_or_default();
            (ConfigResource::Broker(id), current)
        }
        t => {
            return Err((
                code::INVALID_REQUEST,
                format!("config resource type {t} is not supported"),
            ))
        }
    };
    let topic = a.resource_type == TOPIC;
    let normalize = |k: &str, v: &str| {
        if topic {
            topic_config::normalize_topic_config(k, v)
        } else {
            runnel_metadata::normalize_broker_config(k, v)
        }
    };
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (k, op, v) in &a.ops {
        if changes.contains_key(k) {
            return Err((
                code::INVALID_REQUEST,
                format!("config {k} appears twice in one resource"),
            ));
        }
        let invalid = |msg: String| (code::INVALID_CONFIG, msg);
        let value = match *op {
            SET => match v {
                Some(v) => Some(normalize(k, v).map_err(invalid)?),
                // (AlterConfigs replaces the whole set: a key without a value is left out.)
                None if replace => None,
                None => return Err(invalid(format!("SET of {k} needs a value"))),
            },
            DELETE => {
                // An unknown name is refused; a known one goes back to its default.
                let known = if topic {
                    topic_config::topic_config_def(k).is_some()
                } else {
                    runnel_metadata::DYNAMIC_BROKER_CONFIGS.contains(&k.as_str())
                };
                if !known {
                    return Err(invalid(format!("unknown config {k:?}")));
                }
                None
            }
            APPEND | SUBTRACT => {
                let is_list = topic
                    && topic_config::topic_config_def(k)
                        .is_some_and(|d| matches!(d.kind, Kind::List(_) | Kind::ThrottledReplicas));
                if !is_list {
                    return Err(invalid(format!(
                        "{k} is not a list: APPEND and SUBTRACT apply to list configs only"
                    )));
                }
                let base = current.get(k).cloned().unwrap_or_else(|| {
                    topic_config::topic_config_def(k).map_or(String::new(), |d| d.default.into())
                });
                let mut items: Vec<String> = base
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for item in v.as_deref().unwrap_or("").split(',').map(str::trim) {
                    if item.is_empty() {
                        continue;
                    }
                    if *op == APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                Some(normalize(k, &items.join(",")).map_err(invalid)?)
            }
            other => {
                return Err((
                    code::INVALID_REQUEST,
                    format!("unknown config operation {other}"),
                ))
            }
        };
        changes.insert(k.clone(), value);
    }
    Ok(Command::AlterConfigs {
        resource,
        replace,
        changes,
    })
}
