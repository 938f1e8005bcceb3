//! Transaction markers: the control batches a transaction coordinator has written to every
//! partition of a transaction when it commits or aborts (Kafka's EndTransactionMarker).
//!
//! A marker is a batch of one record with attributes transactional | control, the
//! producer's id and epoch, base sequence -1, whose key is `version i16 (0) | type i16`
//! (0 abort, 1 commit) and whose value is `version i16 (0) | coordinator epoch i32`.
//! Consumers skip control batches; read_committed consumers use them to end the aborted
//! transactions a fetch lists.

use crate::builder::BatchBuilder;
use crate::{Records, HEADER_LEN};

/// Control record type of a transaction's end.
pub const ABORT: i16 = 0;
pub const COMMIT: i16 = 1;

/// The bytes of a marker batch (base offset 0, to be assigned by the log), CRC set.
pub fn marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(if commit { COMMIT } else { ABORT }).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::new(timestamp)
        .producer(producer_id, producer_epoch, -1)
        .transactional()
        .control();
    b.append(timestamp, Some(&key), Some(&value), &[]);
    b.build()
}

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    /// The epoch of the coordinator that wrote it (-1 if the value does not say).
    pub coordinator_epoch: i32,
}

/// The marker a control batch holds (`batch` starts at its header and holds at least its
/// first record); None for anything else (another control type, or bytes that do not
/// parse).
pub fn marker_kind(batch: &[u8]) -> Option<Marker> {
    let records = batch.get(HEADER_LEN..)?;
    let record = Records::new(records).next()?.ok()?;
    let key = record.key?;
    if key.len() < 4 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        COMMIT => true,
        ABORT => false,
        _ => return None,
    };
    let coordinator_epoch = record
        .value
        .and_then(|v| v.get(2..6))
        .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Some(Marker {
        commit,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_validate_and_read_back() {
        for commit in [true, false] {
            let b = marker(42, 3, commit, 7, 1000);
            let h = crate::validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.record_count, 1);
            assert_eq!(
                marker_kind(&b),
                Some(Marker {
                    commit,
                    coordinator_epoch: 7
                })
            );
        }
        assert_eq!(marker_kind(&[0; 10]), None);
    }
}
