//! The transaction coordinator (KIP-98, Kafka's TransactionCoordinator), one per shard for
//! the transactional ids placed on it, as a state machine without I/O: operations give an
//! answer or a record to append to `__transaction_state`; the caller appends it, and hands
//! back how that went ([`TxnCoordinator::written`]); after a Prepare state is written the
//! caller writes the markers to the transaction's partitions and reports them done
//! ([`TxnCoordinator::markers_done`]), which gives the Complete record to write.
//!
//! A transactional id lives on the shard owning its `__transaction_state` partition
//! (FNV-1a(id) mod the partition count), as groups live with their `__consumer_offsets`
//! partition. Every state change is written (and replicated) before it is answered or acted
//! on, so a coordinator that takes over (or restarts) replays the partition and finishes
//! what it finds in a Prepare state.
//!
//! States: Empty -> Ongoing (AddPartitionsToTxn / AddOffsetsToTxn) -> PrepareCommit or
//! PrepareAbort (EndTxn, InitProducerId fencing an open transaction, or the transaction's
//! timeout) -> CompleteCommit / CompleteAbort (markers written) -> Ongoing again with the next
//! AddPartitionsToTxn, or a new epoch with InitProducerId.
//!
//! Records use Kafka's own schemas (TransactionLogKey v0, TransactionLogValue v0):
//! ```text
//! key   = version i16 (0) | transactional id: i16 len + UTF-8
//! value = version i16 (0) | producer id i64 | producer epoch i16 | timeout ms i32 |
//!         status i8 | partitions: i32 count (-1 null) x { topic: i16 len + UTF-8 |
//!         i32 count x partition i32 } | last update ms i64 | start ms i64
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use runnel_protocol::code;

pub const TOPIC: &str = runnel_metadata::cluster::TRANSACTION_STATE_TOPIC;
/// Kafka's transaction.state.log.num.partitions.
pub const DEFAULT_PARTITIONS: i32 = 50;
/// Kafka's transaction.max.timeout.ms.
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;

pub use code::{
    CONCURRENT_TRANSACTIONS, INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING,
    INVALID_TRANSACTION_TIMEOUT, INVALID_TXN_STATE, PRODUCER_FENCED, TRANSACTIONAL_ID_NOT_FOUND,
};

/// The `__transaction_state` partition of a transactional id.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::offsets::partition_for(transactional_id, partitions)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn from_i8(v: i8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A topic partition of a transaction.
pub type TxnPartition = (Arc<str>, i32);

/// One transactional id's state, as written to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TxnPartition>,
    pub last_update_ms: i64,
    /// When the open transaction started (-1: none).
    pub start_ms: i64,
}

/// Markers to write: every partition of a transaction gets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The leader epoch of the `__transaction_state` partition (Kafka's coordinator epoch).
    pub coordinator_epoch: i32,
    pub partitions: Vec<TxnPartition>,
}

/// An answer to a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnReply {
    pub error: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl TxnReply {
    fn error(error: i16) -> TxnReply {
        TxnReply {
            error,
            producer_id: -1,
            producer_epoch: -1,
        }
    }
}

/// A record for `__transaction_state`: append it, then call [`TxnCoordinator::written`].
#[derive(Debug)]
pub struct TxnWrite {
    pub transactional_id: String,
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    target: TxnMeta,
    then: After,
}

#[derive(Debug, Clone, Copy)]
enum After {
    /// InitProducerId: answer with the new producer id and epoch.
    Init,
    /// Answer with this code (and the producer id/epoch) once written.
    Reply(i16),
    /// A Prepare state was written: answer (if anyone asked) and write markers.
    Prepared(Option<i16>),
    /// A Complete state was written: nothing else to do.
    Completed,
}

/// What a step asks of the caller.
#[derive(Debug)]
pub enum Step {
    Reply(TxnReply),
    Write(TxnWrite),
}

