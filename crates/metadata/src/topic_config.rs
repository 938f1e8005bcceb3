//! Every topic config Apache Kafka 4.x defines (its `LogConfig`), with Kafka's types, ranges
//! and defaults: a topic may set any of them (CreateTopics, AlterConfigs), they are stored
//! as given (normalized) in the metadata log, and DescribeConfigs lists them all. What each
//! does on a Runnel broker is in [`TopicConfigDef::effect`]; ARCHITECTURE.md lists those
//! Runnel stores but does not act on yet.

/// A config's type and the values Kafka accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Long {
        min: i64,
        max: i64,
    },
    Int {
        min: i32,
        max: i32,
    },
    Bool,
    Double {
        min: f64,
        max: f64,
    },
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A comma-separated list of these strings (possibly empty).
    List(&'static [&'static str]),
    /// `*`, or a comma-separated list of `partition:broker` (Kafka's
    /// ThrottledReplicaListValidator).
    ThrottledReplicas,
}

impl Kind {
    /// Kafka's ConfigType (DescribeConfigs v3+).
    pub fn config_type(&self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::Choice(_) => 2,
            Kind::Int { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::List(_) | Kind::ThrottledReplicas => 7,
        }
    }
}

/// What a config does on Runnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Acted on as Kafka does.
    Applied,
    /// Stored and shown, not acted on yet: the text says what will act on it.
    NotYet(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Kafka's default, as DescribeConfigs shows it.
    pub default: &'static str,
    pub doc: &'static str,
    pub effect: Effect,
}

const L: i64 = i64::MAX;

const fn def(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    doc: &'static str,
    effect: Effect,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        default,
        doc,
        effect,
    }
}

const TIERED: Effect = Effect::NotYet("tiered storage (not planned)");

