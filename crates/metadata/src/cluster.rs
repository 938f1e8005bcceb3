//! The metadata log's state machine: the commands a Raft entry carries and how every broker
//! applies them, in log order, to its [`Snapshot`].
//!
//! Kafka's controller computes records (a topic's replicas, a partition's new leader) and
//! logs the results. Runnel logs the *commands* and computes their effect when applying
//! them: apply is deterministic (it reads only the snapshot and the command: no clock, no
//! randomness, no local state), so every broker reaches the same snapshot, any broker can
//! propose, and a command is validated against exactly the state it applies to. What must
//! vary (topic ids, a broker's incarnation) is chosen by the proposer and carried in the
//! command. The price is that apply must stay the same across versions for entries already
//! in a log; ARCHITECTURE.md lists this divergence.
//!
//! An entry is UTF-8 text, one line per command after a header line:
//!
//! ```text
//! proposal <request id> <proposing node>
//! register 1 10.0.0.1 9092 rack-a <directory id hex> <incarnation>
//! create orders <topic id hex> 6 3 - retention.ms=1000
//! ```

use crate::registry::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Kafka's error codes the state machine answers with.
pub mod code {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INCONSISTENT_CLUSTER_ID: i16 = 104;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const INVALID_UPDATE_VERSION: i16 = 108;
    pub const INELIGIBLE_REPLICA: i16 = 107;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
}

/// The internal topic that cannot be deleted nor grown.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The transaction coordinators' log (Kafka's internal topic of that name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's internal topics: written by the brokers only, never deleted, their partition
/// counts fixed.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_STATE_TOPIC
}

/// The most partitions one topic may have; each is a directory and open files.
pub const MAX_PARTITIONS: i32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Names the cluster; only the first one counts.
    InitCluster {
        cluster_id: String,
    },
    /// A broker starting: registers it (again) and makes it active.
    RegisterBroker(BrokerMeta),
    /// The active controller did not hear from the broker for the session timeout.
    FenceBroker {
        id: i32,
        incarnation: u64,
    },
    /// The active controller hears from a fenced broker again.
    UnfenceBroker {
        id: i32,
        incarnation: u64,
    },
    /// Controlled shutdown: move the broker's leaderships away before it stops.
    ShutdownBroker {
        id: i32,
        incarnation: u64,
    },
    CreateTopic {
        name: String,
        id: TopicId,
        partitions: i32,
        replication_factor: i16,
        /// Explicit replicas per partition (CreateTopics assignments), or placed by apply.
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Moves leadership back to each partition's first replica where it is live and in the
    /// ISR; `topics` None: every partition.
    ElectPreferred {
        topics: Option<Vec<(String, i32)>>,
    },
    /// Hands out `count` producer ids; the result is the first.
    AllocateProducerIds {
        count: i64,
    },
    /// Kafka's AlterPartition: a partition's leader changes its ISR (a follower fell
    /// behind, or caught up). Applies only if `leader` still leads in `leader_epoch` and the
    /// ISR is still `from` (what the leader's decision was based on).
    AlterIsr {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        from: Vec<i32>,
        to: Vec<i32>,
    },
    /// AlterConfigs / IncrementalAlterConfigs of one resource: each key set (Some) or
    /// deleted (None); `replace` (AlterConfigs) first drops every key not named.
    AlterConfigs {
        resource: ConfigResource,
        replace: bool,
        changes: BTreeMap<String, Option<String>>,
    },
    /// Kafka's AlterPartitionReassignments for one partition: move it to `target` replicas
    /// (None: cancel the reassignment in progress).
    Reassign {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// A broker's replica of a partition failed with a storage error (Kafka's offline log
    /// dir, reported in its broker heartbeat): it leaves the ISR (unless the last member)
    /// and its leadership goes to another in-sync replica, until the broker starts again.
    ReplicaOffline {
        broker: i32,
        incarnation: u64,
        topic: String,
        /// The topic the failed log belongs to: a report about a deleted topic does not
        /// touch one created since under its name.
        topic_id: TopicId,
        partition: i32,
    },
}

/// What an AlterConfigs command changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    /// A broker's own dynamic configs, or with -1 every broker's (cluster-wide).
    Broker(i32),
}

/// What a command did, for its proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Topic(Arc<TopicMeta>),
    ProducerIds(i64),
    /// ElectPreferred: per partition asked for, the error code (0: moved; ELECTION_NOT_NEEDED:
    /// already there; PREFERRED_LEADER_NOT_AVAILABLE).
    Elected(Vec<((String, i32), i16)>),
}

pub type CommandResult = Result<Outcome, (i16, String)>;

/// One Raft entry: commands applied together, and who waits for their results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub request_id: u64,
    pub from: i32,
    pub commands: Vec<Command>,
}

impl Proposal {
    pub fn encode(&self) -> String {
        let mut out = format!("proposal {} {}\n", self.request_id, self.from);
        for c in &self.commands {
            encode_command(&mut out, c);
            out.push('\n');
        }
        out
    }

    pub fn decode(text: &str) -> Result<Proposal, String> {
        let mut lines = text.lines();
        let head = lines.next().ok_or("empty entry")?;
        let mut w = head.split(' ');
        if w.next() != Some("proposal") {
            return Err(format!("bad entry header {head:?}"));
        }
        let request_id = num(w.next())?;
        let from = num(w.next())?;
        let commands = lines
            .filter(|l| !l.is_empty())
            .map(decode_command)
            .collect::<Result<_, _>>()?;
        Ok(Proposal {
            request_id,
            from,
            commands,
        })
    }
}

fn num<T: std::str::FromStr>(w: Option<&str>) -> Result<T, String> {
    let w = w.ok_or("a word is missing")?;
    w.parse().map_err(|_| format!("bad number {w:?}"))
}

