//! What the log cleaner does to one batch: read its records' keys, and rewrite it with only
//! the records it keeps.
//!
//! A rewritten batch keeps what Kafka's cleaner keeps (MemoryRecords.filterTo for magic 2):
//! the base offset and lastOffsetDelta (so offsets of the kept records, and the producer's
//! last sequence, do not move), the producer id, epoch and base sequence, the leader epoch,
//! the codec and the attributes. Kept records are copied as they are encoded; only when the
//! cleaner sets the batch's delete horizon (KIP-534: baseTimestamp then holds the horizon)
//! are their timestamp deltas re-encoded, so every record keeps its absolute timestamp.
//! A compressed batch is inflated (bounded) and compressed again with the same codec.

use crate::recompress::{deflate, inflate_owned, Codec};
use crate::records::with_timestamp_delta;
use crate::{header::ATTR_COMPRESSION_MASK, header::ATTR_DELETE_HORIZON, LOG_OVERHEAD};
use crate::{set_crc, BatchError, BatchHeader, RawRecords, TimestampType, HEADER_LEN};
use crate::{NO_TIMESTAMP, OFF_RECORD_COUNT};
use crate::{OFF_ATTRIBUTES, OFF_BASE_TIMESTAMP, OFF_BATCH_LENGTH, OFF_MAX_TIMESTAMP};

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerRecord<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// A null value: the key's deletion.
    pub tombstone: bool,
    /// Number of record headers.
    pub headers: usize,
}

/// What [`filter_batch`] made of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept and nothing to change: the batch's bytes stay as they are.
    Unchanged,
    /// No record kept.
    Empty,
    /// The batch with only the kept records.
    Rewritten(Vec<u8>),
}

fn records_of<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    max_inflated: usize,
    inflated: &'a mut Option<Vec<u8>>,
) -> Result<&'a [u8], BatchError> {
    *inflated = inflate_owned(header.compression()?, &batch[HEADER_LEN..], max_inflated)?;
    Ok(inflated.as_deref().unwrap_or(&batch[HEADER_LEN..]))
}

fn view<'a>(header: &BatchHeader, r: &crate::Record<'a>) -> CleanerRecord<'a> {
    CleanerRecord {
        offset: header.base_offset + i64::from(r.offset_delta),
        timestamp: header.base_timestamp.saturating_add(r.timestamp_delta),
        key: r.key,
        value: r.value,
        tombstone: r.value.is_none(),
        headers: r.headers.len(),
    }
}

/// Calls `f` for every record of `batch` (one whole batch), inflating a compressed one to at
/// most `max_inflated` bytes.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    max_inflated: usize,
    mut f: impl FnMut(&CleanerRecord<'_>),
) -> Result<(), BatchError> {
    let mut inflated = None;
    for r in RawRecords::new(records_of(batch, header, max_inflated, &mut inflated)?) {
        let (r, _) = r?;
        f(&view(header, &r));
    }
    Ok(())
}

