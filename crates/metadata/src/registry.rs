//! Cluster metadata: the brokers, the topics with their ids, partitions, replicas, leaders
//! and config overrides.
//!
//! The metadata log ([`crate::cluster`]) changes it; every shard reads an immutable
//! [`Snapshot`] it was handed, so the hot path never locks. Before the metadata log, a
//! single broker kept its topics in `<data-dir>/runnel-topics`; [`decode_topics`] reads that
//! file once, to import it:
//!
//! ```text
//! # runnel topics v1
//! topic <name> <topic-id as 32 hex digits> <partitions> [config=value ...]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

pub const TOPICS_FILE: &str = "runnel-topics";
/// Kafka's name for the metadata log; its directory is `<data-dir>/__cluster_metadata-0`.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// Kafka's meta.properties: the cluster id and node id of this data dir.
pub const META_PROPERTIES: &str = "meta.properties";
/// The node id of a broker started without --node-id (a single node).
pub const DEFAULT_NODE_ID: i32 = 0;
const HEADER: &str = "# runnel topics v1";

/// Topics by name.
pub type Topics = BTreeMap<Arc<str>, Arc<TopicMeta>>;

/// A 16-byte topic id (Kafka's Uuid).
pub type TopicId = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: TopicId,
    pub partitions: i32,
    /// Topic-level config overrides (CreateTopics configs), validated.
    pub overrides: BTreeMap<String, String>,
    /// Per partition (`partitions` of them): replicas, ISR, leader.
    pub assignment: Vec<PartitionMeta>,
}

impl TopicMeta {
    pub fn partition(&self, p: i32) -> Option<&PartitionMeta> {
        usize::try_from(p).ok().and_then(|p| self.assignment.get(p))
    }
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Broker ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas: the only ones a new leader is chosen from.
    pub isr: Vec<i32>,
    /// -1: no leader (every ISR member is down).
    pub leader: i32,
    /// Bumped on every leader change, and when a reassignment completes.
    pub leader_epoch: i32,
    /// A reassignment in progress (Kafka's KIP-455): the replicas it adds (catching up,
    /// in `replicas` already) and those it will remove once every added one is in the ISR.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
    /// Replicas whose broker reported a storage error on this partition (Kafka's offline log
    /// dir, per partition here): not in the ISR unless the last member, never chosen to
    /// lead, until that broker starts again (its recovery re-reads the log).
    pub offline: Vec<i32>,
}

impl PartitionMeta {
    /// Whether `r` may lead: its broker is live (in `live`) and its replica not offline.
    pub fn can_lead(&self, r: i32, live: &[i32]) -> bool {
        live.contains(&r) && !self.offline.contains(&r)
    }

    /// The replica set a reassignment in progress leads to (else the replicas).
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// The replica set before the reassignment in progress (else the replicas).
    pub fn original(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding.contains(r))
            .collect()
    }

    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The data dir's directory.id: a broker restarted on another (wiped) dir gets a new one.
    pub dir_id: TopicId,
    /// Random per process start: tells a fence or a shutdown of an older run from this one.
    pub incarnation: u64,
    pub state: BrokerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Registered and heard from: may lead and be in ISRs.
    Active,
    /// Not heard from for the session timeout: leads nothing until it is heard again.
    Fenced,
    /// Asked to stop (controlled shutdown): leads nothing until it registers again.
    ShutDown,
}

/// What every shard sees of the cluster: replaced whole on each change.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped on every change, so a shard can tell a newer snapshot from an older one.
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    pub by_id: HashMap<TopicId, Arc<str>>,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The active controller (the metadata log's Raft leader); -1 when there is none.
    pub controller_id: i32,
    /// The next producer id the quorum hands out (in blocks).
    pub next_producer_id: i64,
    /// Dynamic broker configs (IncrementalAlterConfigs on a BROKER resource): per broker
    /// id, and for every broker under -1 (Kafka's cluster-wide default, resource name "").
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
}