/// Broker ids as one word: `1,2,3` (empty for none).
fn ids(v: &[i32]) -> String {
    v.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The word [`ids`] writes.
fn list(w: Option<&str>) -> Result<Vec<i32>, String> {
    match w.ok_or("a word is missing")? {
        "" => Ok(Vec::new()),
        l => l.split(',').map(|b| num(Some(b))).collect(),
    }
}

fn encode_assignment(a: &Option<Vec<Vec<i32>>>) -> String {
    match a {
        None => "-".into(),
        Some(parts) => parts
            .iter()
            .map(|r| {
                r.iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(";"),
    }
}

fn decode_assignment(w: Option<&str>) -> Result<Option<Vec<Vec<i32>>>, String> {
    match w.ok_or("assignment missing")? {
        "-" => Ok(None),
        s => s
            .split(';')
            .map(|r| r.split(',').map(|b| num(Some(b))).collect())
            .collect::<Result<_, _>>()
            .map(Some),
    }
}

fn encode_command(out: &mut String, c: &Command) {
    let _ = match c {
        Command::InitCluster { cluster_id } => write!(out, "init {cluster_id}"),
        Command::RegisterBroker(b) => write!(out, "register {}", broker_words(b)),
        Command::FenceBroker { id, incarnation } => write!(out, "fence {id} {incarnation}"),
        Command::UnfenceBroker { id, incarnation } => write!(out, "unfence {id} {incarnation}"),
        Command::ShutdownBroker { id, incarnation } => {
            write!(out, "shutdown {id} {incarnation}")
        }
        Command::CreateTopic {
            name,
            id,
            partitions,
            replication_factor,
            assignment,
            configs,
        } => {
            let _ = write!(
                out,
                "create {name} {} {partitions} {replication_factor} {}",
                hex(id),
                encode_assignment(assignment)
            );
            for (k, v) in configs {
                let _ = write!(out, " {k}={v}");
            }
            Ok(())
        }
        Command::DeleteTopic { name } => write!(out, "delete {name}"),
        Command::CreatePartitions {
            name,
            count,
            assignment,
        } => write!(
            out,
            "partitions {name} {count} {}",
            encode_assignment(assignment)
        ),
        Command::ElectPreferred { topics: None } => write!(out, "elect-preferred -"),
        Command::ElectPreferred { topics: Some(ts) } => write!(
            out,
            "elect-preferred {}",
            ts.iter()
                .map(|(t, p)| format!("{t}:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Command::AllocateProducerIds { count } => write!(out, "producer-ids {count}"),
        Command::AlterIsr {
            topic,
            partition,
            leader,
            leader_epoch,
            from,
            to,
        } => write!(
            out,
            "alter-isr {topic} {partition} {leader} {leader_epoch} {} {}",
            ids(from),
            ids(to)
        ),
        Command::AlterConfigs {
            resource,
            replace,
            changes,
        } => {
            let _ = match resource {
                ConfigResource::Topic(t) => write!(out, "alter-configs topic {t}"),
                ConfigResource::Broker(b) => write!(out, "alter-configs broker {b}"),
            };
            let _ = write!(out, " {}", if *replace { "replace" } else { "merge" });
            for (k, v) in changes {
                let _ = match v {
                    Some(v) => write!(out, " {k}={v}"),
                    None => write!(out, " !{k}"),
                };
            }
            Ok(())
        }
        Command::Reassign {
            topic,
            partition,
            target,
        } => write!(
            out,
            "reassign {topic} {partition} {}",
            target.as_deref().map_or("-".to_string(), ids)
        ),
        Command::ReplicaOffline {
            broker,
            incarnation,
            topic,
            topic_id,
            partition,
        } => write!(
            out,
            "replica-offline {broker} {incarnation} {topic} {} {partition}",
            hex(topic_id)
        ),
    };
}

/// A broker's registration as words: `id host port rack|- directory-id incarnation`.
fn broker_words(b: &BrokerMeta) -> String {
    format!(
        "{} {} {} {} {} {}",
        b.id,
        b.host,
        b.port,
        b.rack.as_deref().unwrap_or("-"),
        hex(&b.dir_id),
        b.incarnation
    )
}

/// Reads [`broker_words`] back (an active broker).
fn parse_broker<'a>(w: &mut impl Iterator<Item = &'a str>) -> Result<BrokerMeta, String> {
    Ok(BrokerMeta {
        id: num(w.next())?,
        host: w.next().ok_or("host missing")?.to_string(),
        port: num(w.next())?,
        rack: w
            .next()
            .ok_or("rack missing")
            .map(|r| (r != "-").then(|| r.to_string()))?,
        dir_id: unhex(w.next().unwrap_or("")).ok_or("bad directory id")?,
        incarnation: num(w.next())?,
        state: BrokerState::Active,
    })
}

fn decode_command(line: &str) -> Result<Command, String> {
    let mut w = line.split(' ');
    let bad = |e: String| format!("bad command {line:?}: {e}");
    let word = |w: Option<&str>| w.map(str::to_string).ok_or("a word is missing".to_string());
    let c = (|| -> Result<Command, String> {
        Ok(match w.next().unwrap_or("") {
            "init" => Command::InitCluster {
                cluster_id: word(w.next())?,
            },
            "register" => Command::RegisterBroker(parse_broker(&mut w)?),
            "fence" => Command::FenceBroker {
                id: num(w.next())?,
                incarnation: num(w.next())?,
            },
            "unfence" => Command::UnfenceBroker {
                id: num(w.next())?,
                incarnation: num(w.next())?,
            },
            "shutdown" => Command::ShutdownBroker {
                id: num(w.next())?,
                incarnation: num(w.next())?,
            },
            "create" => {
                let name = word(w.next())?;
                let id = unhex(w.next().unwrap_or("")).ok_or("bad topic id")?;
                let partitions = num(w.next())?;
                let replication_factor = num(w.next())?;
                let assignment = decode_assignment(w.next())?;
                let mut configs = BTreeMap::new();
                for kv in w.by_ref() {
                    let (k, v) = kv.split_once('=').ok_or("bad config")?;
                    configs.insert(k.to_string(), v.to_string());
                }
                Command::CreateTopic {
                    name,
                    id,
                    partitions,
                    replication_factor,
                    assignment,
                    configs,
                }
            }
            "delete" => Command::DeleteTopic {
                name: word(w.next())?,
            },
            "partitions" => Command::CreatePartitions {
                name: word(w.next())?,
                count: num(w.next())?,
                assignment: decode_assignment(w.next())?,
            },
            "elect-preferred" => match w.next() {
                Some("-") => Command::ElectPreferred { topics: None },
                Some(list) => Command::ElectPreferred {
                    topics: Some(
                        list.split(',')
                            .map(|tp| {
                                let (t, p) = tp.rsplit_once(':').ok_or("bad partition")?;
                                Ok((t.to_string(), num(Some(p))?))
                            })
                            .collect::<Result<_, String>>()?,
                    ),
                },
                None => return Err("a word is missing".into()),
            },
            "producer-ids" => Command::AllocateProducerIds {
                count: num(w.next())?,
            },
            "alter-isr" => Command::AlterIsr {
                topic: word(w.next())?,
                partition: num(w.next())?,
                leader: num(w.next())?,
                leader_epoch: num(w.next())?,
                from: list(w.next())?,
                to: list(w.next())?,
            },
            "alter-configs" => {
                let resource = match w.next() {
                    Some("topic") => ConfigResource::Topic(word(w.next())?),
                    Some("broker") => ConfigResource::Broker(num(w.next())?),
                    _ => return Err("bad config resource".into()),
                };
                let replace = match w.next() {
                    Some("replace") => true,
                    Some("merge") => false,
                    _ => return Err("replace or merge expected".into()),
                };
                let mut changes = BTreeMap::new();
                for kv in w.by_ref() {
                    match kv.strip_prefix('!') {
                        Some(k) => changes.insert(k.to_string(), None),
                        None => {
                            let (k, v) = kv.split_once('=').ok_or("bad config")?;
                            changes.insert(k.to_string(), Some(v.to_string()))
                        }
                    };
                }
                Command::AlterConfigs {
                    resource,
                    replace,
                    changes,
                }
            }
            "reassign" => Command::Reassign {
                topic: word(w.next())?,
                partition: num(w.next())?,
                target: match w.next() {
                    Some("-") => None,
                    t => Some(list(t)?),
                },
            },
            "replica-offline" => Command::ReplicaOffline {
                broker: num(w.next())?,
                incarnation: num(w.next())?,
                topic: word(w.next())?,
                topic_id: unhex(w.next().unwrap_or("")).ok_or("bad topic id")?,
                partition: num(w.next())?,
            },

            other => return Err(format!("unknown command {other:?}")),
        })
    })()
    .map_err(bad)?;
    if w.next().is_some() {
        return Err(bad("extra words".into()));
    }
    Ok(c)
}

/// A host or rack name that fits in a command: no spaces or separators.
pub fn validate_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s == "-"
        || s.len() > 255
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '[' | ']'))
    {
        return Err(format!(
            "{what} {s:?} must be 1-255 characters of letters, digits, '.', '_', '-', ':'"
        ));
    }
    Ok(())
}

/// Applies one command to `s` (the next version of the snapshot) and returns its result.
/// Deterministic: see the module comment.
pub fn apply(s: &mut Snapshot, c: &Command) -> CommandResult {
    match c {
        Command::InitCluster { cluster_id } => {
            if s.cluster_id.is_empty() {
                s.cluster_id = cluster_id.clone();
            }
            Ok(Outcome::Done)
        }
        Command::RegisterBroker(b) => register(s, b),
        Command::FenceBroker { id, incarnation } => set_state(
            s,
            *id,
            *incarnation,
            BrokerState::Fenced,
            &[BrokerState::Active],
        ),
        Command::UnfenceBroker { id, incarnation } => set_state(
            s,
            *id,
            *incarnation,
            BrokerState::Active,
            &[BrokerState::Fenced],
        ),
        Command::ShutdownBroker { id, incarnation } => set_state(
            s,
            *id,
            *incarnation,
            BrokerState::ShutDown,
            &[BrokerState::Active, BrokerState::Fenced],
        ),
        Command::CreateTopic {
            name,
            id,
            partitions,
            replication_factor,
            assignment,
            configs,
        } => create_topic(
            s,
            name,
            *id,
            *partitions,
            *replication_factor,
            assignment.as_deref(),
            configs,
        ),
        Command::DeleteTopic { name } => {
            if is_internal(name) {
                return Err((
                    code::INVALID_TOPIC_EXCEPTION,
                    format!("{name} is internal and cannot be deleted"),
                ));
            }
            match s.topics.remove(name.as_str()) {
                Some(t) => {
                    s.reindex();
                    Ok(Outcome::Topic(t))
                }
                None => Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                )),
            }
        }
        Command::CreatePartitions {
            name,
            count,
            assignment,
        } => create_partitions(s, name, *count, assignment.as_deref()),
        Command::ElectPreferred { topics } => {
            Ok(Outcome::Elected(elect_preferred(s, topics.as_deref())))
        }
        Command::AlterIsr {
            topic,
            partition,
            leader,
            leader_epoch,
            from,
            to,
        } => alter_isr(s, topic, *partition, *leader, *leader_epoch, from, to),
        Command::Reassign {
            topic,
            partition,
            target,
        } => reassign(s, topic, *partition, target.as_deref()),
        Command::ReplicaOffline {
            broker,
            incarnation,
            topic,
            topic_id,
            partition,
        } => replica_offline(s, *broker, *incarnation, topic, topic_id, *partition),
        Command::AlterConfigs {
            resource,
            replace,
            changes,
        } => alter_configs(s, resource, *replace, changes),
        Command::AllocateProducerIds { count } => {
            if *count < 1 {
                return Err((code::INVALID_REQUEST, "count must be positive".into()));
            }
            let first = s.next_producer_id;
            s.next_producer_id = first.saturating_add(*count);
            Ok(Outcome::ProducerIds(first))
        }
    }
}

