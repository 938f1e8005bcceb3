//! Committed offsets in `__consumer_offsets` on the partition logs (Kafka's record schemas,
//! [`runnel_group::offsets`]): appending commits and replaying a partition when this broker
//! starts to lead it. The topic is compacted by the log cleaner like any compacted topic,
//! so replay stays proportional to what is live.

use bytes::BytesMut;
use runnel_group::offsets::{decode_key, decode_value, encode_key, encode_value, is_old_value};
use runnel_group::offsets::{Committed, OffsetKey};
use runnel_log::{Log, LogError};
use runnel_record::{Batches, Records, HEADER_LEN};
use std::collections::HashMap;

/// Records per batch when writing.
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
        // The commit time (the broker's clock); a batch of deletions only gets the clock
        // now, so the cleaner's lags and horizons measure real time.
        let now = chunk
            .iter()
            .filter_map(|(_, c)| c.as_ref().map(|c| c.commit_ms))
            .max()
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
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
    /// Some value was in the layout Runnel wrote before Kafka's: the live offsets are to be
    /// written again in Kafka's (the cleaner then drops the old records, same keys).
    pub old_format: bool,
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
    let mut old_format = false;
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
            for r in records {
                if let (Some(k), Some(c)) =
                    (r.key.and_then(decode_key), r.value.and_then(decode_value))
                {
                    old_format |= r.value.is_some_and(is_old_value);
                    pending.entry(h.producer_id).or_default().push((k, c));
                }
            }
            return;
        }
        for r in records {
            let Some(key) = r.key.and_then(decode_key) else {
                continue;
            };
            match r.value {
                None => {
                    live.remove(&key);
                }
                Some(v) => {
                    // (A value of a version this broker does not know is left alone.)
                    if let Some(c) = decode_value(v) {
                        old_format |= is_old_value(v);
                        live.insert(key, c);
                    }
                }
            }
        }
    })
    .await?;
    Ok(Replayed {
        live,
        pending,
        old_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_group::offsets::TOPIC;
    use runnel_log::clean::{CleanContext, OffsetMap, Throttle};
    use std::sync::Arc;

    #[test]
    fn offsets_in_an_older_runnels_layout_are_read_and_flagged_for_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("__consumer_offsets-0");
        runnel_runtime::run_local(move || async move {
            let log = Log::open(&path, TOPIC, 0, Default::default(), Default::default())
                .await
                .unwrap();
            let key = encode_key(&("g".into(), Arc::from("t"), 0));
            let mut old = vec![0, 1];
            old.extend_from_slice(&41i64.to_be_bytes());
            old.extend_from_slice(&(-1i32).to_be_bytes());
            old.extend_from_slice(&5i64.to_be_bytes());
            old.extend_from_slice(&(-1i16).to_be_bytes());
            let mut b = runnel_record::builder::BatchBuilder::new(5);
            b.append(5, Some(&key), Some(&old), &[]);
            log.append(BytesMut::from(&b.build()[..]), false)
                .await
                .unwrap();
            let r = replay(&log).await.unwrap();
            assert!(r.old_format);
            assert_eq!(r.live.values().next().map(|c| c.offset), Some(41));
            // Written again in Kafka's layout: the same key, a v3 value, no longer old.
            let records: Vec<_> = r.live.into_iter().map(|(k, c)| (k, Some(c))).collect();
            append(&log, &records, None, false).await.unwrap();
            let mut values = Vec::new();
            for_each_record(&log, |_, _, v| values.push(v.map(<[u8]>::to_vec)))
                .await
                .unwrap();
            assert_eq!(values.last().unwrap().as_ref().unwrap()[..2], [0, 3]);
        });
    }

    #[test]
    fn a_million_commits_to_100_group_partitions_are_cleaned_down_to_about_100_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("__consumer_offsets-0");
        runnel_runtime::run_local(move || async move {
            let config = runnel_log::LogConfig {
                compact: true,
                delete: false,
                segment_bytes: 16 << 20,
                ..Default::default()
            };
            let log = Log::open(&path, TOPIC, 0, config, Default::default())
                .await
                .unwrap();
            let keys: Vec<OffsetKey> = (0..100)
                .map(|i| (format!("group-{}", i % 10), Arc::from("orders"), i / 10))
                .collect();
            // 10,000 commits of each of the 100 group-partitions, 2,000 records an append,
            // with a group deleted halfway and committing again after.
            for round in (0..10_000i64).step_by(20) {
                let mut records = Vec::with_capacity(2_000);
                for r in round..round + 20 {
                    for k in &keys {
                        let c = Committed {
                            offset: r,
                            leader_epoch: -1,
                            metadata: Some(String::new()),
                            commit_ms: 1_700_000_000_000 + r,
                        };
                        let deleted = k.0 == "group-3" && (5_000..5_100).contains(&r);
                        records.push((k.clone(), (!deleted).then_some(c)));
                    }
                }
                append(&log, &records, None, false).await.unwrap();
            }
            log.roll().await.unwrap();
            assert!(log.size_bytes() > 30 << 20);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let range = log.cleanable(now).await.unwrap().expect("dirty");
            let mut map = OffsetMap::new(128 << 20, (range.end - range.first_dirty) as u64);
            let mut throttle = Throttle::new(f64::INFINITY);
            let stats = log
                .clean(
                    range,
                    &mut CleanContext {
                        now_ms: now,
                        map: &mut map,
                        throttle: &mut throttle,
                        crash_after: None,
                    },
                )
                .await
                .unwrap();
            assert!(stats.records_removed >= 999_800, "{stats:?}");
            let mut records = 0;
            for_each_record(&log, |_, key, _| records += usize::from(key.is_some()))
                .await
                .unwrap();
            assert!((100..=110).contains(&records), "{records} records left");
            assert!(
                log.size_bytes() < 64 << 10,
                "{} bytes left",
                log.size_bytes()
            );
            let replayed = replay(&log).await.unwrap();
            assert_eq!(replayed.live.len(), 100);
            assert!(replayed.live.values().all(|c| c.offset == 9_999));
            assert!(!replayed.old_format);
        });
    }
}