/// The broker configs Runnel changes at runtime (Kafka's dynamic broker configs of these
/// names); every other broker setting is a flag.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "follower.replication.throttled.rate",
    "leader.replication.throttled.rate",
    // Stored, without effect: a broker has one data dir here, so nothing moves between
    // log dirs (kafka-reassign-partitions sets and clears it with the others).
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Checks a dynamic broker config value; returns it as stored.
pub fn normalize_broker_config(key: &str, value: &str) -> Result<String, String> {
    if !DYNAMIC_BROKER_CONFIGS.contains(&key) {
        return Err(format!(
            "{key} cannot be changed at runtime on this broker (only {}; the rest are flags)",
            DYNAMIC_BROKER_CONFIGS.join(", ")
        ));
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n.to_string()),
        _ => Err(format!("{key} must be an integer >= 0, got {value:?}")),
    }
}

impl Snapshot {
    /// The replicas of a partition on brokers not live now or that reported it offline
    /// (Metadata's and DescribeTopicPartitions' offline replicas).
    pub fn offline_replicas(&self, pm: &PartitionMeta) -> Vec<i32> {
        pm.replicas
            .iter()
            .copied()
            .filter(|r| !self.is_live(*r) || pm.offline.contains(r))
            .collect()
    }

    /// A dynamic broker config in effect on `broker`: its own, else the cluster-wide one.
    pub fn broker_config(&self, broker: i32, key: &str) -> Option<&str> {
        [broker, -1]
            .iter()
            .find_map(|b| self.broker_configs.get(b).and_then(|c| c.get(key)))
            .map(String::as_str)
    }
}

impl Snapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    /// The brokers clients may use: registered and not fenced or shut down.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers
            .values()
            .filter(|b| b.state == BrokerState::Active)
    }

    pub fn is_live(&self, id: i32) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| b.state == BrokerState::Active)
    }

    /// The partition's state, if the topic and partition exist.
    pub fn partition(&self, topic: &str, p: i32) -> Option<&PartitionMeta> {
        self.topic(topic).and_then(|t| t.partition(p))
    }

    pub(crate) fn reindex(&mut self) {
        self.by_id = self
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }
}

/// Kafka's topic name rule: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == METADATA_TOPIC {
        return Err(format!("{METADATA_TOPIC} is the metadata log's name"));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long, the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The topic configs Runnel understands. Anything else is INVALID_CONFIG, as in Kafka.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// segment.bytes bounds: room for one batch header, and index positions are 32-bit (Kafka
/// caps it at i32::MAX too). runnel-log refuses the same (its `LogConfig::validate`); the
/// server's tests check the two agree.
pub const MIN_SEGMENT_BYTES: u64 = 61;
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Checks one topic config value; the error is the message for INVALID_CONFIG.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let normal = crate::topic_config::normalize_topic_config(key, value)?;
    // Stored as words of a metadata log command: only the normalized form goes in.
    if normal != value {
        return Err(format!(
            "{key}={value:?} is not in its normal form {normal:?}"
        ));
    }
    Ok(())
}

/// A topic's min.insync.replicas: its override, or the broker's default.
pub fn min_insync_replicas(default: i32, overrides: &BTreeMap<String, String>) -> i32 {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn max_message_bytes(default: u32, overrides: &BTreeMap<String, String>) -> u32 {
    overrides
        .get("max.message.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn encode_topics(topics: &BTreeMap<Arc<str>, Arc<TopicMeta>>) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for t in topics.values() {
        let _ = write!(out, "topic {} {} {}", t.name, hex(&t.id), t.partitions);
        for (k, v) in &t.overrides {
            let _ = write!(out, " {k}={v}");
        }
        out.push('\n');
    }
    out
}

pub fn decode_topics(text: &str) -> Result<BTreeMap<Arc<str>, Arc<TopicMeta>>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("the first line is not {HEADER:?}"));
    }
    let mut topics = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut words = line.split(' ');
        let bad = || format!("bad line {line:?}");
        if words.next() != Some("topic") {
            return Err(bad());
        }
        let name = words.next().ok_or_else(bad)?;
        validate_topic_name(name).map_err(|e| format!("{}: {e}", bad()))?;
        let id = unhex(words.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let partitions: i32 = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if partitions < 1 {
            return Err(bad());
        }
        let mut overrides = BTreeMap::new();
        for kv in words {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            validate_topic_config(k, v).map_err(|e| format!("{}: {e}", bad()))?;
            overrides.insert(k.to_string(), v.to_string());
        }
        let name: Arc<str> = name.into();
        topics.insert(
            name.clone(),
            Arc::new(TopicMeta {
                name,
                id,
                partitions,
                overrides,
                assignment: Vec::new(),
            }),
        );
    }
    Ok(topics)
}

