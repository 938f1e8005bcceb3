//! The `__consumer_offsets` record layout: every commit is a record (key: group, topic,
//! partition; value: offset, leader epoch, commit time, metadata; a null value deletes),
//! appended to the partition its group hashes to.
//!
//! Record layout (big-endian):
//! ```text
//! key   = version u16 (1) | group: u16 len + UTF-8 | topic: u16 len + UTF-8 | partition i32
//! value = version u16 (1) | offset i64 | leader epoch i32 | commit ms i64 | metadata: i16 len (-1: null) + UTF-8
//! ```

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

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn encode_key(k: &OffsetKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + k.0.len() + k.1.len());
    out.extend_from_slice(&1u16.to_be_bytes());
    put_str16(&mut out, &k.0);
    put_str16(&mut out, &k.1);
    out.extend_from_slice(&k.2.to_be_bytes());
    out
}

pub fn encode_value(c: &Committed) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    out.extend_from_slice(&c.commit_ms.to_be_bytes());
    match &c.metadata {
        Some(m) => {
            out.extend_from_slice(&(m.len() as i16).to_be_bytes());
            out.extend_from_slice(m.as_bytes());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    out
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
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
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
    /// A string with a u16 length (this module's layout).
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A Kafka STRING: an i16 length (negative: none) and UTF-8.
    pub(crate) fn kafka_string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

pub fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let mut c = Cursor(b);
    if c.u16()? != 1 {
        return None;
    }
    let group = c.str16()?;
    let topic = c.str16()?;
    let partition = c.i32()?;
    Some((group, topic.into(), partition))
}

pub fn decode_value(b: &[u8]) -> Option<Committed> {
    let mut c = Cursor(b);
    if c.u16()? != 1 {
        return None;
    }
    let offset = c.i64()?;
    let leader_epoch = c.i32()?;
    let commit_ms = c.i64()?;
    let n = c.i16()?;
    let metadata = if n < 0 {
        None
    } else {
        Some(String::from_utf8(c.take(n as usize)?.to_vec()).ok()?)
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
    fn keys_and_values_round_trip() {
        let k: OffsetKey = ("group-1".into(), "orders".into(), 7);
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        for metadata in [None, Some(String::new()), Some("m".repeat(300))] {
            let c = Committed {
                offset: 42,
                leader_epoch: -1,
                metadata,
                commit_ms: 1_700_000_000_000,
            };
            assert_eq!(decode_value(&encode_value(&c)), Some(c));
        }
        assert_eq!(decode_key(&[0, 2, 0]), None);
        assert_eq!(decode_value(&[0, 1, 0]), None);
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
