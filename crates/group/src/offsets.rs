//! The `__consumer_offsets` records, in Kafka's own schemas so Kafka's tools read them
//! (kafka-console-consumer's OffsetsMessageFormatter): every commit is a record appended to
//! the partition its group hashes to, and a null value deletes. The topic is compacted by
//! the log cleaner, which keeps each key's latest record.
//!
//! Record layout (big-endian; STRING: i16 length + UTF-8):
//! ```text
//! key   = OffsetCommitKey:   record type i16 (1) | group STRING | topic STRING | partition i32
//! value = OffsetCommitValue: version i16 (3) | offset i64 | leader epoch i32 | metadata STRING | commit ms i64
//! ```
//! Kafka 4 writes value version 3 (1 only for a commit with an expiry time, which Runnel
//! does not keep). Versions 0, 2, 3 and 4 are read as Kafka defines them; version 1 is read
//! as the layout Runnel wrote before it used Kafka's (offset, leader epoch, commit ms, a
//! nullable metadata), which Runnel therefore never writes again.

use std::sync::Arc;

pub const TOPIC: &str = "__consumer_offsets";
/// Kafka's offsets.topic.num.partitions.
pub const DEFAULT_PARTITIONS: i32 = 50;

/// (group, topic, partition)
pub type OffsetKey = (String, Arc<str>, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// The `__consumer_offsets` partition of a group (FNV-1a: the same in every process).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (runnel_metadata::placement::fnv1a(group.as_bytes()) % partitions.max(1) as u64) as i32
}

/// OffsetCommitKey's record type.
const KEY_TYPE: i16 = 1;
/// Kafka 4's LegacyOffsetCommitKey (read only).
const LEGACY_KEY_TYPE: i16 = 0;
/// The OffsetCommitValue version written.
const VALUE_VERSION: i16 = 3;
/// Runnel's own value layout before Kafka's (read only; see the module comment).
const OLD_VALUE_VERSION: i16 = 1;
/// The longest group id, topic name or metadata a Kafka STRING holds.
pub const MAX_STRING: usize = i16::MAX as usize;

/// A Kafka STRING; longer strings are cut at a character boundary (group ids and metadata
/// are bounded before they get here: MAX_METADATA_BYTES, and the request's own STRINGs).
fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len().min(MAX_STRING);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.extend_from_slice(&(n as i16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..n]);
}

pub fn encode_key(k: &OffsetKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + k.0.len() + k.1.len());
    out.extend_from_slice(&KEY_TYPE.to_be_bytes());
    put_string(&mut out, &k.0);
    put_string(&mut out, &k.1);
    out.extend_from_slice(&k.2.to_be_bytes());
    out
}

/// OffsetCommitValue v3. A commit without metadata stores "" (Kafka's NO_METADATA).
pub fn encode_value(c: &Committed) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_string(&mut out, c.metadata.as_deref().unwrap_or(""));
    out.extend_from_slice(&c.commit_ms.to_be_bytes());
    out
}

/// Whether a value is in the layout Runnel wrote before Kafka's (to be written again).
pub fn is_old_value(b: &[u8]) -> bool {
    b.get(..2) == Some(&OLD_VALUE_VERSION.to_be_bytes()[..])
}

/// Reads big-endian fields off the front of a record's key or value (the transaction log's
/// records too); None when the bytes run out.
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl Cursor<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A Kafka STRING: an i16 length (negative: none) and UTF-8.
    pub(crate) fn kafka_string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// An offset commit's key; None for any other record type (Kafka's group metadata and
/// KIP-848 records, which Runnel does not write).
pub fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let mut c = Cursor(b);
    if !matches!(c.i16()?, KEY_TYPE | LEGACY_KEY_TYPE) {
        return None;
    }
    let group = c.kafka_string()?;
    let topic = c.kafka_string()?;
    let partition = c.i32()?;
    Some((group, topic.into(), partition))
}