pub fn hex(id: &TopicId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<TopicId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// 16 random bytes from the kernel: topic ids and the cluster id.
pub fn random_id() -> TopicId {
    let mut id = [0u8; 16];
    loop {
        // SAFETY: getrandom writes at most `id.len()` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
        if n == id.len() as isize {
            break;
        }
    }
    // A version 4 UUID, as Kafka's Uuid.randomUuid(); never the all-zero "no id".
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Kafka's URL-safe base64 form of a Uuid without padding, used for cluster ids.
pub fn base64_id(id: &TopicId) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in id.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Kafka's meta.properties of a data dir: which node and cluster it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: Option<i32>,
    pub cluster_id: Option<String>,
    pub directory_id: Option<TopicId>,
}

impl MetaProperties {
    pub fn read(data_dir: &Path) -> Result<MetaProperties, String> {
        let path = data_dir.join(META_PROPERTIES);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        let bad = |key: &str| format!("{}: bad {key}", path.display());
        Ok(MetaProperties {
            node_id: get("node.id")
                .map(|v| v.parse().map_err(|_| bad("node.id")))
                .transpose()?,
            cluster_id: get("cluster.id").map(str::to_string),
            directory_id: get("directory.id")
                .map(|v| unhex(v).ok_or_else(|| bad("directory.id")))
                .transpose()?,
        })
    }

    /// Startup only: written atomically and synced.
    pub fn write(&self, data_dir: &Path) -> Result<(), String> {
        let mut text = String::from("#Written by runnel\nversion=1\n");
        if let Some(n) = self.node_id {
            let _ = writeln!(text, "node.id={n}");
        }
        if let Some(c) = &self.cluster_id {
            let _ = writeln!(text, "cluster.id={c}");
        }
        if let Some(d) = &self.directory_id {
            let _ = writeln!(text, "directory.id={}", hex(d));
        }
        let path = data_dir.join(META_PROPERTIES);
        write_file_blocking(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// The topics of a data dir from before the metadata log (`runnel-topics`), if any.
pub fn load_legacy_topics(data_dir: &Path) -> Result<Option<Topics>, String> {
    let path = data_dir.join(TOPICS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => decode_topics(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Startup-only (before the shards run): write, sync, rename, sync the directory.
fn write_file_blocking(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_text_round_trips() {
        let mut topics = BTreeMap::new();
        for (name, parts) in [("orders", 3), ("a.b_c-d", 1)] {
            let mut overrides = BTreeMap::new();
            overrides.insert("retention.ms".to_string(), "1000".to_string());
            let name: Arc<str> = name.into();
            topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id: random_id(),
                    partitions: parts,
                    overrides,
                    assignment: Vec::new(),
                }),
            );
        }
        let text = encode_topics(&topics);
        assert_eq!(decode_topics(&text).unwrap(), topics);
        assert!(decode_topics("topic x 00 1\n").is_err());
        assert!(decode_topics(&format!("{HEADER}\ntopic x {} 0\n", hex(&[1; 16]))).is_err());
        assert!(decode_topics(&format!("{HEADER}\ntopic x {} 1 foo=1\n", hex(&[1; 16]))).is_err());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.eu_1-x").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_configs_are_checked() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("segment.bytes", "10").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact").is_ok());
        assert!(validate_topic_config("compression.type", "lz4").is_ok());
        assert!(validate_topic_config("segment.bytes", "1048576").is_ok());
        // Only the normal form goes into a metadata log command.
        assert!(validate_topic_config("cleanup.policy", "compact, delete").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
    }

    #[test]
    fn base64_ids_are_22_url_safe_characters() {
        let s = base64_id(&[0xff; 16]);
        assert_eq!(s, format!("{}w", "_".repeat(21)));
        let s = base64_id(&random_id());
        assert_eq!(s.len(), 22);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64_id(&[0; 16]), "A".repeat(22));
    }
}
