//! Idempotent and transactional producers: per partition, each producer id's epoch and its
//! last batches' sequence numbers and offsets, so a retried batch is answered with its
//! original offsets instead of being written twice, and a gap in the sequence is refused;
//! and each producer's open transaction on the partition (the offset of its first batch),
//! which holds the last stable offset back until the transaction's marker is written
//! (Kafka's ProducerStateManager).
//!
//! The state lives with the log on its owner shard and is checked by the log's single writer
//! in append order. It is saved in `<offset>.snapshot` files (at segment roll and clean
//! close; the name is the log end offset it covers, as in Kafka's layout) and rebuilt after
//! a crash from the latest snapshot plus the batch headers appended since.
//!
//! Snapshot format (ours; version 1 had no transaction fields):
//! ```text
//! magic "RNPS" | version u16 = 2 | crc32c u32 of the rest | count u32 |
//!   count x { producer id i64 | epoch i16 | last append ms i64 |
//!             open transaction's first offset i64 (-1: none) | coordinator epoch i32 | n u8 |
//!             n x { first seq i32 | last seq i32 | first offset i64 | last offset i64 } }
//! ```

use runnel_record::control::Marker;
use runnel_record::BatchHeader;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka's, and the clients'
/// max.in.flight.requests.per.connection limit with idempotence).
pub const CACHED_BATCHES: usize = 5;
pub const SNAPSHOT_SUFFIX: &str = "snapshot";
const MAGIC: &[u8; 4] = b"RNPS";
const VERSION: u16 = 2;

/// One remembered batch: its sequence range and the offsets it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`CACHED_BATCHES`].
    pub batches: VecDeque<BatchMeta>,
    /// Broker time of the last append, for producer id expiration.
    pub last_append_ms: i64,
    /// The offset of the first batch of the producer's open transaction on this partition.
    pub txn_first_offset: Option<i64>,
    /// The epoch of the transaction coordinator that wrote the producer's last marker.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.batches.back().map(|b| b.last_offset)
    }
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    /// The batch's epoch is older than the producer's current one (a zombie or fenced
    /// producer): INVALID_PRODUCER_EPOCH.
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A sequence that does not follow the last one: OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("producer {producer_id} epoch {epoch}: sequence {got} does not follow (expected {expected:?})")]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: Option<i32>,
        got: i32,
    },
    /// A transactional batch for a partition its producer's transaction does not hold, or a
    /// plain batch from a producer with an open transaction: INVALID_TXN_STATE.
    #[error("producer {producer_id}: {reason}")]
    TxnState {
        producer_id: i64,
        reason: &'static str,
    },
}

/// Who asks for an append, for the checks of transactional batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A producer's request, not checked with its transaction coordinator.
    Client,
    /// A producer's request whose transaction coordinator confirmed the partition is in the
    /// open transaction of this producer id and epoch (KIP-890 part 1). Only that
    /// producer's batches may open a transaction with it.
    Verified { producer_id: i64, epoch: i16 },
    /// The broker's own write for a producer (a group coordinator's TxnOffsetCommit
    /// records): transactional, without sequence numbers.
    Coordinator,
}

/// A transaction ended on this partition by its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub commit: bool,
}

/// What to do with one idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already written: answer with these offsets and write nothing.
    Duplicate(BatchMeta),
}

/// The last sequence of a batch: base + lastOffsetDelta, wrapping past i32::MAX to 0 as
/// Kafka's DefaultRecordBatch.incrementSequence does.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    increment(h.base_sequence, h.last_offset_delta)
}

fn increment(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    pub entries: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction: the smallest is where the
    /// partition's last stable offset stops.
    pub ongoing: BTreeSet<(i64, i64)>,
}