fn register(s: &mut Snapshot, b: &BrokerMeta) -> CommandResult {
    if let Some(old) = s.brokers.get(&b.id) {
        // A live registration from another data dir: two processes share a node id, or the
        // dir was wiped and the old process is still up. Refused until the old one is fenced.
        if old.dir_id != b.dir_id && old.state == BrokerState::Active {
            return Err((
                code::DUPLICATE_BROKER_REGISTRATION,
                format!(
                    "node id {} is registered by a running broker with directory id {} \
                     ({}:{}); this one has directory id {}",
                    b.id,
                    hex(&old.dir_id),
                    old.host,
                    old.port,
                    hex(&b.dir_id)
                ),
            ));
        }
    }
    let id = b.id;
    // A new run of a broker whose previous run was never fenced (it restarted within the
    // session timeout): that run's leaderships and ISR places end here, as if it had been
    // fenced. The new process has lost its followers' progress and must not lead in an
    // epoch it did not start (a new leader's epoch starts at its log end, which is what
    // keeps a follower from joining an ISR with less than the leader had), nor count as in
    // sync before its leader sees it caught up.
    let restarted = s
        .brokers
        .get(&id)
        .is_some_and(|old| old.state == BrokerState::Active && old.incarnation != b.incarnation);
    if restarted {
        if let Some(old) = s.brokers.get_mut(&id) {
            old.state = BrokerState::Fenced;
        }
        went_away(s, id);
    }
    // A new run recovered its logs at start: the replicas its previous run reported
    // offline may lead and rejoin ISRs again (as Kafka's registration lists the online log
    // dirs). A registration retried by the same run keeps them offline.
    let new_run = s
        .brokers
        .get(&id)
        .is_none_or(|old| old.incarnation != b.incarnation);
    if new_run {
        for_each_partition(s, |_, _, pm| {
            let had = pm.offline.len();
            pm.offline.retain(|&r| r != id);
            pm.offline.len() != had
        });
    }
    let mut b = b.clone();
    b.state = BrokerState::Active;
    s.brokers.insert(id, b);
    became_live(s, id);
    Ok(Outcome::Done)
}

