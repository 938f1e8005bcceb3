//! Committed offsets in `__consumer_offsets` on the partition logs (the record layout is
//! [`runnel_group::offsets`]): appending commits, replaying a partition on start, and
//! compacting a partition grown well past its live content by appending the live offsets
//! again and moving the log start offset to them, so replay stays proportional to what is
//! live.

use bytes::BytesMut;
use runnel_group::offsets::{decode_key, decode_value, encode_key, encode_value};
use runnel_group::offsets::{Committed, OffsetKey};
use runnel_log::{Log, LogError};
use runnel_record::{Batches, Records, HEADER_LEN};
use std::collections::HashMap;

/// Compact when the log holds this many times the live records' bytes (and at least
/// COMPACT_MIN_BYTES).
const COMPACT_RATIO: u64 = 4;
pub const COMPACT_MIN_BYTES: u64 = 16 << 20;
/// Records per batch when writing (commits and compaction dumps).
const RECORDS_PER_BATCH: usize = 2000;
/// Appends commits (Some) and deletions (None) to the group's partition.
pub async fn append(
    log: &Log,
    records: &[(OffsetKey, Option<Committed>)],
    txn: Option<(i64, i16)>,
    durable: bool,
) -> Result<runnel_log::AppendInfo, LogError> {
    let mut buf = BytesMut::new();
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let now = chunk
            .iter()
            .filter_map(|(_, c)| c.as_ref().map(|c| c.commit_ms))
            .max()
            .unwrap_or(0);
        let mut b = runnel_record::builder::BatchBuilder::new(now);
        if let Some((pid, epoch)) = txn {
            // TxnOffsetCommit: the producer's transactional batch, held pending until its
            // marker (Kafka's coordinator writes them the same way).
            b = b.producer(pid, epoch, -1).transactional();
        }
        for (k, v) in chunk {
            let key = encode_key(k);
            let value = v.as_ref().map(encode_value);
            b.append(now, Some(&key), value.as_deref(), &[]);
        }
        buf.extend_from_slice(&b.build());
    }
    let origin = match txn {
        Some(_) => runnel_log::Origin::Coordinator,
        None => runnel_log::Origin::Client,
    };
    log.append_checked(buf, durable, origin).await
}

/// What a partition holds: the live committed offsets, and per producer id the offsets of
/// transactions with no marker yet.
#[derive(Default)]
pub struct Replayed {
    pub live: HashMap<OffsetKey, Committed>,
    pub pending: HashMap<i64, Vec<(OffsetKey, Committed)>>,
}

/// Calls `f(header, key, value)` for every record of an internal topic's partition, and
/// `f(header, None, None)` once for each control batch (a transaction marker: the header
/// and the batch say which), from the log start to the log end: what a coordinator
/// replays when it starts to lead the partition.
pub async fn for_each_record(
    log: &Log,
    mut f: impl FnMut(&runnel_record::BatchHeader, Option<&[u8]>, Option<&[u8]>),
) -> Result<(), LogError> {
    for_each_batch(log, |h, batch| {
        if h.is_control() {
            f(h, None, None);
            return;
        }
        for r in Records::new(&batch[HEADER_LEN..]).flatten() {
            f(h, r.key, r.value);
        }
    })
    .await
}

/// Calls `f(header, batch bytes)` for every batch from the log start to the log end.
async fn for_each_batch(
    log: &Log,
    mut f: impl FnMut(&runnel_record::BatchHeader, &[u8]),
) -> Result<(), LogError> {
    let mut offset = log.log_start_offset();
    // To the log end, past the high watermark: a new leader's log is what its followers
    // will hold (they truncate to it), and its high watermark may trail what the previous
    // leader acknowledged until the followers fetch again (Kafka's coordinator loads to the
    // log end too).
    let end = log.published_end();
    let ring = runnel_runtime::ring();
    while offset < end {
        let plan = log
            .read_upto(offset, 8 << 20, true, runnel_log::Upto::LogEnd)
            .await?;
        if plan.len == 0 {
            break;
        }
        let bytes = ring
            .read_at(&plan.file, plan.position, plan.len as usize)
            .await
            .map_err(|e| LogError::Io {
                op: "read an internal topic",
                path: log.dir().to_path_buf(),
                source: e,
            })?;
        for batch in Batches::new(&bytes) {
            let Ok((pos, h)) = batch else { break };
            offset = h.next_offset();
            f(&h, &bytes[pos..pos + h.total_len()]);
        }
    }
    Ok(())
}