impl ProducerState {
    /// Checks a batch against the state, `pending` (changes of batches accepted earlier in the
    /// same write, not yet committed) taking precedence. `origin` says whether the
    /// producer's transaction coordinator confirmed this partition is in its open
    /// transaction (needed for the first transactional batch of a transaction here).
    pub fn check(
        &self,
        pending: &HashMap<i64, ProducerEntry>,
        h: &BatchHeader,
        origin: Origin,
    ) -> Result<Verdict, SequenceError> {
        let pid = h.producer_id;
        let verified = match origin {
            Origin::Client => false,
            Origin::Coordinator => true,
            Origin::Verified { producer_id, epoch } => {
                producer_id == pid && epoch == h.producer_epoch
            }
        };
        let entry = pending.get(&pid).or_else(|| self.entries.get(&pid));
        if h.is_control() {
            // A transaction marker, written by the broker for the coordinator: only its
            // epoch is checked (it may be newer: a coordinator aborting a timed-out
            // transaction bumps the epoch).
            return match entry {
                Some(e) if h.producer_epoch < e.epoch => Err(SequenceError::StaleEpoch {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    current: e.epoch,
                }),
                _ => Ok(Verdict::Append),
            };
        }
        let in_txn = entry.is_some_and(|e| e.txn_first_offset.is_some());
        if h.is_transactional() && !in_txn && !verified {
            return Err(SequenceError::TxnState {
                producer_id: pid,
                reason: "transactional batch for a partition not added to its transaction",
            });
        }
        if !h.is_transactional() && in_txn {
            return Err(SequenceError::TxnState {
                producer_id: pid,
                reason: "non-transactional batch while its transaction is open",
            });
        }
        let Some(entry) = entry else {
            // Unknown producer (new, or its state expired or was deleted with its
            // batches): any sequence starts it, as in Kafka since KIP-360.
            return Ok(Verdict::Append);
        };
        let first = h.base_sequence;
        let last = last_sequence(h);
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: pid,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if origin == Origin::Coordinator && h.is_transactional() && first < 0 {
            // Written by a coordinator for the producer (TxnOffsetCommit's offsets): no
            // sequence, as Kafka's coordinator writes them; the epoch is checked above.
            return Ok(Verdict::Append);
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequence over.
            return if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    expected: Some(0),
                    got: first,
                })
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        match entry.last_seq() {
            Some(prev) if increment(prev, 1) != first => Err(SequenceError::OutOfOrder {
                producer_id: pid,
                epoch: h.producer_epoch,
                expected: Some(increment(prev, 1)),
                got: first,
            }),
            _ => Ok(Verdict::Append),
        }
    }

    /// Records an accepted batch written at `h.base_offset..=h.last_offset()` into `pending`.
    /// `marker`: the batch is a transaction marker, saying this; the transaction it ends
    /// is returned.
    pub fn record(
        &self,
        pending: &mut HashMap<i64, ProducerEntry>,
        h: &BatchHeader,
        marker: Option<Marker>,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        let pid = h.producer_id;
        let entry = pending.entry(pid).or_insert_with(|| {
            self.entries
                .get(&pid)
                .cloned()
                .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch, now_ms))
        });
        apply(entry, h, marker, now_ms)
    }

    /// Makes the changes of a completed write permanent.
    pub fn commit(&mut self, pending: HashMap<i64, ProducerEntry>) {
        for (pid, new) in pending {
            self.set(pid, new);
        }
    }

    fn set(&mut self, pid: i64, new: ProducerEntry) {
        let old = self.entries.get(&pid).and_then(|e| e.txn_first_offset);
        if old != new.txn_first_offset {
            if let Some(o) = old {
                self.ongoing.remove(&(o, pid));
            }
            if let Some(o) = new.txn_first_offset {
                self.ongoing.insert((o, pid));
            }
        }
        self.entries.insert(pid, new);
    }

    /// Replays a stored batch (recovery, or a follower appending its leader's batches): the
    /// log is trusted, nothing is refused. `marker` as in [`ProducerState::record`].
    pub fn replay(
        &mut self,
        h: &BatchHeader,
        marker: Option<Marker>,
        append_ms: i64,
    ) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        let mut entry = self
            .entries
            .get(&h.producer_id)
            .cloned()
            .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch, append_ms));
        let done = apply(&mut entry, h, marker, append_ms);
        self.set(h.producer_id, entry);
        done
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|(o, _)| *o)
    }

    /// Drops producers whose every remembered batch lies below the log start offset
    /// (retention or DeleteRecords removed them), as Kafka does; not one with an open
    /// transaction.
    pub fn remove_below(&mut self, log_start_offset: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.txn_first_offset.is_some() || e.last_offset().is_some_and(|o| o >= log_start_offset)
        });
        before - self.entries.len()
    }

    /// Drops producers idle for longer than `expiration_ms` (producer.id.expiration.ms);
    /// not one with an open transaction (its coordinator ends it).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_append_ms <= expiration_ms as i64
        });
        before - self.entries.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.entries.len() * 64);
        body.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        let mut pids: Vec<&i64> = self.entries.keys().collect();
        pids.sort();
        for pid in pids {
            let e = &self.entries[pid];
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_append_ms.to_be_bytes());
            body.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ProducerState, String> {
        if bytes.len() < 10 || &bytes[..4] != MAGIC {
            return Err("not a producer state snapshot".into());
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != VERSION && version != 1 {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let body = &bytes[10..];
        if crc32c::crc32c(body) != crc {
            return Err("snapshot checksum mismatch".into());
        }
        let mut r = Reader { buf: body, pos: 0 };
        let count = r.u32()?;
        let mut entries = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let last_append_ms = r.i64()?;
            let (txn_first_offset, coordinator_epoch) = if version >= 2 {
                (Some(r.i64()?).filter(|&o| o >= 0), r.i32()?)
            } else {
                (None, -1)
            };
            let n = r.u8()?;
            let mut batches = VecDeque::with_capacity(n as usize);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            entries.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_append_ms,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        if r.pos != body.len() {
            return Err("trailing bytes in snapshot".into());
        }
        let mut state = ProducerState::default();
        for (pid, e) in entries {
            state.set(pid, e);
        }
        Ok(state)
    }
}

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }
}