/// [`Command::ReplicaOffline`]: like a broker going away ([`went_away`]), for one partition.
fn replica_offline(
    s: &mut Snapshot,
    broker: i32,
    incarnation: u64,
    topic: &str,
    topic_id: &TopicId,
    partition: i32,
) -> CommandResult {
    // From an earlier run of the broker (its restart recovered the log), or about a topic
    // deleted since (perhaps created again): nothing to do.
    if s.brokers.get(&broker).map(|b| b.incarnation) != Some(incarnation)
        || s.topic(topic).is_some_and(|t| t.id != *topic_id)
    {
        return Ok(Outcome::Done);
    }
    let Some(pm) = s.partition(topic, partition) else {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{topic}-{partition} does not exist"),
        ));
    };
    if !pm.replicas.contains(&broker) {
        return Err((
            code::INVALID_REQUEST,
            format!("broker {broker} holds no replica of {topic}-{partition}"),
        ));
    }
    if pm.offline.contains(&broker) {
        return Ok(Outcome::Done);
    }
    let live: Vec<i32> = s.live_brokers().map(|b| b.id).collect();
    let unclean = unclean_topics(s).iter().any(|u| &**u == topic);
    for_each_partition(s, |t, p, pm| {
        if t != topic || p != partition {
            return false;
        }
        pm.offline.push(broker);
        if pm.isr.contains(&broker) && pm.isr.len() > 1 {
            pm.isr.retain(|&r| r != broker);
        }
        if pm.leader == broker {
            pm.leader = pm
                .replicas
                .iter()
                .copied()
                .find(|r| pm.isr.contains(r) && pm.can_lead(*r, &live))
                .unwrap_or(-1);
            if pm.leader == -1 && unclean {
                if let Some(r) = pm.replicas.iter().copied().find(|r| pm.can_lead(*r, &live)) {
                    // Kafka's unclean election: what the ISR had beyond this replica is lost.
                    pm.leader = r;
                    pm.isr = vec![r];
                }
            }
            pm.leader_epoch += 1;
        }
        true
    });
    Ok(Outcome::Done)
}

fn set_state(
    s: &mut Snapshot,
    id: i32,
    incarnation: u64,
    to: BrokerState,
    from: &[BrokerState],
) -> CommandResult {
    let Some(b) = s.brokers.get_mut(&id) else {
        return Err((
            code::INVALID_REQUEST,
            format!("broker {id} is not registered"),
        ));
    };
    // A fence or shutdown decided about an earlier run of the broker does not touch a
    // later one.
    if b.incarnation != incarnation || !from.contains(&b.state) {
        return Ok(Outcome::Done);
    }
    b.state = to;
    match to {
        BrokerState::Active => became_live(s, id),
        _ => went_away(s, id),
    }
    Ok(Outcome::Done)
}

/// Applies `f` to every partition, replacing the topics whose partitions it changed.
fn for_each_partition(s: &mut Snapshot, mut f: impl FnMut(&str, i32, &mut PartitionMeta) -> bool) {
    let mut changed = Vec::new();
    for (name, t) in &s.topics {
        let mut parts = t.assignment.clone();
        let mut any = false;
        for (p, pm) in parts.iter_mut().enumerate() {
            any |= f(name, p as i32, pm);
        }
        if any {
            changed.push(Arc::new(TopicMeta {
                assignment: parts,
                ..(**t).clone()
            }));
        }
    }
    for t in changed {
        s.topics.insert(t.name.clone(), t);
    }
}