/// What a completed write asks of the caller.
#[derive(Debug, Default)]
pub struct Written {
    pub reply: Option<TxnReply>,
    pub markers: Option<MarkerJob>,
}

/// A transaction in a DescribeTransactions or ListTransactions answer.
#[derive(Debug, Clone)]
pub struct DescribedTxn {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

pub struct TxnCoordinator {
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// Transactional ids with a write or markers in flight: other requests for them get
    /// CONCURRENT_TRANSACTIONS.
    busy: RefCell<BTreeSet<String>>,
    /// The `__transaction_state` partitions served here: loaded (true) or loading, with
    /// their leader epoch.
    partitions: RefCell<BTreeMap<i32, (bool, i32)>>,
    partition_count: Cell<i32>,
    pub max_timeout_ms: i32,
    clock_skew: Cell<Duration>,
}

impl TxnCoordinator {
    pub fn new(max_timeout_ms: i32) -> TxnCoordinator {
        TxnCoordinator {
            txns: RefCell::new(HashMap::new()),
            busy: RefCell::new(BTreeSet::new()),
            partitions: RefCell::new(BTreeMap::new()),
            partition_count: Cell::new(DEFAULT_PARTITIONS),
            max_timeout_ms,
            clock_skew: Cell::new(Duration::ZERO),
        }
    }

    pub fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now + self.clock_skew.get().as_millis() as i64
    }