fn apply(
    entry: &mut ProducerEntry,
    h: &BatchHeader,
    marker: Option<Marker>,
    now_ms: i64,
) -> Option<CompletedTxn> {
    if h.producer_epoch != entry.epoch {
        // A newer epoch starts its sequence over (a marker may bump it: the coordinator
        // fenced the producer; a replayed log is trusted even with an older one).
        entry.epoch = h.producer_epoch;
        entry.batches.clear();
    }
    entry.last_append_ms = entry.last_append_ms.max(now_ms);
    if h.is_control() {
        let first = entry.txn_first_offset.take();
        if let Some(m) = marker {
            entry.coordinator_epoch = m.coordinator_epoch;
        }
        return match (marker, first) {
            (Some(m), Some(first_offset)) => Some(CompletedTxn {
                producer_id: h.producer_id,
                first_offset,
                last_offset: h.base_offset,
                commit: m.commit,
            }),
            _ => None,
        };
    }
    if h.is_transactional() && entry.txn_first_offset.is_none() {
        entry.txn_first_offset = Some(h.base_offset);
    }
    entry.batches.push_back(BatchMeta {
        first_seq: h.base_sequence,
        last_seq: last_sequence(h),
        first_offset: h.base_offset,
        last_offset: h.last_offset(),
    });
    while entry.batches.len() > CACHED_BATCHES {
        entry.batches.pop_front();
    }
    None
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or("truncated snapshot")?
            .try_into()
            .expect("N bytes");
        self.pos = end;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, records: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
        }
    }

    impl ProducerState {
        fn check_plain(
            &self,
            p: &HashMap<i64, ProducerEntry>,
            h: &BatchHeader,
        ) -> Result<Verdict, SequenceError> {
            self.check(p, h, Origin::Client)
        }
    }

    fn accept(s: &mut ProducerState, h: &BatchHeader) {
        let mut p = HashMap::new();
        assert_eq!(s.check(&p, h, Origin::Client), Ok(Verdict::Append));
        s.record(&mut p, h, None, 1);
        s.commit(p);
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut s = ProducerState::default();
        let none = HashMap::new();
        accept(&mut s, &batch(7, 0, 0, 10, 0));
        accept(&mut s, &batch(7, 0, 10, 5, 10));
        // A retry of either remembered batch is a duplicate with its original offsets.
        assert_eq!(
            s.check_plain(&none, &batch(7, 0, 0, 10, -1)),
            Ok(Verdict::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 9,
                first_offset: 0,
                last_offset: 9
            }))
        );
        assert!(
            matches!(s.check_plain(&none, &batch(7, 0, 10, 5, -1)), Ok(Verdict::Duplicate(b)) if b.first_offset == 10)
        );
        // A gap, or a sequence from the past that is not a remembered batch.
        assert!(matches!(
            s.check_plain(&none, &batch(7, 0, 16, 1, -1)),
            Err(SequenceError::OutOfOrder {
                expected: Some(15),
                got: 16,
                ..
            })
        ));
        assert!(matches!(
            s.check_plain(&none, &batch(7, 0, 3, 1, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // An older epoch is fenced; a newer one must start at 0.
        accept(&mut s, &batch(7, 1, 0, 1, 15));
        assert!(matches!(
            s.check_plain(&none, &batch(7, 0, 15, 1, -1)),
            Err(SequenceError::StaleEpoch { current: 1, .. })
        ));
        assert!(matches!(
            s.check_plain(&none, &batch(7, 2, 5, 1, -1)),
            Err(SequenceError::OutOfOrder {
                expected: Some(0),
                ..
            })
        ));
        // Only the last 5 batches are remembered.
        for i in 1..=6 {
            accept(&mut s, &batch(7, 1, i, 1, 15 + i as i64));
        }
        assert_eq!(s.entries[&7].batches.len(), CACHED_BATCHES);
        assert!(matches!(
            s.check_plain(&none, &batch(7, 1, 1, 1, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // An unknown producer starts anywhere.
        assert_eq!(
            s.check_plain(&none, &batch(9, 3, 1234, 1, -1)),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn sequence_numbers_wrap_past_i32_max() {
        let mut s = ProducerState::default();
        accept(&mut s, &batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.entries[&1].batches[0].last_seq, i32::MAX);
        accept(&mut s, &batch(1, 0, 0, 3, 2));
        let h = batch(1, 0, i32::MAX, 3, 0);
        assert_eq!(last_sequence(&h), 1);
    }

    #[test]
    fn pending_changes_are_seen_before_commit() {
        let s = ProducerState::default();
        let mut p = HashMap::new();
        s.record(&mut p, &batch(3, 0, 0, 2, 0), None, 1);
        assert!(matches!(
            s.check_plain(&p, &batch(3, 0, 0, 2, -1)),
            Ok(Verdict::Duplicate(_))
        ));
        assert_eq!(
            s.check_plain(&p, &batch(3, 0, 2, 1, -1)),
            Ok(Verdict::Append)
        );
        assert!(s.entries.is_empty(), "nothing committed");
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let mut s = ProducerState::default();
        for pid in 0..50 {
            for i in 0..7 {
                accept(
                    &mut s,
                    &batch(pid, (pid % 3) as i16, i * 2, 2, pid * 100 + i as i64 * 2),
                );
            }
        }
        let bytes = s.encode();
        assert_eq!(ProducerState::decode(&bytes).unwrap(), s);
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(ProducerState::decode(&bad).is_err());
        assert!(ProducerState::decode(&bytes[..n - 3]).is_err());
        assert!(ProducerState::decode(b"nope").is_err());
    }

    #[test]
    fn removal_below_log_start_and_expiry() {
        let mut s = ProducerState::default();
        let mut p = HashMap::new();
        s.record(&mut p, &batch(1, 0, 0, 10, 0), None, 1_000);
        s.record(&mut p, &batch(2, 0, 0, 10, 10), None, 5_000);
        s.commit(p);
        assert_eq!(s.remove_below(10), 1);
        assert!(s.entries.contains_key(&2));
        assert_eq!(s.expire(5_000 + 1_000, 999), 1);
        assert!(s.entries.is_empty());
    }
}