/// A broker went away: it leaves every ISR it is not the last member of, and its
/// leaderships go to another live ISR member (or to nobody).
fn went_away(s: &mut Snapshot, id: i32) {
    let live: Vec<i32> = s.live_brokers().map(|b| b.id).collect();
    let unclean = unclean_topics(s);
    for_each_partition(s, |t, _, pm| {
        let mut changed = false;
        if pm.isr.contains(&id) && pm.isr.len() > 1 {
            pm.isr.retain(|&r| r != id);
            changed = true;
        }
        if pm.leader == id {
            pm.leader = pm
                .replicas
                .iter()
                .copied()
                .find(|r| *r != id && pm.isr.contains(r) && pm.can_lead(*r, &live))
                .unwrap_or(-1);
            if pm.leader == -1 && unclean.iter().any(|u| &**u == t) {
                if let Some(r) = pm
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| *r != id && pm.can_lead(*r, &live))
                {
                    // Kafka's unclean election: what the ISR had beyond this replica is lost.
                    pm.leader = r;
                    pm.isr = vec![r];
                }
            }
            pm.leader_epoch += 1;
            changed = true;
        }
        changed
    });
}

/// A broker is live again. It rejoins an ISR only when the partition's leader sees it
/// caught up (AlterIsr), except that a partition without a leader whose ISR still names
/// it (it was the last member, so it has every acknowledged record) gets it as leader.
fn became_live(s: &mut Snapshot, id: i32) {
    let unclean = unclean_topics(s);
    for_each_partition(s, |t, _, pm| {
        if !pm.replicas.contains(&id) || pm.leader != -1 || pm.offline.contains(&id) {
            return false;
        }
        if pm.isr.contains(&id) {
            pm.leader = id;
            pm.leader_epoch += 1;
            return true;
        }
        if unclean.iter().any(|u| &**u == t) {
            // Kafka's unclean election: what the ISR had beyond this replica is lost.
            pm.leader = id;
            pm.isr = vec![id];
            pm.leader_epoch += 1;
            return true;
        }
        false
    });
}

/// The topics with `unclean.leader.election.enable=true` (off by default, as in Kafka):
/// their partitions take a leader from outside the ISR rather than stay offline.
fn unclean_topics(s: &Snapshot) -> Vec<Arc<str>> {
    s.topics
        .values()
        .filter(|t| {
            t.overrides
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true")
        })
        .map(|t| t.name.clone())
        .collect()
}

fn alter_isr(
    s: &mut Snapshot,
    topic: &str,
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    from: &[i32],
    to: &[i32],
) -> CommandResult {
    let Some(pm) = s.partition(topic, partition) else {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{topic}-{partition} does not exist"),
        ));
    };
    if pm.leader != leader {
        return Err((
            code::NOT_LEADER_OR_FOLLOWER,
            format!("broker {leader} does not lead {topic}-{partition}"),
        ));
    }
    if pm.leader_epoch != leader_epoch {
        return Err((
            code::FENCED_LEADER_EPOCH,
            format!(
                "{topic}-{partition} is in leader epoch {}, not {leader_epoch}",
                pm.leader_epoch
            ),
        ));
    }
    if pm.isr != from {
        return Err((
            code::INVALID_UPDATE_VERSION,
            format!(
                "the ISR of {topic}-{partition} is {:?}, not {from:?}",
                pm.isr
            ),
        ));
    }
    if !to.contains(&leader) || to.iter().any(|r| !pm.replicas.contains(r)) {
        return Err((
            code::INVALID_REQUEST,
            format!("ISR {to:?} must hold the leader and only replicas"),
        ));
    }
    if let Some(r) = to.iter().find(|r| !from.contains(r) && !s.is_live(**r)) {
        return Err((
            code::INELIGIBLE_REPLICA,
            format!("broker {r} is not live: it cannot join an ISR"),
        ));
    }
    if let Some(r) = to
        .iter()
        .find(|r| !from.contains(r) && pm.offline.contains(r))
    {
        return Err((
            code::INELIGIBLE_REPLICA,
            format!("broker {r} reported its replica offline: it cannot join the ISR"),
        ));
    }
    let mut isr = to.to_vec();
    isr.sort_by_key(|r| pm.replicas.iter().position(|x| x == r));
    isr.dedup();
    let (topic, partition) = (topic.to_string(), partition);
    let live: Vec<i32> = s.live_brokers().map(|b| b.id).collect();
    for_each_partition(s, |t, p, pm| {
        if t != topic || p != partition {
            return false;
        }
        pm.isr = isr.clone();
        // The last replica a reassignment adds has caught up (or, for a move that only
        // removes, a target replica is back in the ISR): the reassignment completes.
        if pm.reassigning() && pm.adding.iter().all(|r| pm.isr.contains(r)) {
            complete_reassignment(pm, &live);
        }
        true
    });
    Ok(Outcome::Done)
}

/// Changes a topic's config overrides or a broker's dynamic configs. Every value is checked
/// first (INVALID_CONFIG names the first bad one); nothing changes unless all pass.
fn alter_configs(
    s: &mut Snapshot,
    resource: &ConfigResource,
    replace: bool,
    changes: &BTreeMap<String, Option<String>>,
) -> CommandResult {
    let topic = matches!(resource, ConfigResource::Topic(_));
    let check = |k: &str, v: &str| {
        if topic {
            crate::topic_config::normalize_topic_config(k, v)
        } else {
            crate::normalize_broker_config(k, v)
        }
    };
    let known = |k: &str| {
        if topic {
            crate::topic_config::topic_config_def(k).is_some()
        } else {
            crate::DYNAMIC_BROKER_CONFIGS.contains(&k)
        }
    };
    for (k, v) in changes {
        let checked = match v {
            // (Only the normalized form fits in a command: the proposer normalizes.)
            Some(v) => check(k, v).and_then(|n| {
                if n == *v {
                    Ok(())
                } else {
                    Err(format!("{k}={v:?} is not in its normal form {n:?}"))
                }
            }),
            None if known(k) => Ok(()),
            None => Err(format!("unknown config {k:?}")),
        };
        checked.map_err(|e| (code::INVALID_CONFIG, e))?;
    }
    let apply = |current: &BTreeMap<String, String>| {
        let mut next = if replace {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for (k, v) in changes {
            match v {
                Some(v) => next.insert(k.clone(), v.clone()),
                None => next.remove(k),
            };
        }
        next
    };
    match resource {
        ConfigResource::Topic(name) => {
            let Some(t) = s.topics.get(name.as_str()).cloned() else {
                return Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                ));
            };
            let meta = Arc::new(TopicMeta {
                overrides: apply(&t.overrides),
                ..(*t).clone()
            });
            s.topics.insert(meta.name.clone(), meta.clone());
            Ok(Outcome::Topic(meta))
        }
        ConfigResource::Broker(id) => {
            if *id != -1 && !s.brokers.contains_key(id) {
                return Err((
                    code::INVALID_REQUEST,
                    format!("broker {id} is not registered"),
                ));
            }
            let next = apply(&s.broker_configs.get(id).cloned().unwrap_or_default());
            if next.is_empty() {
                s.broker_configs.remove(id);
            } else {
                s.broker_configs.insert(*id, next);
            }
            Ok(Outcome::Done)
        }
    }
}