    /// Moves the clock forward (tests: timeouts without waiting).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_skew.set(self.clock_skew.get() + by);
    }

    /// `partition` (of `partitions`) is being replayed: its ids get
    /// COORDINATOR_LOAD_IN_PROGRESS until [`TxnCoordinator::load_partition`].
    pub fn loading(&self, partition: i32, partitions: i32) {
        self.partition_count.set(partitions);
        self.partitions.borrow_mut().insert(partition, (false, -1));
    }

    /// The replayed state of `partition`, led here in `leader_epoch`. Returns the markers
    /// of transactions found in a Prepare state, which this coordinator now finishes.
    pub fn load_partition(
        &self,
        partition: i32,
        leader_epoch: i32,
        txns: HashMap<String, TxnMeta>,
    ) -> Vec<MarkerJob> {
        let mut jobs = Vec::new();
        let mut all = self.txns.borrow_mut();
        for (id, meta) in txns {
            if meta.state.preparing() {
                self.busy.borrow_mut().insert(id.clone());
                jobs.push(marker_job(&id, &meta, leader_epoch));
            }
            all.insert(id, meta);
        }
        self.partitions
            .borrow_mut()
            .insert(partition, (true, leader_epoch));
        jobs
    }

    /// This broker no longer leads `partition`: forget its transactional ids.
    pub fn unload(&self, partition: i32) {
        self.partitions.borrow_mut().remove(&partition);
        let n = self.partition_count.get();
        self.txns
            .borrow_mut()
            .retain(|id, _| partition_for(id, n) != partition);
        self.busy
            .borrow_mut()
            .retain(|id| partition_for(id, n) != partition);
    }

    /// Err(NOT_COORDINATOR) for an id of a partition not led here, LOAD_IN_PROGRESS while
    /// it is replayed; Ok(coordinator epoch).
    pub fn serves(&self, transactional_id: &str) -> Result<i32, i16> {
        let p = partition_for(transactional_id, self.partition_count.get());
        match self.partitions.borrow().get(&p) {
            Some((true, epoch)) => Ok(*epoch),
            Some((false, _)) => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(code::NOT_COORDINATOR),
        }
    }

    fn write(&self, id: &str, target: TxnMeta, then: After) -> Step {
        self.busy.borrow_mut().insert(id.to_string());
        Step::Write(TxnWrite {
            transactional_id: id.to_string(),
            partition: partition_for(id, self.partition_count.get()),
            key: encode_key(id),
            value: encode_value(&target),
            target,
            then,
        })
    }

    /// Checks common to every request of a producer: coordinator, busy, id and epoch.
    fn current(&self, id: &str, producer_id: i64, epoch: i16) -> Result<TxnMeta, i16> {
        self.serves(id)?;
        let meta = self
            .txns
            .borrow()
            .get(id)
            .cloned()
            .ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        if meta.producer_id != producer_id {
            return Err(INVALID_PRODUCER_ID_MAPPING);
        }
        if meta.producer_epoch != epoch {
            return Err(PRODUCER_FENCED);
        }
        if self.busy.borrow().contains(id) {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        Ok(meta)
    }

    /// InitProducerId with a transactional id. `fresh_id`: a producer id the caller
    /// allocated, used for a new transactional id or when the epoch is exhausted.
    /// `expected`: KIP-360's producer id and epoch the client had (-1, -1: none).
    pub fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: (i64, i16),
        fresh_id: i64,
    ) -> Step {
        if let Err(e) = self.serves(id) {
            return Step::Reply(TxnReply::error(e));
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Step::Reply(TxnReply::error(INVALID_TRANSACTION_TIMEOUT));
        }
        if self.busy.borrow().contains(id) {
            return Step::Reply(TxnReply::error(CONCURRENT_TRANSACTIONS));
        }
        let now = self.now_ms();
        let existing = self.txns.borrow().get(id).cloned();
        let Some(meta) = existing else {
            let target = TxnMeta {
                producer_id: fresh_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now,
                start_ms: -1,
            };
            return self.write(id, target, After::Init);
        };
        if expected.0 >= 0 && (expected.0 != meta.producer_id || expected.1 != meta.producer_epoch)
        {
            // KIP-360: a producer that was fenced (or is a zombie) may not bump the epoch.
            return Step::Reply(TxnReply::error(PRODUCER_FENCED));
        }
        match meta.state {
            TxnState::Ongoing => {
                // Fence the open transaction: abort it with a bumped epoch; the client
                // retries and gets the next epoch once the abort is complete.
                let target = TxnMeta {
                    producer_epoch: meta.producer_epoch.saturating_add(1),
                    state: TxnState::PrepareAbort,
                    last_update_ms: now,
                    ..meta
                };
                self.write(id, target, After::Prepared(Some(CONCURRENT_TRANSACTIONS)))
            }
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Step::Reply(TxnReply::error(CONCURRENT_TRANSACTIONS)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let (producer_id, producer_epoch) = if meta.producer_epoch >= i16::MAX - 1 {
                    (fresh_id, 0)
                } else {
                    (meta.producer_id, meta.producer_epoch + 1)
                };
                let target = TxnMeta {
                    producer_id,
                    producer_epoch,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    last_update_ms: now,
                    start_ms: -1,
                };
                self.write(id, target, After::Init)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Step {
        let meta = match self.current(id, producer_id, epoch) {
            Ok(m) => m,
            Err(e) => return Step::Reply(TxnReply::error(e)),
        };
        if meta.state.preparing() {
            return Step::Reply(TxnReply::error(CONCURRENT_TRANSACTIONS));
        }
        if matches!(meta.state, TxnState::Dead | TxnState::PrepareEpochFence) {
            return Step::Reply(TxnReply::error(INVALID_TXN_STATE));
        }
        let ongoing = meta.state == TxnState::Ongoing;
        if ongoing && partitions.iter().all(|p| meta.partitions.contains(p)) {
            return Step::Reply(reply_of(&meta, code::NONE));
        }
        let now = self.now_ms();
        let mut target = meta;
        if !ongoing {
            target.partitions.clear();
            target.start_ms = now;
        }
        target.state = TxnState::Ongoing;
        target.last_update_ms = now;
        target.partitions.extend(partitions.iter().cloned());
        self.write(id, target, After::Reply(code::NONE))
    }

    /// AddPartitionsToTxn v4+ with VerifyOnly (a partition leader checking a produce):
    /// NONE when every partition is in the producer's open transaction.
    pub fn verify(&self, id: &str, producer_id: i64, epoch: i16, partition: &TxnPartition) -> i16 {
        if let Err(e) = self.serves(id) {
            return e;
        }
        let txns = self.txns.borrow();
        let Some(meta) = txns.get(id) else {
            return INVALID_PRODUCER_ID_MAPPING;
        };
        if meta.producer_id != producer_id {
            return INVALID_PRODUCER_ID_MAPPING;
        }
        if meta.producer_epoch != epoch {
            return INVALID_PRODUCER_EPOCH;
        }
        if meta.state == TxnState::Ongoing && meta.partitions.contains(partition) {
            code::NONE
        } else {
            INVALID_TXN_STATE
        }
    }

    /// EndTxn: commit or abort the open transaction.
    pub fn end_txn(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Step {
        let meta = match self.current(id, producer_id, epoch) {
            Ok(m) => m,
            Err(e) => return Step::Reply(TxnReply::error(e)),
        };
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let target = TxnMeta {
                    state: if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    },
                    last_update_ms: self.now_ms(),
                    ..meta
                };
                self.write(id, target, After::Prepared(Some(code::NONE)))
            }
            // A retry of an end already done (the answer was lost).
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Step::Reply(reply_of(&meta, code::NONE))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Step::Reply(TxnReply::error(CONCURRENT_TRANSACTIONS))
            }
            _ => Step::Reply(TxnReply::error(INVALID_TXN_STATE)),
        }
    }

    /// The outcome of appending `w`: the state moves on (or not), the answer to give and
    /// the markers to write.
    pub fn written(&self, w: TxnWrite, result: Result<(), i16>) -> Written {
        let id = w.transactional_id;
        let keep_busy = result.is_ok() && matches!(w.then, After::Prepared(_));
        if !keep_busy {
            self.busy.borrow_mut().remove(&id);
        }
        let epoch = match (result, self.serves(&id)) {
            (Err(e), _) => {
                // Nothing changes. A Complete record that failed is tried again by the
                // timers (the state stays Prepare until then).
                let reply = match w.then {
                    After::Completed => None,
                    _ => Some(TxnReply::error(e)),
                };
                return Written {
                    reply,
                    markers: None,
                };
            }
            // Written, but this coordinator lost the partition meanwhile.
            (Ok(()), Err(e)) => {
                self.busy.borrow_mut().remove(&id);
                return Written {
                    reply: Some(TxnReply::error(e)),
                    markers: None,
                };
            }
            (Ok(()), Ok(epoch)) => epoch,
        };
        let target = w.target;
        self.txns.borrow_mut().insert(id.clone(), target.clone());
        match w.then {
            After::Init => Written {
                reply: Some(reply_of(&target, code::NONE)),
                markers: None,
            },
            After::Reply(c) => Written {
                reply: Some(reply_of(&target, c)),
                markers: None,
            },
            After::Prepared(c) => Written {
                reply: c.map(|c| reply_of(&target, c)),
                markers: Some(marker_job(&id, &target, epoch)),
            },
            After::Completed => Written::default(),
        }
    }

    /// Every marker of `job` is written: the Complete record to append.
    pub fn markers_done(&self, job: &MarkerJob) -> Option<TxnWrite> {
        let meta = self.txns.borrow().get(&job.transactional_id).cloned()?;
        if !meta.state.preparing() || meta.producer_id != job.producer_id {
            self.busy.borrow_mut().remove(&job.transactional_id);
            return None;
        }
        let target = TxnMeta {
            state: if meta.state == TxnState::PrepareCommit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            },
            partitions: BTreeSet::new(),
            last_update_ms: self.now_ms(),
            start_ms: -1,
            ..meta
        };
        match self.write(&job.transactional_id, target, After::Completed) {
            Step::Write(w) => Some(w),
            Step::Reply(_) => None,
        }
    }

    /// Transactions open past their timeout: each is aborted with a bumped epoch (so the
    /// producer is fenced, as Kafka does). Also Prepare states whose Complete record failed
    /// to write: their markers again.
    pub fn tick(&self) -> (Vec<TxnWrite>, Vec<MarkerJob>) {
        let now = self.now_ms();
        let mut writes = Vec::new();
        let mut jobs = Vec::new();
        let expired: Vec<(String, TxnMeta)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(id, _)| !self.busy.borrow().contains(*id))
            .filter(|(id, _)| self.serves(id).is_ok())
            .filter(|(_, m)| {
                (m.state == TxnState::Ongoing && now - m.start_ms > i64::from(m.timeout_ms))
                    || m.state.preparing()
            })
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        for (id, meta) in expired {
            if meta.state.preparing() {
                let epoch = self.serves(&id).unwrap_or(-1);
                self.busy.borrow_mut().insert(id.clone());
                jobs.push(marker_job(&id, &meta, epoch));
                continue;
            }
            tracing::info!(transactional_id = %id, producer_id = meta.producer_id, "aborting a transaction open past its timeout ({} ms)", meta.timeout_ms);
            let target = TxnMeta {
                producer_epoch: meta.producer_epoch.saturating_add(1),
                state: TxnState::PrepareAbort,
                last_update_ms: now,
                ..meta
            };
            if let Step::Write(w) = self.write(&id, target, After::Prepared(None)) {
                writes.push(w);
            }
        }
        (writes, jobs)
    }

    /// DescribeTransactions: each id's state, or an error code.
    pub fn describe(&self, id: &str) -> Result<TxnMeta, i16> {
        self.serves(id)?;
        self.txns
            .borrow()
            .get(id)
            .cloned()
            .ok_or(TRANSACTIONAL_ID_NOT_FOUND)
    }

    /// ListTransactions on this shard: the ids served here, filtered by state names,
    /// producer ids and minimum running time (empty filters match all).
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: i64,
    ) -> Vec<(String, i64, TxnState)> {
        let now = self.now_ms();
        let mut out: Vec<_> = self
            .txns
            .borrow()
            .iter()
            .filter(|(id, _)| self.serves(id).is_ok())
            .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
            .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|(_, m)| {
                min_duration_ms < 0
                    || (m.state == TxnState::Ongoing && now - m.start_ms >= min_duration_ms)
            })
            .map(|(id, m)| (id.clone(), m.producer_id, m.state))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn reply_of(meta: &TxnMeta, error: i16) -> TxnReply {
    TxnReply {
        error,
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
    }
}