/// Keeps the records of `batch` for which `keep` says so. `set_horizon`: the delete horizon
/// to record in the batch if it has none yet (the caller passes it when the batch keeps a
/// tombstone or is a transaction marker, as Kafka's cleaner does).
pub fn filter_batch(
    batch: &[u8],
    header: &BatchHeader,
    max_inflated: usize,
    mut keep: impl FnMut(&CleanerRecord<'_>) -> bool,
    set_horizon: Option<i64>,
) -> Result<Filtered, BatchError> {
    let mut set_horizon = set_horizon.filter(|_| header.delete_horizon().is_none());
    let mut inflated = None;
    let records = records_of(batch, header, max_inflated, &mut inflated)?;
    let mut kept: Vec<(i64, &[u8])> = Vec::new();
    let mut total = 0usize;
    for r in RawRecords::new(records) {
        let (r, raw) = r?;
        total += 1;
        let v = view(header, &r);
        if keep(&v) {
            kept.push((v.timestamp, raw));
        }
    }
    // A record timestamp too far from the horizon for a delta (a producer's wild
    // timestamp): no horizon for this batch, whose tombstones then stay.
    if let Some(h) = set_horizon {
        if kept.iter().any(|&(t, _)| t.checked_sub(h).is_none()) {
            set_horizon = None;
        }
    }
    if kept.is_empty() {
        return Ok(Filtered::Empty);
    }
    if kept.len() == total && set_horizon.is_none() {
        return Ok(Filtered::Unchanged);
    }
    let base_timestamp = set_horizon.unwrap_or(header.base_timestamp);
    let mut body = Vec::with_capacity(kept.iter().map(|(_, r)| r.len()).sum());
    for (timestamp, raw) in &kept {
        if set_horizon.is_some() {
            // (Checked above: no overflow.)
            body.extend_from_slice(&with_timestamp_delta(
                raw,
                timestamp.wrapping_sub(base_timestamp),
            )?);
        } else {
            body.extend_from_slice(raw);
        }
    }
    let codec = Codec {
        compression: header.compression()?,
        level: None,
    };
    let mut out = deflate(codec, &body, batch[..HEADER_LEN].to_vec())?;
    let max_timestamp = match header.timestamp_type() {
        TimestampType::LogAppendTime => header.max_timestamp,
        TimestampType::CreateTime => kept.iter().map(|&(t, _)| t).max().unwrap_or(NO_TIMESTAMP),
    };
    let mut attributes = header.attributes;
    if set_horizon.is_some() {
        attributes |= ATTR_DELETE_HORIZON;
    }
    finish_header(
        &mut out,
        attributes,
        base_timestamp,
        max_timestamp,
        kept.len() as i32,
    )?;
    Ok(Filtered::Rewritten(out))
}

/// A batch with no records in place of `header_bytes`' batch: what the cleaner keeps of a
/// producer's last batch when none of its records survive, so the producer's epoch and last
/// sequence stay known (Kafka's cleaner does the same). Offsets, producer fields and
/// timestamps are the original batch's; the codec is none (there is nothing to compress).
pub fn empty_batch(header_bytes: &[u8], header: &BatchHeader) -> Result<Vec<u8>, BatchError> {
    let mut out = header_bytes[..HEADER_LEN].to_vec();
    finish_header(
        &mut out,
        // (No records, so no codec and nothing for a delete horizon to remove.)
        header.attributes & !ATTR_COMPRESSION_MASK & !ATTR_DELETE_HORIZON,
        header.base_timestamp,
        header.max_timestamp,
        0,
    )?;
    Ok(out)
}

fn finish_header(
    out: &mut [u8],
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    record_count: i32,
) -> Result<(), BatchError> {
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::Inflate {
            reason: "cleaned batch is too large".into(),
        })?;
    out[OFF_BATCH_LENGTH..OFF_BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    out[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    out[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&record_count.to_be_bytes());
    set_crc(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::BatchBuilder;
    use crate::{verify_stored, Compression};

    fn batch(codec: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000).producer(7, 1, 10);
        b.append(1_000, Some(b"a"), Some(b"1"), &[]);
        b.append(1_005, Some(b"b"), None, &[(b"h", Some(b"v"))]);
        b.append(1_009, Some(b"a"), Some(b"2"), &[]);
        let mut out = b.build();
        crate::set_base_offset(&mut out, 100);
        if codec != Compression::None {
            let h = BatchHeader::parse(&out).unwrap();
            out = crate::recompress::recompress(
                &out,
                &h,
                Codec {
                    compression: codec,
                    level: None,
                },
                1 << 20,
            )
            .unwrap()
            .unwrap();
        }
        out
    }

    fn records(b: &[u8]) -> Vec<(i64, i64, Option<Vec<u8>>, bool)> {
        let h = verify_stored(b).unwrap();
        let mut out = Vec::new();
        for_each_record(b, &h, 1 << 20, |r| {
            out.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.tombstone,
            ))
        })
        .unwrap();
        out
    }

    #[test]
    fn kept_records_keep_offsets_timestamps_and_the_batch_its_producer_fields() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let b = batch(codec);
            let h = verify_stored(&b).unwrap();
            let out = filter_batch(&b, &h, 1 << 20, |r| r.offset != 100, None).unwrap();
            let Filtered::Rewritten(out) = out else {
                panic!("{out:?}")
            };
            let nh = verify_stored(&out).unwrap();
            assert_eq!(nh.base_offset, 100);
            assert_eq!(nh.last_offset_delta, 2);
            assert_eq!(nh.record_count, 2);
            assert_eq!(
                (nh.producer_id, nh.producer_epoch, nh.base_sequence),
                (7, 1, 10)
            );
            assert_eq!(nh.compression().unwrap(), codec);
            assert_eq!(nh.max_timestamp, 1_009);
            assert_eq!(
                records(&out),
                vec![
                    (101, 1_005, Some(b"b".to_vec()), true),
                    (102, 1_009, Some(b"a".to_vec()), false)
                ]
            );
        }
    }

    #[test]
    fn a_delete_horizon_moves_the_base_timestamp_but_no_record_timestamp() {
        let b = batch(Compression::None);
        let h = verify_stored(&b).unwrap();
        let Filtered::Rewritten(out) =
            filter_batch(&b, &h, 1 << 20, |_| true, Some(50_000)).unwrap()
        else {
            panic!()
        };
        let nh = verify_stored(&out).unwrap();
        assert_eq!(nh.delete_horizon(), Some(50_000));
        assert_eq!(
            records(&out).iter().map(|r| r.1).collect::<Vec<_>>(),
            vec![1_000, 1_005, 1_009]
        );
        // Set once: a later pass leaves it.
        assert_eq!(
            filter_batch(&out, &nh, 1 << 20, |_| true, Some(90_000)).unwrap(),
            Filtered::Unchanged
        );
    }

    #[test]
    fn all_kept_is_unchanged_none_kept_is_empty_and_an_empty_batch_keeps_the_producer() {
        let b = batch(Compression::Gzip);
        let h = verify_stored(&b).unwrap();
        assert_eq!(
            filter_batch(&b, &h, 1 << 20, |_| true, None).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&b, &h, 1 << 20, |_| false, None).unwrap(),
            Filtered::Empty
        );
        let e = empty_batch(&b, &h).unwrap();
        let eh = verify_stored(&e).unwrap();
        assert_eq!(e.len(), HEADER_LEN);
        assert_eq!(
            (eh.base_offset, eh.last_offset_delta, eh.record_count),
            (100, 2, 0)
        );
        assert_eq!((eh.producer_id, eh.base_sequence), (7, 10));
        assert_eq!(eh.compression().unwrap(), Compression::None);
    }
}