/// Starts (or replaces, or with `target` None cancels) a partition's reassignment, as
/// Kafka's controller does (KIP-455): the replica set grows to the union of the original
/// and the target replicas; the leader adds the new ones to the ISR as they catch up, and
/// with the last of them in the ISR the set shrinks to the target (`complete_reassignment`).
/// Without replicas to add, it completes at once.
fn reassign(
    s: &mut Snapshot,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> CommandResult {
    let Some(pm) = s.partition(topic, partition).cloned() else {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{topic}-{partition} does not exist"),
        ));
    };
    let live: Vec<i32> = s.live_brokers().map(|b| b.id).collect();
    let original = pm.original();
    let mut next = pm.clone();
    match target {
        None => {
            if !pm.reassigning() {
                return Err((
                    code::NO_REASSIGNMENT_IN_PROGRESS,
                    format!("{topic}-{partition} has no reassignment in progress"),
                ));
            }
            // Back to the original replicas, which must still hold an ISR member.
            let isr: Vec<i32> = pm
                .isr
                .iter()
                .copied()
                .filter(|r| original.contains(r))
                .collect();
            if isr.is_empty() {
                return Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "cannot cancel the reassignment of {topic}-{partition}: no original \
                         replica ({original:?}) is in the ISR {:?}",
                        pm.isr
                    ),
                ));
            }
            next.replicas = original.clone();
            next.adding.clear();
            next.removing.clear();
            complete_reassignment(&mut next, &live);
        }
        Some(target) => {
            check_assignment(s, &[target.to_vec()])?;
            if target == original.as_slice() && !pm.reassigning() {
                return Ok(Outcome::Done);
            }
            // From every current replica, as Kafka's controller does: one that a replaced
            // reassignment added and this target drops stays (removing) until this one
            // completes, so the leader and the ISR never leave the replica set early.
            let current = pm.replicas.clone();
            let mut replicas = target.to_vec();
            replicas.extend(current.iter().copied().filter(|r| !target.contains(r)));
            next.adding = target
                .iter()
                .copied()
                .filter(|r| !current.contains(r))
                .collect();
            next.removing = current
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            next.replicas = replicas;
            if next.adding.iter().all(|r| next.isr.contains(r)) {
                complete_reassignment(&mut next, &live);
            }
        }
    }
    let (topic, partition) = (topic.to_string(), partition);
    for_each_partition(s, |t, p, pm| {
        if t != topic || p != partition {
            return false;
        }
        *pm = next.clone();
        true
    });
    Ok(Outcome::Done)
}

/// Shrinks a reassigned partition to its target replicas: the ISR keeps only target
/// replicas, a leader outside them hands over to the first live target replica in the
/// ISR, and the leader epoch moves on either way (the leader learns its new followers; the
/// removed replicas stop and delete their copy). Stays in progress while no target
/// replica is in the ISR.
fn complete_reassignment(pm: &mut PartitionMeta, live: &[i32]) {
    let target = pm.target();
    let isr: Vec<i32> = pm
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    if target.is_empty() || isr.is_empty() {
        return;
    }
    pm.replicas = target;
    pm.isr = isr;
    let replicas = pm.replicas.clone();
    pm.offline.retain(|r| replicas.contains(r));
    pm.isr
        .sort_by_key(|r| pm.replicas.iter().position(|x| x == r));
    if !pm.replicas.contains(&pm.leader) {
        pm.leader = pm
            .replicas
            .iter()
            .copied()
            .find(|r| pm.isr.contains(r) && pm.can_lead(*r, live))
            .unwrap_or(-1);
    }
    pm.leader_epoch += 1;
    pm.adding.clear();
    pm.removing.clear();
}

fn elect_preferred(s: &mut Snapshot, only: Option<&[(String, i32)]>) -> Vec<((String, i32), i16)> {
    let live: Vec<i32> = s.live_brokers().map(|b| b.id).collect();
    let mut out = Vec::new();
    if let Some(only) = only {
        for (t, p) in only {
            if s.partition(t, *p).is_none() {
                out.push(((t.clone(), *p), code::UNKNOWN_TOPIC_OR_PARTITION));
            }
        }
    }
    for_each_partition(s, |t, p, pm| {
        if let Some(only) = only {
            if !only.iter().any(|(ot, op)| ot == t && *op == p) {
                return false;
            }
        }
        let preferred = pm.replicas[0];
        if pm.leader == preferred {
            out.push(((t.to_string(), p), code::ELECTION_NOT_NEEDED));
            return false;
        }
        if !(pm.can_lead(preferred, &live) && pm.isr.contains(&preferred)) {
            out.push(((t.to_string(), p), code::PREFERRED_LEADER_NOT_AVAILABLE));
            return false;
        }
        pm.leader = preferred;
        pm.leader_epoch += 1;
        out.push(((t.to_string(), p), 0));
        true
    });
    out
}

