//! Committed offsets in `__consumer_offsets`, Runnel's own internal topic: every commit is
//! a record (key: group, topic, partition; value: offset, leader epoch, commit time,
//! metadata; a null value deletes), appended to the partition its group hashes to. On start
//! each shard replays its partitions; a partition grown well past its live content is
//! compacted by appending the live offsets again and moving the log start offset to them,
//! so replay stays proportional to what is live.
//!
//! Record layout (big-endian):
//! ```text
//! key   = version u16 (1) | group: u16 len + UTF-8 | topic: u16 len + UTF-8 | partition i32
//! value = version u16 (1) | offset i64 | leader epoch i32 | commit ms i64 | metadata: i16 len (-1: null) + UTF-8
//! ```

use bytes::BytesMut;
use runnel_log::{Log, LogError};
use runnel_record::{Batches, Records, HEADER_LEN};
use std::collections::HashMap;
use std::sync::Arc;

pub const TOPIC: &str = "__consumer_offsets";
/// Kafka's offsets.topic.num.partitions.
pub const DEFAULT_PARTITIONS: i32 = 50;
/// Compact when the log holds this many times the live records' bytes (and at least
/// COMPACT_MIN_BYTES).
const COMPACT_RATIO: u64 = 4;
pub const COMPACT_MIN_BYTES: u64 = 16 << 20;
/// Records per batch when writing (commits and compaction dumps).
const RECORDS_PER_BATCH: usize = 2000;

/// (group, topic, partition)
pub type OffsetKey = (String, Arc<str>, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// The `__consumer_offsets` partition of a group.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in group.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % partitions.max(1) as u64) as i32
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

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
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

/// Appends commits (Some) and deletions (None) to the group's partition.
pub async fn append(
    log: &Log,
    records: &[(OffsetKey, Option<Committed>)],
    durable: bool,
) -> Result<(), LogError> {
    let mut buf = BytesMut::new();
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let now = chunk
            .iter()
            .filter_map(|(_, c)| c.as_ref().map(|c| c.commit_ms))
            .max()
            .unwrap_or(0);
        let mut b = runnel_record::builder::BatchBuilder::new(now);
        for (k, v) in chunk {
            let key = encode_key(k);
            let value = v.as_ref().map(encode_value);
            b.append(now, Some(&key), value.as_deref(), &[]);
        }
        buf.extend_from_slice(&b.build());
    }
    log.append(buf, durable).await.map(|_| ())
}

/// Replays a partition from its log start: the live offsets it holds.
pub async fn replay(log: &Log) -> Result<HashMap<OffsetKey, Committed>, LogError> {
    let mut live = HashMap::new();
    let mut offset = log.log_start_offset();
    let end = log.high_watermark();
    let ring = runnel_runtime::ring();
    while offset < end {
        let plan = log.read(offset, 8 << 20, true).await?;
        if plan.len == 0 {
            break;
        }
        let bytes = ring
            .read_at(&plan.file, plan.position, plan.len as usize)
            .await
            .map_err(|e| LogError::Io {
                op: "read __consumer_offsets",
                path: log.dir().to_path_buf(),
                source: e,
            })?;
        for batch in Batches::new(&bytes) {
            let Ok((pos, h)) = batch else { break };
            offset = h.next_offset();
            let records = &bytes[pos + HEADER_LEN..pos + h.total_len()];
            for r in Records::new(records).flatten() {
                let Some(key) = r.key.and_then(decode_key) else {
                    continue;
                };
                match r.value.and_then(decode_value) {
                    Some(c) => {
                        live.insert(key, c);
                    }
                    None => {
                        live.remove(&key);
                    }
                }
            }
        }
    }
    Ok(live)
}

/// Rewrites the live offsets at the log end and moves the log start offset to them when
/// the partition holds much more than that (and at least `min_bytes`), so replay and disk
/// stay bounded. `live` must be the partition's whole applied state with no append of it
/// pending (the caller checks [`crate::group::Coordinator::quiescent`]): the dump is queued
/// behind every earlier append before this function first yields.
pub async fn maybe_compact(
    log: &Log,
    live: Vec<(OffsetKey, Committed)>,
    min_bytes: u64,
) -> Result<bool, LogError> {
    let live_bytes: u64 = live
        .iter()
        .map(|(k, c)| {
            24 + k.0.len() as u64
                + k.1.len() as u64
                + 32
                + c.metadata.as_ref().map_or(0, |m| m.len() as u64)
        })
        .sum();
    let size = log.size_bytes();
    if size < min_bytes.max(live_bytes * COMPACT_RATIO) {
        return Ok(false);
    }
    let start = log.log_end_offset();
    let records: Vec<(OffsetKey, Option<Committed>)> =
        live.into_iter().map(|(k, c)| (k, Some(c))).collect();
    if !records.is_empty() {
        append(log, &records, true).await?;
    }
    log.delete_records(start).await?;
    log.roll().await?;
    Ok(true)
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
    fn compaction_keeps_exactly_the_live_offsets_and_bounds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("__consumer_offsets-0");
        runnel_runtime::run_local(move || async move {
            let config = runnel_log::LogConfig {
                segment_bytes: 8 << 10,
                ..Default::default()
            };
            let log = Log::open(&path, TOPIC, 0, config, Default::default())
                .await
                .unwrap();
            let commit = |g: &str, p: i32, offset: i64| {
                (
                    (g.to_string(), Arc::<str>::from("t"), p),
                    Some(Committed {
                        offset,
                        leader_epoch: -1,
                        metadata: None,
                        commit_ms: offset,
                    }),
                )
            };
            // Many commits of few keys, and a group deleted along the way.
            for round in 0..200i64 {
                let mut records: Vec<_> = (0..10).map(|p| commit("g1", p, round)).collect();
                records.push(commit("gone", 0, round));
                append(&log, &records, false).await.unwrap();
            }
            append(
                &log,
                &[(("gone".to_string(), Arc::from("t"), 0), None)],
                false,
            )
            .await
            .unwrap();
            let before = replay(&log).await.unwrap();
            assert_eq!(before.len(), 10);
            let size = log.size_bytes();
            // Below the size threshold nothing happens.
            let live: Vec<_> = before.clone().into_iter().collect();
            assert!(!maybe_compact(&log, live.clone(), size * 2).await.unwrap());
            assert!(maybe_compact(&log, live, 1024).await.unwrap());
            assert!(log.log_start_offset() > 0, "old records dropped");
            // Whole segments below the new log start go; at most the one holding it stays.
            assert!(
                log.size_bytes() < size / 4,
                "{} of {size} bytes left",
                log.size_bytes()
            );
            assert_eq!(
                replay(&log).await.unwrap(),
                before,
                "replay after compaction"
            );
            // Commits after the compaction still win.
            append(&log, &[commit("g1", 3, 999)], false).await.unwrap();
            assert_eq!(
                replay(&log).await.unwrap()[&("g1".to_string(), Arc::from("t"), 3)].offset,
                999
            );
        });
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