/// Kafka 4.x's topic configs, by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", Kind::List(&["compact", "delete"]), "delete",
        "delete: old segments go by retention.ms/bytes. compact: the latest record per key is kept (until compaction exists, a topic without delete keeps everything).",
        Effect::Applied),
    def("compression.gzip.level", Kind::Int { min: -1, max: 9 }, "-1",
        "gzip level when the broker recompresses to gzip.", Effect::Applied),
    def("compression.lz4.level", Kind::Int { min: 1, max: 17 }, "9",
        "lz4 level when the broker recompresses to lz4.", Effect::Applied),
    def("compression.type", Kind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]), "producer",
        "The codec batches are stored with; producer keeps the producer's.", Effect::Applied),
    def("compression.zstd.level", Kind::Int { min: -131072, max: 22 }, "3",
        "zstd level when the broker recompresses to zstd.", Effect::Applied),
    def("delete.retention.ms", Kind::Long { min: 0, max: L }, "86400000",
        "How long a tombstone stays once its segment is compacted.", Effect::Applied),
    def("errors.deadletterqueue.group.enable", Kind::Bool, "false",
        "Whether share groups may write this topic's undeliverable records to a dead-letter queue.",
        Effect::NotYet("share groups (KIP-932), which Runnel does not have")),
    def("file.delete.delay.ms", Kind::Long { min: 0, max: L }, "60000",
        "How long a deleted segment's files wait (renamed *.deleted) before they go.", Effect::Applied),
    def("flush.messages", Kind::Long { min: 1, max: L }, "9223372036854775807",
        "fdatasync after this many records.", Effect::Applied),
    def("flush.ms", Kind::Long { min: 0, max: L }, "9223372036854775807",
        "fdatasync data older than this.", Effect::Applied),
    def("follower.replication.throttled.replicas", Kind::ThrottledReplicas, "",
        "Replicas whose follower fetches are throttled.", Effect::NotYet("per-replica throttle lists (the throttles apply to replicas a reassignment adds)")),
    def("index.interval.bytes", Kind::Int { min: 0, max: i32::MAX }, "4096",
        "Bytes between offset index entries.", Effect::Applied),
    def("leader.replication.throttled.replicas", Kind::ThrottledReplicas, "",
        "Replicas whose fetches from the leader are throttled.", Effect::NotYet("per-replica throttle lists (the throttles apply to replicas a reassignment adds)")),
    def("local.retention.bytes", Kind::Long { min: -2, max: L }, "-2",
        "Local retention with tiered storage.", TIERED),
    def("local.retention.ms", Kind::Long { min: -2, max: L }, "-2",
        "Local retention with tiered storage.", TIERED),
    def("max.compaction.lag.ms", Kind::Long { min: 1, max: L }, "9223372036854775807",
        "The longest a record stays uncompacted.", Effect::Applied),
    def("max.decompressed.message.bytes", Kind::Int { min: 0, max: i32::MAX }, "2147483639",
        "The largest a record batch may be once decompressed.",
        Effect::NotYet("a fixed 64 MiB bound on what the broker inflates (recompression)")),
    def("max.message.bytes", Kind::Int { min: 0, max: i32::MAX }, "1048588",
        "The largest record batch accepted.", Effect::Applied),
    def("message.timestamp.after.max.ms", Kind::Long { min: 0, max: L }, "3600000",
        "How far in the future a record's timestamp may be (CreateTime).", Effect::Applied),
    def("message.timestamp.before.max.ms", Kind::Long { min: 0, max: L }, "9223372036854775807",
        "How far in the past a record's timestamp may be (CreateTime).", Effect::Applied),
    def("message.timestamp.type", Kind::Choice(&["CreateTime", "LogAppendTime"]), "CreateTime",
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's.", Effect::Applied),
    def("min.cleanable.dirty.ratio", Kind::Double { min: 0.0, max: 1.0 }, "0.5",
        "How much of a log must be uncompacted before it is compacted.", Effect::Applied),
    def("min.compaction.lag.ms", Kind::Long { min: 0, max: L }, "0",
        "The shortest a record stays uncompacted.", Effect::Applied),
    def("min.insync.replicas", Kind::Int { min: 1, max: i16::MAX as i32 }, "1",
        "In-sync replicas an acks=all produce needs.", Effect::Applied),
    def("preallocate", Kind::Bool, "false",
        "Reserve a new segment's blocks when it is created.", Effect::Applied),
    def("remote.copy.lag.bytes", Kind::Long { min: -1, max: L }, "-1",
        "Tiered storage copy lag.", TIERED),
    def("remote.copy.lag.ms", Kind::Long { min: -1, max: L }, "0",
        "Tiered storage copy lag.", TIERED),
    def("remote.log.copy.disable", Kind::Bool, "false",
        "Tiered storage: stop copying.", TIERED),
    def("remote.log.delete.on.disable", Kind::Bool, "false",
        "Tiered storage: delete remote data when disabled.", TIERED),
    def("remote.storage.enable", Kind::Bool, "false",
        "Tiered storage (refused: this broker has none).", TIERED),
    def("retention.bytes", Kind::Long { min: i64::MIN, max: L }, "-1",
        "Delete the oldest segments while a partition is larger; -1: no limit.", Effect::Applied),
    def("retention.ms", Kind::Long { min: -1, max: L }, "604800000",
        "Delete segments whose newest record is older; -1 keeps forever.", Effect::Applied),
    def("segment.bytes", Kind::Int { min: crate::MIN_SEGMENT_BYTES as i32, max: i32::MAX }, "1073741824",
        "Roll the active segment before it grows past this.", Effect::Applied),
    def("segment.index.bytes", Kind::Int { min: 4, max: i32::MAX }, "10485760",
        "The most an offset or time index file of a segment holds: the segment rolls when one is full.", Effect::Applied),
    def("segment.jitter.ms", Kind::Long { min: 0, max: L }, "0",
        "A random amount taken off segment.ms per segment.", Effect::Applied),
    def("segment.ms", Kind::Long { min: 1, max: L }, "604800000",
        "Roll the active segment once its first record is this old.", Effect::Applied),
    def("unclean.leader.election.enable", Kind::Bool, "false",
        "Elect a replica outside the ISR rather than stay offline (loses records).", Effect::Applied),
];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a topic config as Kafka does and returns its value as stored: list items
/// trimmed, booleans in lower case.
pub fn normalize_topic_config(key: &str, value: &str) -> Result<String, String> {
    let Some(d) = topic_config_def(key) else {
        return Err(format!("unknown topic config {key:?}"));
    };
    let v = value.trim();
    let out = match d.kind {
        Kind::Long { min, max } => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => n.to_string(),
            _ => return Err(range(key, value, "an integer", min, max)),
        },
        Kind::Int { min, max } => match v.parse::<i32>() {
            Ok(n) if (min..=max).contains(&n) => n.to_string(),
            _ => return Err(range(key, value, "a 32-bit integer", min, max)),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            b @ ("true" | "false") => b.to_string(),
            _ => return Err(format!("{key} must be true or false, got {value:?}")),
        },
        Kind::Double { min, max } => match v.parse::<f64>() {
            Ok(n) if n >= min && n <= max => v.to_string(),
            _ => {
                return Err(format!(
                    "{key} must be a number in [{min}, {max}], got {value:?}"
                ))
            }
        },
        Kind::Choice(allowed) => match allowed.iter().find(|a| **a == v) {
            Some(a) => a.to_string(),
            None => return Err(format!("{key} must be one of {allowed:?}, got {value:?}")),
        },
        Kind::List(allowed) => {
            let items: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                return Err(format!("{key}: {bad:?} is not one of {allowed:?}"));
            }
            items.join(",")
        }
        Kind::ThrottledReplicas => {
            let items: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let ok = items == ["*"]
                || items.iter().all(|i| {
                    i.split_once(':').is_some_and(|(p, b)| {
                        p.parse::<i32>().is_ok_and(|p| p >= 0)
                            && b.parse::<i32>().is_ok_and(|b| b >= 0)
                    })
                });
            if !ok {
                return Err(format!(
                    "{key} must be * or a list of partition:broker, got {value:?}"
                ));
            }
            items.join(",")
        }
    };
    if key == "remote.storage.enable" && out == "true" {
        return Err(
            "tiered storage is not available on this broker (remote.storage.enable)".into(),
        );
    }
    Ok(out)
}