/// Checks a new topic's name and configs (not its placement).
pub fn check_new_topic(
    s: &Snapshot,
    name: &str,
    partitions: i32,
    configs: &BTreeMap<String, String>,
) -> Result<(), (i16, String)> {
    validate_topic_name(name).map_err(|e| (code::INVALID_TOPIC_EXCEPTION, e))?;
    if s.topics.contains_key(name) {
        return Err((
            code::TOPIC_ALREADY_EXISTS,
            format!("topic {name} already exists"),
        ));
    }
    // Kafka refuses names that collide once '.' and '_' are treated alike (metric names).
    let norm = |s: &str| s.replace('.', "_");
    if let Some(other) = s.topics.keys().find(|k| norm(k) == norm(name)) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!("topic {name} collides with existing topic {other} ('.' and '_' are alike)"),
        ));
    }
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err((
            code::INVALID_PARTITIONS,
            format!("partition count must be between 1 and {MAX_PARTITIONS}, got {partitions}"),
        ));
    }
    for (k, v) in configs {
        validate_topic_config(k, v).map_err(|e| (code::INVALID_CONFIG, e))?;
    }
    Ok(())
}

fn create_topic(
    s: &mut Snapshot,
    name: &str,
    id: TopicId,
    partitions: i32,
    rf: i16,
    assignment: Option<&[Vec<i32>]>,
    configs: &BTreeMap<String, String>,
) -> CommandResult {
    check_new_topic(s, name, partitions, configs)?;
    if s.by_id.contains_key(&id) {
        return Err((code::INVALID_REQUEST, "topic id already in use".into()));
    }
    let replicas = match assignment {
        Some(a) => {
            if a.len() != partitions as usize {
                return Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("{} partitions but {} assignments", partitions, a.len()),
                ));
            }
            check_assignment(s, a)?;
            a.to_vec()
        }
        None => place(s, &id, 0, partitions, rf)?,
    };
    let name: Arc<str> = name.into();
    let meta = Arc::new(TopicMeta {
        name: name.clone(),
        id,
        partitions,
        overrides: configs.clone(),
        assignment: replicas.into_iter().map(|r| new_partition(s, r)).collect(),
    });
    s.topics.insert(name, meta.clone());
    s.reindex();
    Ok(Outcome::Topic(meta))
}

fn create_partitions(
    s: &mut Snapshot,
    name: &str,
    count: i32,
    assignment: Option<&[Vec<i32>]>,
) -> CommandResult {
    let Some(t) = s.topics.get(name).cloned() else {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic {name} does not exist"),
        ));
    };
    if is_internal(name) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!("{name} is internal: its partition count is fixed"),
        ));
    }
    if count <= t.partitions {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "topic {name} has {} partitions; the new count must be larger, got {count}",
                t.partitions
            ),
        ));
    }
    if count > MAX_PARTITIONS {
        return Err((
            code::INVALID_PARTITIONS,
            format!("at most {MAX_PARTITIONS} partitions per topic"),
        ));
    }
    let added = count - t.partitions;
    let rf = t.assignment.first().map_or(1, |p| p.target().len()) as i16;
    let replicas = match assignment {
        Some(a) => {
            if a.len() != added as usize {
                return Err((
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("{added} new partitions but {} assignments", a.len()),
                ));
            }
            check_assignment(s, a)?;
            a.to_vec()
        }
        None => place(s, &t.id, t.partitions, added, rf)?,
    };
    let mut parts = t.assignment.clone();
    parts.extend(replicas.into_iter().map(|r| new_partition(s, r)));
    let meta = Arc::new(TopicMeta {
        partitions: count,
        assignment: parts,
        ..(*t).clone()
    });
    s.topics.insert(meta.name.clone(), meta.clone());
    Ok(Outcome::Topic(meta))
}

fn new_partition(s: &Snapshot, replicas: Vec<i32>) -> PartitionMeta {
    let isr: Vec<i32> = replicas.iter().copied().filter(|r| s.is_live(*r)).collect();
    PartitionMeta {
        leader: isr.first().copied().unwrap_or(-1),
        isr: if isr.is_empty() {
            replicas.clone()
        } else {
            isr
        },
        replicas,
        leader_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
        offline: Vec::new(),
    }
}

fn check_assignment(s: &Snapshot, a: &[Vec<i32>]) -> Result<(), (i16, String)> {
    let rf = a.first().map_or(0, Vec::len);
    for r in a {
        let bad = |why: String| Err((code::INVALID_REPLICA_ASSIGNMENT, why));
        if r.is_empty() || r.len() != rf {
            return bad(format!(
                "every partition needs the same number (at least 1) of replicas: {r:?}"
            ));
        }
        if let Some(b) = r.iter().find(|b| !s.brokers.contains_key(b)) {
            return bad(format!("broker {b} is not registered"));
        }
        let mut sorted = r.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != r.len() {
            return bad(format!("a broker appears twice in {r:?}"));
        }
    }
    Ok(())
}