fn marker_job(id: &str, meta: &TxnMeta, coordinator_epoch: i32) -> MarkerJob {
    MarkerJob {
        transactional_id: id.to_string(),
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        commit: meta.state == TxnState::PrepareCommit,
        coordinator_epoch,
        partitions: meta.partitions.iter().cloned().collect(),
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn encode_key(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + id.len());
    out.extend_from_slice(&0i16.to_be_bytes());
    put_str16(&mut out, id);
    out
}

pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state as u8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (t, ps) in by_topic {
        put_str16(&mut out, t);
        out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
}

pub fn decode_key(b: &[u8]) -> Option<String> {
    let mut r = crate::offsets::Cursor(b);
    if r.i16()? != 0 {
        return None;
    }
    r.kafka_string()
}

pub fn decode_value(b: &[u8]) -> Option<TxnMeta> {
    let mut r = crate::offsets::Cursor(b);
    let version = r.i16()?;
    if version != 0 && version != 1 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_i8(r.take(1)?[0] as i8)?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32()?;
    for _ in 0..topics.max(0) {
        let topic: Arc<str> = r.kafka_string()?.into();
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            partitions.insert((topic.clone(), r.i32()?));
        }
    }
    Some(TxnMeta {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: r.i64()?,
        start_ms: r.i64()?,
    })
}