fn range(key: &str, value: &str, what: &str, min: impl ToString, max: impl ToString) -> String {
    format!(
        "{key} must be {what} between {} and {}, got {value:?}",
        min.to_string(),
        max.to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_normalized_as_kafka_does() {
        let ok = |k: &str, v: &str| normalize_topic_config(k, v).unwrap();
        let bad = |k: &str, v: &str| normalize_topic_config(k, v).unwrap_err();
        assert_eq!(ok("cleanup.policy", "compact, delete"), "compact,delete");
        assert_eq!(ok("cleanup.policy", ""), "");
        bad("cleanup.policy", "compact,shred");
        assert_eq!(ok("preallocate", "TRUE"), "true");
        bad("preallocate", "yes");
        assert_eq!(ok("retention.ms", "-1"), "-1");
        bad("retention.ms", "-2");
        bad("segment.index.bytes", "3");
        bad("max.message.bytes", "3000000000");
        assert_eq!(ok("min.cleanable.dirty.ratio", "0.25"), "0.25");
        bad("min.cleanable.dirty.ratio", "1.5");
        assert_eq!(ok("compression.type", "lz4"), "lz4");
        bad("compression.type", "LZ4x");
        assert_eq!(
            ok("leader.replication.throttled.replicas", "0:1, 1:2"),
            "0:1,1:2"
        );
        assert_eq!(ok("follower.replication.throttled.replicas", "*"), "*");
        bad("leader.replication.throttled.replicas", "0-1");
        bad("remote.storage.enable", "true");
        assert_eq!(ok("remote.storage.enable", "false"), "false");
        bad("no.such.config", "1");
        // Every default passes its own check, and no two names repeat.
        for d in TOPIC_CONFIGS {
            normalize_topic_config(d.name, d.default).unwrap();
        }
        let mut names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        names.dedup();
        assert_eq!(names.len(), TOPIC_CONFIGS.len());
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    }
}