/// Replicas for partitions `first..first+count` over the live brokers, as Kafka's
/// rack-aware assignment: brokers ordered alternating racks, each partition's replicas
/// consecutive in that order from a start that moves one broker per partition (so
/// leaders spread), beginning at an offset taken from the topic id (so topics spread).
fn place(
    s: &Snapshot,
    topic_id: &TopicId,
    first: i32,
    count: i32,
    rf: i16,
) -> Result<Vec<Vec<i32>>, (i16, String)> {
    let live: Vec<&BrokerMeta> = s.live_brokers().collect();
    if rf < 1 || rf as usize > live.len() {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {rf} with {} live brokers ({})",
                live.len(),
                live.iter()
                    .map(|b| b.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    // Group by rack (brokers without one form their own group), then take one per rack in
    // turn.
    let mut racks: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in &live {
        racks.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let mut order = Vec::with_capacity(live.len());
    let mut i = 0;
    while order.len() < live.len() {
        for ids in racks.values() {
            if let Some(id) = ids.get(i) {
                order.push(*id);
            }
        }
        i += 1;
    }
    let n = order.len();
    let start = crate::placement::fnv1a(topic_id) as usize % n;
    Ok((first..first + count)
        .map(|p| {
            let lead = (start + p as usize) % n;
            (0..rf as usize).map(|j| order[(lead + j) % n]).collect()
        })
        .collect())
}

const STATE_HEADER: &str = "# runnel metadata state v1";

/// The applied state as text, for the metadata log's snapshots: what the commands up to
/// an index built, so the entries before it can be dropped.
///
/// ```text
/// # runnel metadata state v1
/// cluster <id>
/// next-producer-id <n>
/// broker <id> <host> <port> <rack|-> <directory id> <incarnation> <active|fenced|shutdown>
/// broker-config <id, -1: every broker> [config=value ...]
/// topic <name> <topic id> <partitions> [config=value ...]
/// partition <leader> <leader epoch> <replicas,...> <isr,...> [<adding,...> <removing,...>]
///           [offline:<ids,...>]                                 (one per partition, in order)
/// ```
pub fn encode_state(s: &Snapshot) -> String {
    let mut out = format!(
        "{STATE_HEADER}\ncluster {}\nnext-producer-id {}\n",
        if s.cluster_id.is_empty() {
            "-"
        } else {
            &s.cluster_id
        },
        s.next_producer_id
    );
    for b in s.brokers.values() {
        let state = match b.state {
            BrokerState::Active => "active",
            BrokerState::Fenced => "fenced",
            BrokerState::ShutDown => "shutdown",
        };
        let _ = writeln!(out, "broker {} {state}", broker_words(b));
    }
    for (b, configs) in &s.broker_configs {
        let _ = write!(out, "broker-config {b}");
        for (k, v) in configs {
            let _ = write!(out, " {k}={v}");
        }
        out.push('\n');
    }
    for t in s.topics.values() {
        let _ = write!(out, "topic {} {} {}", t.name, hex(&t.id), t.partitions);
        for (k, v) in &t.overrides {
            let _ = write!(out, " {k}={v}");
        }
        out.push('\n');
        for p in &t.assignment {
            let _ = write!(
                out,
                "partition {} {} {} {}",
                p.leader,
                p.leader_epoch,
                ids(&p.replicas),
                ids(&p.isr)
            );
            if p.reassigning() {
                let _ = write!(out, " {} {}", ids(&p.adding), ids(&p.removing));
            }
            if !p.offline.is_empty() {
                let _ = write!(out, " offline:{}", ids(&p.offline));
            }
            out.push('\n');
        }
    }
    out
}

/// Reads [`encode_state`]'s text back (version 0, no controller: the caller sets those).
pub fn decode_state(text: &str) -> Result<Snapshot, String> {
    let mut lines = text.lines();
    if lines.next() != Some(STATE_HEADER) {
        return Err("not a metadata state".into());
    }
    let mut s = Snapshot {
        controller_id: -1,
        ..Default::default()
    };
    let mut current: Option<TopicMeta> = None;
    let finish = |s: &mut Snapshot, t: Option<TopicMeta>| -> Result<(), String> {
        if let Some(t) = t {
            if t.assignment.len() != t.partitions as usize {
                return Err(format!("topic {} lacks partitions", t.name));
            }
            s.topics.insert(t.name.clone(), Arc::new(t));
        }
        Ok(())
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let bad = |e: String| format!("bad state line {line:?}: {e}");
        let mut w = line.split(' ');
        (|| -> Result<(), String> {
            match w.next().unwrap_or("") {
                "cluster" => {
                    let id = w.next().ok_or("a word is missing")?;
                    s.cluster_id = if id == "-" { String::new() } else { id.into() };
                }
                "next-producer-id" => s.next_producer_id = num(w.next())?,
                "broker" => {
                    let mut b = parse_broker(&mut w)?;
                    b.state = match w.next() {
                        Some("active") => BrokerState::Active,
                        Some("fenced") => BrokerState::Fenced,
                        Some("shutdown") => BrokerState::ShutDown,
                        _ => return Err("bad broker state".into()),
                    };
                    s.brokers.insert(b.id, b);
                }
                "broker-config" => {
                    let b: i32 = num(w.next())?;
                    let configs = s.broker_configs.entry(b).or_default();
                    for kv in w.by_ref() {
                        let (k, v) = kv.split_once('=').ok_or("bad config")?;
                        configs.insert(k.to_string(), v.to_string());
                    }
                }
                "topic" => {
                    finish(&mut s, current.take())?;
                    let name: Arc<str> = w.next().ok_or("name missing")?.into();
                    let id = unhex(w.next().unwrap_or("")).ok_or("bad topic id")?;
                    let partitions = num(w.next())?;
                    let mut overrides = BTreeMap::new();
                    for kv in w.by_ref() {
                        let (k, v) = kv.split_once('=').ok_or("bad config")?;
                        overrides.insert(k.to_string(), v.to_string());
                    }
                    current = Some(TopicMeta {
                        name,
                        id,
                        partitions,
                        overrides,
                        assignment: Vec::new(),
                    });
                }
                "partition" => {
                    let t = current.as_mut().ok_or("a partition outside a topic")?;
                    let mut pm = PartitionMeta {
                        leader: num(w.next())?,
                        leader_epoch: num(w.next())?,
                        replicas: list(w.next())?,
                        isr: list(w.next())?,
                        adding: Vec::new(),
                        removing: Vec::new(),
                        offline: Vec::new(),
                    };
                    // A reassignment in progress, then the offline replicas (each absent
                    // from states written before it existed).
                    let mut rest = w.by_ref().peekable();
                    if rest.peek().is_some_and(|x| !x.starts_with("offline:")) {
                        pm.adding = list(rest.next())?;
                        pm.removing = list(rest.next())?;
                    }
                    if let Some(x) = rest.next() {
                        let ids = x.strip_prefix("offline:").ok_or("offline: expected")?;
                        pm.offline = list(Some(ids))?;
                    }
                    t.assignment.push(pm);
                }
                other => return Err(format!("unknown line kind {other:?}")),
            }
            Ok(())
        })()
        .map_err(bad)?;
    }
    finish(&mut s, current.take())?;
    s.reindex();
    Ok(s)
}