pub fn decode_value(b: &[u8]) -> Option<Committed> {
    let mut c = Cursor(b);
    let version = c.i16()?;
    let (offset, leader_epoch, metadata, commit_ms) = match version {
        OLD_VALUE_VERSION => {
            let offset = c.i64()?;
            let leader_epoch = c.i32()?;
            let commit_ms = c.i64()?;
            let metadata = match c.i16()? {
                n if n < 0 => None,
                n => Some(String::from_utf8(c.take(n as usize)?.to_vec()).ok()?),
            };
            (offset, leader_epoch, metadata, commit_ms)
        }
        0 | 2 => {
            let offset = c.i64()?;
            let metadata = c.kafka_string()?;
            (offset, -1, Some(metadata), c.i64()?)
        }
        // (Version 4 adds tagged fields after these, which nothing here needs.)
        3 | 4 => {
            let offset = c.i64()?;
            let leader_epoch = c.i32()?;
            let metadata = c.kafka_string()?;
            (offset, leader_epoch, Some(metadata), c.i64()?)
        }
        _ => return None,
    };
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_ms,
    })
}

/// The topics of a consumer protocol Subscription (ConsumerProtocolSubscription: version
/// i16, topics [string], ...), for OffsetDelete's "still subscribed" check.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut c = Cursor(metadata);
    let mut out = Vec::new();
    let Some(_version) = c.i16() else {
        return out;
    };
    let Some(n) = c.i32() else { return out };
    for _ in 0..n.clamp(0, 100_000) {
        let Some(len) = c.i16() else { break };
        let Some(b) = c.take(len.max(0) as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(b).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_in_kafkas_schemas() {
        let k: OffsetKey = ("group-1".into(), "orders".into(), 7);
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        for metadata in [Some(String::new()), Some("m".repeat(300))] {
            let c = Committed {
                offset: 42,
                leader_epoch: 3,
                metadata,
                commit_ms: 1_700_000_000_000,
            };
            assert_eq!(decode_value(&encode_value(&c)), Some(c));
        }
        // No metadata is stored as "", as Kafka does.
        let none = Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 5,
        };
        assert_eq!(
            decode_value(&encode_value(&none))
                .unwrap()
                .metadata
                .as_deref(),
            Some("")
        );
        // Kafka's OffsetCommitKey / OffsetCommitValue v3, byte for byte.
        assert_eq!(
            encode_key(&("g".into(), "t".into(), 2)),
            [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]
        );
        let v = encode_value(&Committed {
            offset: 9,
            leader_epoch: 4,
            metadata: Some("m".into()),
            commit_ms: 7,
        });
        let want: Vec<u8> = [
            &[0, 3][..],
            &9i64.to_be_bytes(),
            &4i32.to_be_bytes(),
            &[0, 1, b'm'],
            &7i64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(v, want);
        assert_eq!(
            decode_key(&[0, 2, 0]),
            None,
            "group metadata keys are not offsets"
        );
        assert_eq!(decode_value(&[0, 3, 0]), None);
    }

    #[test]
    fn values_in_runnels_old_layout_and_kafkas_older_versions_are_read() {
        let mut old = vec![0, 1];
        old.extend_from_slice(&42i64.to_be_bytes());
        old.extend_from_slice(&(-1i32).to_be_bytes());
        old.extend_from_slice(&1_700i64.to_be_bytes());
        old.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(is_old_value(&old));
        assert_eq!(
            decode_value(&old),
            Some(Committed {
                offset: 42,
                leader_epoch: -1,
                metadata: None,
                commit_ms: 1_700
            })
        );
        let mut v2 = vec![0, 2];
        v2.extend_from_slice(&8i64.to_be_bytes());
        v2.extend_from_slice(&[0, 2, b'h', b'i']);
        v2.extend_from_slice(&9i64.to_be_bytes());
        assert_eq!(
            decode_value(&v2),
            Some(Committed {
                offset: 8,
                leader_epoch: -1,
                metadata: Some("hi".into()),
                commit_ms: 9
            })
        );
        assert!(!is_old_value(&v2));
    }

    #[test]
    fn groups_spread_over_partitions_stably() {
        assert_eq!(partition_for("g", 50), partition_for("g", 50));
        let used: std::collections::HashSet<i32> = (0..500)
            .map(|i| partition_for(&format!("group-{i}"), 50))
            .collect();
        assert!(used.len() > 40);
    }

    #[test]
    fn consumer_subscription_topics() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["a", "bc"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            subscribed_topics(&m),
            vec!["a".to_string(), "bc".to_string()]
        );
        assert!(subscribed_topics(&[1]).is_empty());
    }
}