/// Replays a partition from its log start: the live offsets it holds, and the offsets of
/// open transactions (a transactional batch's records wait for their producer's marker).
pub async fn replay(log: &Log) -> Result<Replayed, LogError> {
    let mut live = HashMap::new();
    let mut pending: HashMap<i64, Vec<(OffsetKey, Committed)>> = HashMap::new();
    for_each_batch(log, |h, batch| {
        if h.is_control() {
            let entries = pending.remove(&h.producer_id).unwrap_or_default();
            if runnel_record::control::marker_kind(batch).is_some_and(|m| m.commit) {
                live.extend(entries);
            }
            return;
        }
        let records = Records::new(&batch[HEADER_LEN..]).flatten();
        if h.is_transactional() {
            let entries = pending.entry(h.producer_id).or_default();
            for r in records {
                if let (Some(k), Some(c)) =
                    (r.key.and_then(decode_key), r.value.and_then(decode_value))
                {
                    entries.push((k, c));
                }
            }
            return;
        }
        for r in records {
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
    })
    .await?;
    Ok(Replayed { live, pending })
}

/// Rewrites the live offsets at the log end and moves the log start offset to them when
/// the partition holds much more than that (and at least `min_bytes`), so replay and disk
/// stay bounded. `live` must be the partition's whole applied state with no append of it
/// pending (the caller checks [`runnel_group::Coordinator::quiescent`]): the dump is queued
/// behind every earlier append before this function first yields.
///
/// The log start moves only once `replicated(last offset of the dump)` says every in-sync
/// replica has the dump: followers move their log start after the leader's, and one that
/// dropped the old records without the dump would, as the next leader, have lost them.
pub async fn maybe_compact(
    log: &Log,
    live: Vec<(OffsetKey, Committed)>,
    min_bytes: u64,
    replicated: impl AsyncFnOnce(i64) -> bool,
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
    let start = log.high_watermark();
    let records: Vec<(OffsetKey, Option<Committed>)> =
        live.into_iter().map(|(k, c)| (k, Some(c))).collect();
    if !records.is_empty() {
        let info = append(log, &records, None, true).await?;
        if !replicated(info.last_offset).await {
            return Ok(false);
        }
    }
    log.delete_records(start).await?;
    log.roll().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_group::offsets::TOPIC;
    use std::sync::Arc;

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
                append(&log, &records, None, false).await.unwrap();
            }
            append(
                &log,
                &[(("gone".to_string(), Arc::from("t"), 0), None)],
                None,
                false,
            )
            .await
            .unwrap();
            let before = replay(&log).await.unwrap().live;
            assert_eq!(before.len(), 10);
            let size = log.size_bytes();
            // Below the size threshold nothing happens.
            let live: Vec<_> = before.clone().into_iter().collect();
            assert!(!maybe_compact(&log, live.clone(), size * 2, async |_| true)
                .await
                .unwrap());
            assert!(maybe_compact(&log, live, 1024, async |_| true)
                .await
                .unwrap());
            assert!(log.log_start_offset() > 0, "old records dropped");
            // Whole segments below the new log start go; at most the one holding it stays.
            assert!(
                log.size_bytes() < size / 4,
                "{} of {size} bytes left",
                log.size_bytes()
            );
            assert_eq!(
                replay(&log).await.unwrap().live,
                before,
                "replay after compaction"
            );
            // Commits after the compaction still win.
            append(&log, &[commit("g1", 3, 999)], None, false)
                .await
                .unwrap();
            let key = ("g1".to_string(), Arc::from("t"), 3);
            assert_eq!(replay(&log).await.unwrap().live[&key].offset, 999);
            // Transactional offsets wait for their marker: an abort drops them, a commit
            // applies them.
            append(&log, &[commit("g1", 3, 1000)], Some((77, 0)), false)
                .await
                .unwrap();
            let r = replay(&log).await.unwrap();
            assert_eq!((r.live[&key].offset, r.pending[&77].len()), (999, 1));
            log.append_marker(77, 0, false, 0, false).await.unwrap();
            let r = replay(&log).await.unwrap();
            assert_eq!((r.live[&key].offset, r.pending.len()), (999, 0));
            append(&log, &[commit("g1", 3, 1001)], Some((77, 0)), false)
                .await
                .unwrap();
            log.append_marker(77, 0, true, 0, false).await.unwrap();
            assert_eq!(replay(&log).await.unwrap().live[&key].offset, 1001);
        });
    }
}
