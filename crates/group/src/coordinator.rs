//! The group coordinator (Kafka's classic group protocol), one per shard for the groups
//! placed on it.
//!
//! A group lives on the shard that owns its `__consumer_offsets` partition
//! (FNV-1a(group id) mod the partition count), so the shard that coordinates a group also
//! appends its commits, and moving to another core count moves groups with their data.
//! The broker never looks inside protocol metadata or assignments: the leader's client
//! assigns (range, roundrobin, sticky, cooperative-sticky alike) and the coordinator
//! carries the bytes.
//!
//! States (Kafka's): Empty -> PreparingRebalance (members (re)join; the join completes when
//! every member has rejoined or the rebalance timeout passes) -> CompletingRebalance
//! (members wait in SyncGroup for the leader's assignment) -> Stable. A member that leaves,
//! or whose session times out, sends the group back to PreparingRebalance; the others learn
//! it from their next Heartbeat (REBALANCE_IN_PROGRESS) and rejoin.

use crate::consumer::{
    ConsumerConfig, ConsumerGroup, DescribedConsumerGroup, HeartbeatArgs, HeartbeatResult,
};
use crate::offsets::{self, Committed, OffsetKey};
use bytes::Bytes;
use futures_channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use runnel_protocol::code;

/// Kafka's offset.metadata.max.bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Settings from the broker's flags.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: u64,
    pub offsets_retention_ms: u64,
    pub durable_commits: bool,
    /// KIP-848 consumer groups.
    pub consumer: ConsumerConfig,
}

#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncArgs {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct Described {
    pub error: i16,
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

/// (topic, partition, offset, leader epoch, metadata)
pub type CommitEntry = (Arc<str>, i32, i64, i32, Option<String>);
/// (partition, offset, leader epoch, metadata, error)
pub type FetchedPartition = (i32, i64, i32, Option<String>, i16);
/// Per topic: its fetched partitions.
pub type FetchedTopic = (String, Vec<FetchedPartition>);
/// Per topic: (partition, error) of an OffsetDelete.
pub type DeletedOffsets = Vec<(String, Vec<(i32, i16)>)>;
/// (group, the offsets of it that expired).
pub type ExpiredOffsets = Vec<(String, Vec<(Arc<str>, i32)>)>;

/// One group in a ListGroups answer.
#[derive(Debug, Clone)]
pub struct Listed {
    pub group: String,
    pub protocol_type: String,
    /// Kafka's state name for the group's type.
    pub state: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// Work for the coordinator shard, each with its reply channel.
pub enum GroupOp {
    Join(JoinArgs, oneshot::Sender<JoinResult>),
    Sync(SyncArgs, oneshot::Sender<SyncResult>),
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        reply: oneshot::Sender<i16>,
    },
    /// (member id, instance id) pairs; the answer has one code per member.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<(i16, Vec<i16>)>,
    },
    Commit {
        group: String,
        /// The OffsetCommit version (KIP-848 members must use v9+).
        version: i16,
        /// The generation, or a KIP-848 member's epoch.
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<CommitEntry>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    /// TxnOffsetCommit (KIP-98, KIP-447): offsets held pending until the transaction's
    /// marker reaches the group's partition ([`Coordinator::complete_txn`]).
    TxnCommit {
        group: String,
        producer_id: i64,
        producer_epoch: i16,
        /// -1 and "" : no membership check (a producer outside the group).
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<CommitEntry>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    /// None: every committed partition of the group.
    Fetch {
        group: String,
        partitions: Option<Vec<(String, Vec<i32>)>>,
        /// KIP-447: a partition with transactional offsets pending gets
        /// UNSTABLE_OFFSET_COMMIT instead of its committed offset.
        require_stable: bool,
        /// OffsetFetch v9+: the asking member and its epoch (checked in KIP-848 groups).
        member: Option<(String, i32)>,
        reply: oneshot::Sender<Result<Vec<FetchedTopic>, i16>>,
    },
    /// KIP-848: ConsumerGroupHeartbeat.
    ConsumerHeartbeat(Box<HeartbeatArgs>, oneshot::Sender<HeartbeatResult>),
    /// KIP-848: ConsumerGroupDescribe.
    ConsumerDescribe {
        group: String,
        reply: oneshot::Sender<DescribedConsumerGroup>,
    },
    Describe {
        group: String,
        reply: oneshot::Sender<Described>,
    },
    /// This shard's groups in `states` and of `types` (all if empty).
    List {
        states: Vec<String>,
        types: Vec<String>,
        reply: oneshot::Sender<Vec<Listed>>,
    },
    Delete {
        group: String,
        reply: oneshot::Sender<i16>,
    },
    OffsetDelete {
        group: String,
        partitions: Vec<(String, Vec<i32>)>,
        reply: oneshot::Sender<(i16, DeletedOffsets)>,
    },
}

impl GroupOp {
    /// The group the operation is about (None: every group of the shard).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupOp::Join(a, _) => Some(&a.group),
            GroupOp::Sync(a, _) => Some(&a.group),
            GroupOp::ConsumerHeartbeat(a, _) => Some(&a.group),
            GroupOp::Heartbeat { group, .. }
            | GroupOp::ConsumerDescribe { group, .. }
            | GroupOp::Leave { group, .. }
            | GroupOp::Commit { group, .. }
            | GroupOp::TxnCommit { group, .. }
            | GroupOp::Fetch { group, .. }
            | GroupOp::Describe { group, .. }
            | GroupOp::Delete { group, .. }
            | GroupOp::OffsetDelete { group, .. } => Some(group),
            GroupOp::List { .. } => None,
        }
    }
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_reply: Option<oneshot::Sender<JoinResult>>,
    sync_reply: Option<oneshot::Sender<SyncResult>>,
    last_seen: Instant,
    /// Has (re)joined in the current rebalance.
    joined: bool,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

struct Group {
    id: String,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their JoinGroup: when each
    /// expires (its session timeout after it was handed out, as in Kafka). A join waits for
    /// them, so one that never comes back must not hold a rebalance for long.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// Not before this (group.initial.rebalance.delay.ms for a group that was empty).
    initial_until: Option<Instant>,
    offsets: BTreeMap<(Arc<str>, i32), Committed>,
    /// When the group last became empty (offsets retention counts from then).
    empty_since_ms: i64,
    /// A KIP-848 consumer group (created by ConsumerGroupHeartbeat); then `members` (the
    /// classic ones) stays empty.
    consumer: Option<ConsumerGroup>,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_until: None,
            offsets: BTreeMap::new(),
            empty_since_ms: now_ms,
            consumer: None,
        }
    }

    fn has_consumer_members(&self) -> bool {
        self.consumer
            .as_ref()
            .is_some_and(ConsumerGroup::has_members)
    }

    /// No members of either kind.
    fn is_empty(&self) -> bool {
        self.state == State::Empty && !self.has_consumer_members()
    }

    fn listed(&self) -> Listed {
        match &self.consumer {
            Some(c) => Listed {
                group: self.id.clone(),
                protocol_type: "consumer".to_string(),
                state: c.state(),
                group_type: "consumer",
            },
            None => Listed {
                group: self.id.clone(),
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                state: self.state.name(),
                group_type: "classic",
            },
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    fn static_member(&self, instance: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// FENCED_INSTANCE_ID when `instance` belongs to another member id (a newer incarnation).
    fn check_instance(&self, member_id: &str, instance: Option<&str>) -> Result<(), i16> {
        if let Some(inst) = instance {
            if let Some(m) = self.static_member(inst) {
                if m.id != member_id {
                    return Err(code::FENCED_INSTANCE_ID);
                }
            }
        }
        Ok(())
    }

    /// The protocol every member supports, chosen by the members' preferences (each member
    /// votes for its first supported candidate; the most votes wins, ties to the earlier).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in &self.members {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == p) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|v| v.0).max()?;
        votes
            .iter()
            .find(|v| v.0 == best)
            .map(|(_, c)| (*c).clone())
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol all current members and the newcomer support.
        self.members[0].protocols.iter().any(|(n, _)| {
            protocols.iter().any(|(p, _)| p == n)
                && self
                    .members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == n))
        })
    }

    /// The current generation, as answered to a member that rejoins without changes: the
    /// member list for the leader; `skip_assignment` when the leader need not reassign.
    fn current_join(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: skip_assignment && is_leader,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, cfg: &GroupConfig) {
        tracing::debug!(group = %self.id, state = self.state.name(), "preparing rebalance");
        // Members waiting for their assignment must rejoin.
        for m in &mut self.members {
            if let Some(tx) = m.sync_reply.take() {
                let _ = tx.send(SyncResult {
                    error: code::REBALANCE_IN_PROGRESS,
                    ..Default::default()
                });
            }
            m.joined = false;
        }
        let timeout = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(1));
        if self.state == State::Empty {
            self.initial_until =
                Some(now + Duration::from_millis(cfg.initial_rebalance_delay_ms).min(timeout));
        }
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    fn all_joined(&self) -> bool {
        self.members.iter().all(|m| m.joined) && self.pending.is_empty()
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts.
    fn complete_join(&mut self, now_ms: i64) {
        self.members.retain(|m| m.joined);
        self.rebalance_deadline = None;
        self.initial_until = None;
        self.pending.clear();
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            self.empty_since_ms = now_ms;
            return;
        }
        self.protocol = self.select_protocol();
        let protocol = self.protocol.clone().unwrap_or_default();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.iter().any(|m| &m.id == l))
        {
            self.leader = Some(self.members[0].id.clone());
        }
        let leader = self.leader.clone().unwrap_or_default();
        self.state = State::CompletingRebalance;
        tracing::debug!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            leader = %leader,
            protocol = %protocol,
            "group rebalanced"
        );
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
            .collect();
        let (generation, protocol_type) = (self.generation, self.protocol_type.clone());
        for m in &mut self.members {
            m.assignment = Bytes::new();
            if let Some(tx) = m.join_reply.take() {
                let _ = tx.send(JoinResult {
                    error: code::NONE,
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    fn remove_member(&mut self, id: &str, now: Instant, cfg: &GroupConfig, now_ms: i64) {
        let Some(i) = self.members.iter().position(|m| m.id == id) else {
            return;
        };
        let m = self.members.remove(i);
        if let Some(tx) = m.join_reply {
            let _ = tx.send(JoinResult {
                error: code::UNKNOWN_MEMBER_ID,
                member_id: m.id.clone(),
                ..Default::default()
            });
        }
        if let Some(tx) = m.sync_reply {
            let _ = tx.send(SyncResult {
                error: code::UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(now, cfg),
            State::PreparingRebalance => {}
            State::Empty | State::Dead => {}
        }
        if self.state == State::PreparingRebalance && self.members.is_empty() {
            self.complete_join(now_ms);
        }
    }

    fn describe(&self) -> Described {
        if self.consumer.is_some() {
            // Not a classic group: Kafka's answer to DescribeGroups below v6 (v6+ would
            // say GROUP_ID_NOT_FOUND); clients describe it with ConsumerGroupDescribe.
            return Described {
                error: code::NONE,
                state: State::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        }
        // As Kafka: the protocol and each member's metadata and assignment only once the
        // group is stable (a rebalance in progress shows who is in it, nothing more).
        let in_sync = matches!(self.state, State::Stable);
        let protocol = if in_sync {
            self.protocol.clone().unwrap_or_default()
        } else {
            String::new()
        };
        Described {
            error: code::NONE,
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if in_sync {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if in_sync {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}

/// The groups of one shard, as a state machine: operations come in ([`Coordinator::handle`],
/// [`Coordinator::tick`]), answers go out on their reply channels, and what must be written
/// to `__consumer_offsets` first comes back as a [`PendingWrite`] for the caller to append
/// and [`Coordinator::complete`]. No I/O and no runtime inside.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    pub config: GroupConfig,
    /// Groups are loaded from the logs before the shard serves; until then this is false.
    loaded: Cell<bool>,
    /// The `__consumer_offsets` partitions whose groups this coordinator has (true) or is
    /// loading (false), and their count; a group of another partition is not ours. The
    /// broker's other shards may route a group here as soon as they see the new leader,
    /// before this shard has replayed it: that must not answer from an empty group.
    /// (Count 0: no partition bookkeeping, every group is ours, as in the unit tests.)
    partitions: RefCell<HashMap<i32, bool>>,
    partition_count: Cell<i32>,
    /// Writes handed out and not completed yet: a compaction must not rewrite the live
    /// offsets past one of them (see [`PendingWrite`]).
    writes_in_flight: Rc<Cell<usize>>,
    /// Added to the clocks (for tests, which cannot wait out session timeouts).
    clock_skew: Cell<Duration>,
    /// Offsets committed in open transactions, by producer id: applied when a commit
    /// marker reaches the group's partition, dropped at an abort.
    txn_offsets: RefCell<HashMap<i64, Vec<(OffsetKey, Committed)>>>,
}

/// Records an operation needs in `__consumer_offsets` before it can be answered. The caller
/// appends `records` to the group's partition and hands the outcome to
/// [`Coordinator::complete`] right after, awaiting nothing else in between: until then the
/// write counts as in flight, so a compaction (which dumps the applied state) waits for it
/// rather than write an older value after a newer record.
pub struct PendingWrite {
    pub group: String,
    pub records: Vec<(OffsetKey, Option<Committed>)>,
    /// The records belong to this producer's (id, epoch) transaction: written as a
    /// transactional batch of that producer.
    pub txn: Option<(i64, i16)>,
    then: Then,
    _in_flight: InFlight,
}

/// What completing a write does.
enum Then {
    Commit {
        codes: Vec<i16>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    TxnCommit {
        codes: Vec<i16>,
        producer_id: i64,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    Delete {
        reply: oneshot::Sender<i16>,
    },
    OffsetDelete {
        results: DeletedOffsets,
        reply: oneshot::Sender<(i16, DeletedOffsets)>,
    },
    /// Offsets retention: forget the expired offsets once their tombstones are written.
    /// Forget the offsets written as tombstones, unless committed again after `before_ms`
    /// (a topic created again and committed to while the tombstones were being written).
    Expire {
        before_ms: i64,
    },
}

struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    fn new(count: &Rc<Cell<usize>>) -> InFlight {
        count.set(count.get() + 1);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn new_member_id(client_id: &str) -> String {
    format!(
        "{}-{}",
        if client_id.is_empty() {
            "member"
        } else {
            client_id
        },
        uuid_string(&runnel_metadata::random_id())
    )
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h = runnel_metadata::hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            config,
            loaded: Cell::new(false),
            partitions: RefCell::new(HashMap::new()),
            partition_count: Cell::new(0),
            writes_in_flight: Default::default(),
            clock_skew: Cell::new(Duration::ZERO),
            txn_offsets: RefCell::new(HashMap::new()),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.clock_skew.get()
    }

    /// The coordinator's wall clock (ms since the epoch; moved by hand in tests).
    pub fn wall_ms(&self) -> i64 {
        now_ms() + self.clock_skew.get().as_millis() as i64
    }

    /// Moves this coordinator's clocks forward (tests: session expiry without waiting).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_skew.set(self.clock_skew.get() + by);
    }

    /// No write is waiting for its state change: the applied state is the log's.
    pub fn quiescent(&self) -> bool {
        self.writes_in_flight.get() == 0 && self.txn_offsets.borrow().is_empty()
    }

    /// A transaction marker was written to `__consumer_offsets` partition `partition`:
    /// the producer's pending offsets for the groups of that partition are applied (commit)
    /// or dropped (abort).
    pub fn complete_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        let n = self.partition_count.get();
        let mut pending = self.txn_offsets.borrow_mut();
        let Some(entries) = pending.get_mut(&producer_id) else {
            return;
        };
        let ours = |group: &str| n == 0 || offsets::partition_for(group, n) == partition;
        let (done, keep): (Vec<_>, Vec<_>) = entries.drain(..).partition(|((g, _, _), _)| ours(g));
        *entries = keep;
        if entries.is_empty() {
            pending.remove(&producer_id);
        }
        if commit {
            let mut groups = self.groups.borrow_mut();
            for ((g, t, p), c) in done {
                groups
                    .entry(g.clone())
                    .or_insert_with(|| Group::new(&g, self.wall_ms()))
                    .offsets
                    .insert((t, p), c);
            }
        }
    }

    /// Whether `partition`'s groups are loaded here (its markers can be applied): false
    /// while it is replayed or when it is not led here.
    pub fn has_loaded(&self, partition: i32) -> bool {
        self.partition_count.get() == 0
            || self.partitions.borrow().get(&partition).copied() == Some(true)
    }

    /// Transactional offsets replayed from a partition with no marker yet.
    pub fn load_txn_offsets(&self, pending: HashMap<i64, Vec<(OffsetKey, Committed)>>) {
        let mut all = self.txn_offsets.borrow_mut();
        for (pid, entries) in pending {
            all.entry(pid).or_default().extend(entries);
        }
    }

    fn write(
        &self,
        group: &str,
        records: Vec<(OffsetKey, Option<Committed>)>,
        then: Then,
    ) -> PendingWrite {
        PendingWrite {
            group: group.to_string(),
            records,
            txn: None,
            then,
            _in_flight: InFlight::new(&self.writes_in_flight),
        }
    }

    /// Restores committed offsets replayed from this shard's `__consumer_offsets` partitions.
    pub fn load(&self, offsets: HashMap<OffsetKey, Committed>) {
        self.insert_offsets(offsets);
        self.loaded.set(true);
    }

    fn insert_offsets(&self, offsets: HashMap<OffsetKey, Committed>) {
        let now = self.wall_ms();
        let mut groups = self.groups.borrow_mut();
        for ((group, topic, partition), c) in offsets {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now))
                .offsets
                .insert((topic, partition), c);
        }
    }

    /// `partition` (of `partitions`) of `__consumer_offsets` is being replayed: its groups
    /// get COORDINATOR_LOAD_IN_PROGRESS until [`Coordinator::load_partition`].
    pub fn loading(&self, partition: i32, partitions: i32) {
        self.partition_count.set(partitions);
        self.partitions.borrow_mut().insert(partition, false);
    }

    /// The offsets replayed from `partition`: its groups are served from now on.
    pub fn load_partition(&self, partition: i32, offsets: HashMap<OffsetKey, Committed>) {
        self.insert_offsets(offsets);
        self.partitions.borrow_mut().insert(partition, true);
    }

    /// Whether this coordinator serves `group` now: Err(NOT_COORDINATOR) for a group of a
    /// partition it does not lead, COORDINATOR_LOAD_IN_PROGRESS while that is replayed.
    fn serves(&self, group: &str) -> Result<(), i16> {
        let count = self.partition_count.get();
        if count <= 0 {
            return Ok(());
        }
        match self
            .partitions
            .borrow()
            .get(&offsets::partition_for(group, count))
        {
            Some(true) => Ok(()),
            Some(false) => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(code::NOT_COORDINATOR),
        }
    }

    /// Forgets the groups stored in `partition` of `__consumer_offsets` (this broker no
    /// longer leads it); returns how many.
    pub fn unload(&self, partition: i32, partitions: i32) -> usize {
        self.partitions.borrow_mut().remove(&partition);
        // Pending transactional offsets go too: the partition's next leader has them
        // in its log (and the markers go there).
        self.txn_offsets.borrow_mut().retain(|_, entries| {
            entries.retain(|((g, _, _), _)| offsets::partition_for(g, partitions) != partition);
            !entries.is_empty()
        });
        let mut groups = self.groups.borrow_mut();
        let before = groups.len();
        groups.retain(|id, _| offsets::partition_for(id, partitions) != partition);
        before - groups.len()
    }

    /// The live offsets of the groups stored in `partition` of `__consumer_offsets` (what a
    /// compaction rewrites).
    pub fn live_offsets(&self, partition: i32, partitions: i32) -> Vec<(OffsetKey, Committed)> {
        self.groups
            .borrow()
            .values()
            .filter(|g| offsets::partition_for(&g.id, partitions) == partition)
            .flat_map(|g| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| ((g.id.clone(), t.clone(), *p), c.clone()))
            })
            .collect()
    }

    /// Runs one operation: answers it, or returns what must be written first (then the
    /// answer comes from [`Coordinator::complete`]).
    pub fn handle(&self, op: GroupOp) -> Option<PendingWrite> {
        if !self.loaded.get() {
            reply_error(op, code::COORDINATOR_LOAD_IN_PROGRESS);
            return None;
        }
        if let Some(Err(e)) = op.group_id().map(|g| self.serves(g)) {
            reply_error(op, e);
            return None;
        }
        match op {
            GroupOp::Join(args, reply) => self.join(args, reply),
            GroupOp::Sync(args, reply) => self.sync(args, reply),
            GroupOp::Heartbeat {
                group,
                generation,
                member_id,
                instance_id,
                reply,
            } => {
                let _ = reply.send(self.heartbeat(&group, generation, &member_id, instance_id));
            }
            GroupOp::Leave {
                group,
                members,
                reply,
            } => {
                let _ = reply.send(self.leave(&group, &members));
            }
            GroupOp::Commit {
                group,
                version,
                generation,
                member_id,
                instance_id,
                offsets,
                reply,
            } => {
                let who = (version, generation, member_id.as_str(), instance_id);
                return self.commit(&group, who, offsets, reply);
            }
            GroupOp::TxnCommit {
                group,
                producer_id,
                producer_epoch,
                generation,
                member_id,
                instance_id,
                offsets,
                reply,
            } => {
                if generation >= 0 || !member_id.is_empty() {
                    // KIP-447: a member of the group commits with its generation.
                    if let Err(e) =
                        self.check_commit(&group, 9, generation, &member_id, instance_id)
                    {
                        let _ = reply.send(Err(e));
                        return None;
                    }
                }
                let (codes, records) = self.offset_records(&group, offsets);
                if records.is_empty() {
                    let _ = reply.send(Ok(codes));
                    return None;
                }
                let mut w = self.write(
                    &group,
                    records,
                    Then::TxnCommit {
                        codes,
                        producer_id,
                        reply,
                    },
                );
                w.txn = Some((producer_id, producer_epoch));
                return Some(w);
            }
            GroupOp::Fetch {
                group,
                partitions,
                require_stable,
                member,
                reply,
            } => {
                let checked = match &member {
                    Some((id, epoch)) => self.check_consumer_member(&group, id, *epoch),
                    None => Ok(()),
                };
                let _ =
                    reply.send(checked.map(|()| self.fetch(&group, partitions, require_stable)));
            }
            GroupOp::ConsumerHeartbeat(args, reply) => {
                let _ = reply.send(self.consumer_heartbeat(&args));
            }
            GroupOp::ConsumerDescribe { group, reply } => {
                let groups = self.groups.borrow();
                let d = match groups.get(&group) {
                    Some(Group {
                        consumer: Some(c), ..
                    }) => c.describe(),
                    Some(_) => consumer_describe_error(
                        code::GROUP_ID_NOT_FOUND,
                        format!("Group {group} is not a consumer group."),
                    ),
                    None => consumer_describe_error(
                        code::GROUP_ID_NOT_FOUND,
                        format!("Group {group} not found."),
                    ),
                };
                let _ = reply.send(d);
            }
            GroupOp::Describe { group, reply } => {
                let d = self.groups.borrow().get(&group).map(Group::describe);
                let _ = reply.send(d.unwrap_or(Described {
                    error: code::NONE,
                    state: State::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                }));
            }
            GroupOp::List {
                states,
                types,
                reply,
            } => {
                // Kafka compares states and types case-insensitively.
                let wanted = |filter: &[String], v: &str| {
                    filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(v))
                };
                let list = self
                    .groups
                    .borrow()
                    .values()
                    .map(Group::listed)
                    .filter(|l| wanted(&states, l.state) && wanted(&types, l.group_type))
                    .collect();
                let _ = reply.send(list);
            }
            GroupOp::Delete { group, reply } => return self.delete(&group, reply),
            GroupOp::OffsetDelete {
                group,
                partitions,
                reply,
            } => return self.offset_delete(&group, partitions, reply),
        }
        None
    }

    /// Applies a write's state change once its records are appended (`Ok`), or answers
    /// with the error (`Err(code)`: COORDINATOR_NOT_AVAILABLE without a partition to write
    /// to, KAFKA_STORAGE_ERROR when the append failed).
    pub fn complete(&self, w: PendingWrite, result: Result<(), i16>) {
        let group = w.group.as_str();
        let mut groups = self.groups.borrow_mut();
        match w.then {
            Then::Commit { codes, reply } => {
                let r = match result {
                    // Written: applied here unless this coordinator lost the group's
                    // partition meanwhile (the new one loads the commit from the log).
                    Ok(()) if self.serves(group).is_err() => Ok(codes),
                    Ok(()) => {
                        let g = groups
                            .entry(group.to_string())
                            .or_insert_with(|| Group::new(group, self.wall_ms()));
                        for ((_, topic, partition), c) in w.records {
                            if let Some(c) = c {
                                g.offsets.insert((topic, partition), c);
                            }
                        }
                        Ok(codes)
                    }
                    Err(c) => commit_failed(codes, c),
                };
                let _ = reply.send(r);
            }
            Then::TxnCommit {
                codes,
                producer_id,
                reply,
            } => {
                let r = match result {
                    // (As for Commit: a partition lost meanwhile took its pending offsets.)
                    Ok(()) if self.serves(group).is_err() => Ok(codes),
                    Ok(()) => {
                        let mut pending = self.txn_offsets.borrow_mut();
                        let entries = pending.entry(producer_id).or_default();
                        for (k, c) in w.records {
                            if let Some(c) = c {
                                entries.push((k, c));
                            }
                        }
                        Ok(codes)
                    }
                    Err(c) => commit_failed(codes, c),
                };
                let _ = reply.send(r);
            }
            Then::Delete { reply } => {
                if let Err(c) = result {
                    let _ = reply.send(c);
                    return;
                }
                // A member may have joined during the append: then the offsets are gone but
                // the group lives on.
                match groups.get_mut(group) {
                    Some(g) if g.is_empty() => {
                        groups.remove(group);
                    }
                    Some(g) => g.offsets.clear(),
                    None => {}
                }
                let _ = reply.send(code::NONE);
            }
            Then::OffsetDelete { results, reply } => {
                if let Err(c) = result {
                    let _ = reply.send((c, Vec::new()));
                    return;
                }
                if let Some(g) = groups.get_mut(group) {
                    for ((_, t, p), _) in &w.records {
                        g.offsets.remove(&(t.clone(), *p));
                    }
                }
                let _ = reply.send((code::NONE, results));
            }
            Then::Expire { before_ms } => {
                if result.is_ok() {
                    if let Some(g) = groups.get_mut(group) {
                        for ((_, t, p), _) in &w.records {
                            let key = (t.clone(), *p);
                            if g.offsets
                                .get(&key)
                                .is_some_and(|c| c.commit_ms <= before_ms)
                            {
                                g.offsets.remove(&key);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The tombstones for offsets that retention expired (from [`Coordinator::tick`]); the
    /// coordinator forgets them when the write completes.
    pub fn expire(&self, group: &str, keys: Vec<(Arc<str>, i32)>) -> PendingWrite {
        let records = keys
            .into_iter()
            .map(|(t, p)| ((group.to_string(), t, p), None))
            .collect();
        let before_ms = self.wall_ms();
        self.write(group, records, Then::Expire { before_ms })
    }

    fn join(&self, a: JoinArgs, reply: oneshot::Sender<JoinResult>) {
        let cfg = &self.config;
        if a.group.is_empty() {
            let _ = reply.send(join_error(code::INVALID_GROUP_ID, &a.member_id));
            return;
        }
        if a.session_timeout_ms < cfg.min_session_timeout_ms
            || a.session_timeout_ms > cfg.max_session_timeout_ms
        {
            let _ = reply.send(join_error(code::INVALID_SESSION_TIMEOUT, &a.member_id));
            return;
        }
        let now = self.now();
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(a.group.clone())
            .or_insert_with(|| Group::new(&a.group, self.wall_ms()));
        if g.state == State::Dead {
            let _ = reply.send(join_error(code::COORDINATOR_NOT_AVAILABLE, &a.member_id));
            return;
        }
        if g.has_consumer_members() {
            // A KIP-848 group: classic members cannot join it here (Kafka's online
            // migration between the protocols is not built).
            let _ = reply.send(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
            return;
        }
        // An empty consumer group becomes a classic one (its offsets stay).
        g.consumer = None;
        let known = g.has_member(&a.member_id);
        if !known || a.member_id.is_empty() {
            if !a.member_id.is_empty() && !g.pending.contains_key(&a.member_id) {
                // A member id this coordinator did not hand out (or no longer knows: the
                // member was removed, or the coordinator moved or restarted): the client
                // starts over with an empty id, as in Kafka. FENCED_INSTANCE_ID if its
                // group.instance.id is a member under another id. Never adopted: two
                // clients could then share one member id (found by the group_coordinator
                // fuzz target: a static member that made one up took the leader's sync).
                let fenced = a
                    .instance_id
                    .as_ref()
                    .is_some_and(|i| g.static_member(i).is_some());
                let code = if fenced {
                    code::FENCED_INSTANCE_ID
                } else {
                    code::UNKNOWN_MEMBER_ID
                };
                let _ = reply.send(join_error(code, &a.member_id));
                return;
            }
            if !g.supports_protocols(&a.protocol_type, &a.protocols) {
                let _ = reply.send(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
                return;
            }
            // KIP-345: a static member that comes back takes over its old slot.
            if let Some(inst) = &a.instance_id {
                if let Some(old_id) = g.static_member(inst).map(|m| m.id.clone()) {
                    self.static_member_returns(g, &a, old_id, reply, now);
                    return;
                }
            }
            self.new_member_joins(g, &a, reply, now);
            return;
        }
        // A known member id under another instance id: FENCED_INSTANCE_ID if that instance
        // is a member under its own id, else UNKNOWN_MEMBER_ID (Kafka's answers); it must
        // not take the other member's place (found by the group_coordinator fuzz target).
        if let Some(inst) = &a.instance_id {
            let theirs = g
                .members
                .iter()
                .find(|m| m.id == a.member_id)
                .and_then(|m| m.instance_id.as_deref());
            if theirs != Some(inst.as_str()) {
                let code = if g.static_member(inst).is_some() {
                    code::FENCED_INSTANCE_ID
                } else {
                    code::UNKNOWN_MEMBER_ID
                };
                let _ = reply.send(join_error(code, &a.member_id));
                return;
            }
        }
        self.known_member_joins(g, &a, reply, now);
    }

    /// KIP-345: a static member (by group.instance.id) comes back with a new member id and
    /// takes over `old_id`'s slot; its old incarnation is fenced. In a Stable group, without
    /// a change of protocols, it gets the current generation and no rebalance happens.
    fn static_member_returns(
        &self,
        g: &mut Group,
        a: &JoinArgs,
        old_id: String,
        reply: oneshot::Sender<JoinResult>,
        now: Instant,
    ) {
        let cfg = &self.config;
        let new_id = new_member_id(&a.client_id);
        let same_protocols = g
            .member(&old_id)
            .is_some_and(|m| m.protocols == a.protocols);
        let m = g.member(&old_id).expect("static member");
        // The old incarnation's pending calls are fenced.
        if let Some(tx) = m.join_reply.take() {
            let _ = tx.send(join_error(code::FENCED_INSTANCE_ID, &old_id));
        }
        if let Some(tx) = m.sync_reply.take() {
            let _ = tx.send(SyncResult {
                error: code::FENCED_INSTANCE_ID,
                ..Default::default()
            });
        }
        m.id = new_id.clone();
        m.last_seen = now;
        m.session_timeout = Duration::from_millis(a.session_timeout_ms as u64);
        m.rebalance_timeout = Duration::from_millis(a.rebalance_timeout_ms.max(0) as u64);
        m.client_id = a.client_id.clone();
        m.client_host = a.client_host.clone();
        if g.leader.as_deref() == Some(old_id.as_str()) {
            g.leader = Some(new_id.clone());
        }
        match g.state {
            State::Stable if same_protocols => {
                // No rebalance: the member gets the current generation, and its
                // assignment back from SyncGroup.
                let _ = reply.send(g.current_join(&new_id, true));
            }
            // In CompletingRebalance the leader assigns by the member ids of the join round,
            // and the old id is gone: a new round, as Kafka does (otherwise the member's
            // partitions went to nobody for the whole generation; found by fuzzing).
            _ => {
                // (The round first: preparing it marks every member as not joined yet.)
                if g.state != State::PreparingRebalance {
                    g.prepare_rebalance(now, cfg);
                }
                let m = g.member(&new_id).expect("static member");
                m.protocols = a.protocols.clone();
                m.join_reply = Some(reply);
                m.joined = true;
                self.maybe_complete(g);
            }
        }
    }

    /// A member without an id gets one (MEMBER_ID_REQUIRED, KIP-394) or, with its id, joins:
    /// the group prepares a rebalance that completes when everyone is in.
    fn new_member_joins(
        &self,
        g: &mut Group,
        a: &JoinArgs,
        reply: oneshot::Sender<JoinResult>,
        now: Instant,
    ) {
        let cfg = &self.config;
        let member_id = if a.member_id.is_empty() {
            new_member_id(&a.client_id)
        } else {
            a.member_id.clone()
        };
        if a.member_id.is_empty() && a.require_known_member_id && a.instance_id.is_none() {
            // KIP-394: hand out the id first; the member joins again with it.
            let session = Duration::from_millis(a.session_timeout_ms.max(0) as u64);
            g.pending.insert(member_id.clone(), now + session);
            let _ = reply.send(join_error(code::MEMBER_ID_REQUIRED, &member_id));
            return;
        }
        g.pending.remove(&member_id);
        if g.members.is_empty() {
            g.protocol_type = Some(a.protocol_type.clone());
        }
        g.members.push(Member {
            id: member_id,
            instance_id: a.instance_id.clone(),
            client_id: a.client_id.clone(),
            client_host: a.client_host.clone(),
            session_timeout: Duration::from_millis(a.session_timeout_ms as u64),
            rebalance_timeout: Duration::from_millis(a.rebalance_timeout_ms.max(0) as u64),
            protocols: a.protocols.clone(),
            assignment: Bytes::new(),
            join_reply: Some(reply),
            sync_reply: None,
            last_seen: now,
            joined: true,
        });
        if g.state != State::PreparingRebalance {
            g.prepare_rebalance(now, cfg);
            // prepare_rebalance resets `joined`; the newcomer has joined.
            if let Some(m) = g.members.last_mut() {
                m.joined = true;
            }
        }
        self.maybe_complete(g);
    }

    /// A current member joins again: part of a rebalance, a retry answered with the current
    /// generation, or (changed protocols, the leader asking) the start of a new rebalance.
    fn known_member_joins(
        &self,
        g: &mut Group,
        a: &JoinArgs,
        reply: oneshot::Sender<JoinResult>,
        now: Instant,
    ) {
        let cfg = &self.config;
        // A known member (re)joins.
        if let Err(e) = g.check_instance(&a.member_id, a.instance_id.as_deref()) {
            let _ = reply.send(join_error(e, &a.member_id));
            return;
        }
        if a.protocol_type != g.protocol_type.clone().unwrap_or_default() {
            let _ = reply.send(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
            return;
        }
        let state = g.state;
        let is_leader = g.leader.as_deref() == Some(a.member_id.as_str());
        let m = g.member(&a.member_id).expect("known member");
        let changed = m.protocols != a.protocols;
        m.protocols = a.protocols.clone();
        m.last_seen = now;
        m.session_timeout = Duration::from_millis(a.session_timeout_ms as u64);
        m.rebalance_timeout = Duration::from_millis(a.rebalance_timeout_ms.max(0) as u64);
        match state {
            State::PreparingRebalance => {
                if let Some(old) = m.join_reply.replace(reply) {
                    let _ = old.send(join_error(code::REBALANCE_IN_PROGRESS, &a.member_id));
                }
                m.joined = true;
                self.maybe_complete(g);
            }
            State::CompletingRebalance | State::Stable
                if !changed && (!is_leader || state == State::CompletingRebalance) =>
            {
                // Nothing changed (a retried join, or a lost JoinGroup answer): the current
                // generation again, with the member list for the leader, as Kafka answers.
                let _ = reply.send(g.current_join(&a.member_id, false));
            }
            _ => {
                tracing::debug!(group = %a.group, member = %a.member_id, changed, is_leader, state = state.name(), "member rejoins");
                // A changed subscription, or the leader asking again: a new rebalance.
                m.join_reply = Some(reply);
                g.prepare_rebalance(now, cfg);
                if let Some(m) = g.member(&a.member_id) {
                    m.joined = true;
                }
                self.maybe_complete(g);
            }
        }
    }

    /// Completes the join phase if everyone is in (and the initial delay is over).
    fn maybe_complete(&self, g: &mut Group) {
        if g.state != State::PreparingRebalance {
            return;
        }
        let now = self.now();
        let delayed = g.initial_until.is_some_and(|t| now < t);
        let timed_out = g.rebalance_deadline.is_some_and(|d| now >= d);
        if (g.all_joined() && !delayed) || timed_out {
            g.complete_join(self.wall_ms());
        }
    }

    fn sync(&self, a: SyncArgs, reply: oneshot::Sender<SyncResult>) {
        let fail = |error: i16| SyncResult {
            error,
            ..Default::default()
        };
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(&a.group) else {
            let _ = reply.send(fail(code::UNKNOWN_MEMBER_ID));
            return;
        };
        if !g.has_member(&a.member_id) {
            let _ = reply.send(fail(code::UNKNOWN_MEMBER_ID));
            return;
        }
        if let Err(e) = g.check_instance(&a.member_id, a.instance_id.as_deref()) {
            let _ = reply.send(fail(e));
            return;
        }
        if a.generation != g.generation {
            let _ = reply.send(fail(code::ILLEGAL_GENERATION));
            return;
        }
        if a.protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref())
            || a.protocol
                .as_ref()
                .is_some_and(|p| Some(p) != g.protocol.as_ref())
        {
            let _ = reply.send(fail(code::INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        let (ptype, proto) = (g.protocol_type.clone(), g.protocol.clone());
        let now = self.now();
        match g.state {
            State::PreparingRebalance => {
                let _ = reply.send(fail(code::REBALANCE_IN_PROGRESS));
            }
            State::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(a.member_id.as_str());
                if let Some(m) = g.member(&a.member_id) {
                    m.sync_reply = Some(reply);
                    m.last_seen = now;
                }
                if is_leader {
                    for m in &mut g.members {
                        m.assignment = a
                            .assignments
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default();
                    }
                    g.state = State::Stable;
                    tracing::debug!(group = %g.id, generation = g.generation, "group stable");
                    for m in &mut g.members {
                        if let Some(tx) = m.sync_reply.take() {
                            let _ = tx.send(SyncResult {
                                error: code::NONE,
                                protocol_type: ptype.clone(),
                                protocol: proto.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
            }
            State::Stable => {
                let m = g.member(&a.member_id).expect("member");
                m.last_seen = now;
                let _ = reply.send(SyncResult {
                    error: code::NONE,
                    protocol_type: ptype,
                    protocol: proto,
                    assignment: m.assignment.clone(),
                });
            }
            State::Empty | State::Dead => {
                let _ = reply.send(fail(code::UNKNOWN_MEMBER_ID));
            }
        }
    }

    fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<String>,
    ) -> i16 {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if let Err(e) = g.check_instance(member_id, instance_id.as_deref()) {
            return e;
        }
        if !g.has_member(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        let state = g.state;
        let current = g.generation;
        if let Some(m) = g.member(member_id) {
            m.last_seen = self.now();
        }
        match state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            _ if generation != current => code::ILLEGAL_GENERATION,
            State::CompletingRebalance | State::Stable => code::NONE,
            State::Empty | State::Dead => code::UNKNOWN_MEMBER_ID,
        }
    }

    fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> (i16, Vec<i16>) {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return (
                code::NONE,
                members.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect(),
            );
        };
        let now = self.now();
        let codes = members
            .iter()
            .map(|(id, inst)| {
                // A static member may leave by instance id alone.
                let id = match (id.is_empty(), inst) {
                    (true, Some(i)) => match g.static_member(i) {
                        Some(m) => m.id.clone(),
                        None => return code::UNKNOWN_MEMBER_ID,
                    },
                    _ => id.clone(),
                };
                if let Err(e) = g.check_instance(&id, inst.as_deref()) {
                    return e;
                }
                // A member that got its id (MEMBER_ID_REQUIRED) and leaves before joining
                // with it: the join need not wait for it (Kafka's removePendingMember).
                if g.pending.remove(&id).is_some() {
                    return code::NONE;
                }
                if !g.has_member(&id) {
                    return code::UNKNOWN_MEMBER_ID;
                }
                g.remove_member(&id, now, &self.config, self.wall_ms());
                code::NONE
            })
            .collect();
        self.maybe_complete(g);
        (code::NONE, codes)
    }

    /// `who`: (OffsetCommit version, generation or member epoch, member id, instance id).
    fn commit(
        &self,
        group: &str,
        who: (i16, i32, &str, Option<String>),
        offsets: Vec<CommitEntry>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    ) -> Option<PendingWrite> {
        let (version, generation, member_id, instance_id) = who;
        if let Err(e) = self.check_commit(group, version, generation, member_id, instance_id) {
            let _ = reply.send(Err(e));
            return None;
        }
        let (codes, records) = self.offset_records(group, offsets);
        if records.is_empty() {
            let _ = reply.send(Ok(codes));
            return None;
        }
        Some(self.write(group, records, Then::Commit { codes, reply }))
    }

    /// The records of a commit, and a code per offset (metadata too large).
    #[allow(clippy::type_complexity)]
    fn offset_records(
        &self,
        group: &str,
        offsets: Vec<CommitEntry>,
    ) -> (Vec<i16>, Vec<(OffsetKey, Option<Committed>)>) {
        let now = self.wall_ms();
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (topic, partition, offset, epoch, metadata) in offsets {
            if metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                codes.push(code::OFFSET_METADATA_TOO_LARGE);
                continue;
            }
            codes.push(code::NONE);
            records.push((
                (group.to_string(), topic, partition),
                Some(Committed {
                    offset,
                    leader_epoch: epoch,
                    // No metadata is "", as Kafka keeps it (OffsetAndMetadata.NO_METADATA).
                    metadata: Some(metadata.unwrap_or_default()),
                    commit_ms: now,
                }),
            ));
        }
        (codes, records)
    }

    /// Whether `member_id` of `generation` may commit now.
    fn check_commit(
        &self,
        group: &str,
        version: i16,
        generation: i32,
        member_id: &str,
        instance_id: Option<String>,
    ) -> Result<(), i16> {
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group, self.wall_ms()));
        if let Some(c) = &g.consumer {
            // A KIP-848 group: the member's epoch stands for the generation, and its
            // members commit with OffsetCommit v9+ (as Kafka requires).
            c.check_member_epoch(member_id, generation)?;
            if !member_id.is_empty() && version < 9 {
                return Err(code::UNSUPPORTED_VERSION);
            }
            return Ok(());
        }
        // A commit from outside the group protocol (generation -1, no member id) is allowed
        // only while the group has no members (standalone consumers).
        if generation < 0 && member_id.is_empty() {
            if !g.members.is_empty() {
                return Err(code::UNKNOWN_MEMBER_ID);
            }
            return Ok(());
        }
        g.check_instance(member_id, instance_id.as_deref())?;
        if !g.has_member(member_id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        if generation != g.generation {
            return Err(code::ILLEGAL_GENERATION);
        }
        if g.state == State::CompletingRebalance {
            return Err(code::REBALANCE_IN_PROGRESS);
        }
        let now = self.now();
        if let Some(m) = g.member(member_id) {
            m.last_seen = now;
        }
        Ok(())
    }

    fn fetch(
        &self,
        group: &str,
        partitions: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Vec<FetchedTopic> {
        let groups = self.groups.borrow();
        let offsets = groups.get(group).map(|g| &g.offsets);
        let pending = self.txn_offsets.borrow();
        let unstable = |t: &str, p: i32| {
            require_stable
                && pending
                    .values()
                    .flatten()
                    .any(|((g, pt, pp), _)| g == group && &**pt == t && *pp == p)
        };
        let row = |t: &str, p: i32| match offsets.and_then(|o| o.get(&(Arc::from(t), p))) {
            _ if unstable(t, p) => (p, -1, -1, None, code::UNSTABLE_OFFSET_COMMIT),
            Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone(), code::NONE),
            None => (p, -1, -1, Some(String::new()), code::NONE),
        };
        match partitions {
            Some(wanted) => wanted
                .into_iter()
                .map(|(t, ps)| {
                    let rows = ps.into_iter().map(|p| row(&t, p)).collect();
                    (t, rows)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<FetchedPartition>> = BTreeMap::new();
                for ((t, p), c) in offsets.into_iter().flatten() {
                    by_topic.entry(t.to_string()).or_default().push((
                        *p,
                        c.offset,
                        c.leader_epoch,
                        c.metadata.clone(),
                        code::NONE,
                    ));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    fn delete(&self, group: &str, reply: oneshot::Sender<i16>) -> Option<PendingWrite> {
        let keys: Vec<(Arc<str>, i32)> = {
            let groups = self.groups.borrow();
            let refusal = match groups.get(group) {
                None => Some(code::GROUP_ID_NOT_FOUND),
                Some(g) if g.state == State::Dead => Some(code::GROUP_ID_NOT_FOUND),
                Some(g) if !g.is_empty() => Some(code::NON_EMPTY_GROUP),
                Some(_) => None,
            };
            if let Some(c) = refusal {
                let _ = reply.send(c);
                return None;
            }
            groups[group].offsets.keys().cloned().collect()
        };
        let tombstones = keys
            .into_iter()
            .map(|(t, p)| ((group.to_string(), t, p), None))
            .collect();
        // Even with nothing to write the deletion goes through `complete`, which removes the
        // group.
        Some(self.write(group, tombstones, Then::Delete { reply }))
    }

    fn offset_delete(
        &self,
        group: &str,
        partitions: Vec<(String, Vec<i32>)>,
        reply: oneshot::Sender<(i16, DeletedOffsets)>,
    ) -> Option<PendingWrite> {
        let subscribed: Vec<String> = {
            let groups = self.groups.borrow();
            let g = match groups.get(group) {
                Some(g) if g.state != State::Dead => g,
                _ => {
                    let _ = reply.send((code::GROUP_ID_NOT_FOUND, Vec::new()));
                    return None;
                }
            };
            if let Some(c) = g.consumer.as_ref().filter(|c| c.has_members()) {
                c.subscribed_names().into_iter().collect()
            } else if g.protocol_type.as_deref() == Some("consumer") && !g.members.is_empty() {
                g.members
                    .iter()
                    .flat_map(|m| {
                        offsets::subscribed_topics(
                            &m.metadata(g.protocol.as_deref().unwrap_or_default()),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            }
        };
        let mut results = Vec::new();
        let mut tombstones = Vec::new();
        for (topic, ps) in partitions {
            let is_subscribed = subscribed.contains(&topic);
            let rows = ps
                .iter()
                .map(|p| {
                    if is_subscribed {
                        (*p, code::GROUP_SUBSCRIBED_TO_TOPIC)
                    } else {
                        tombstones.push(((group.to_string(), Arc::from(topic.as_str()), *p), None));
                        (*p, code::NONE)
                    }
                })
                .collect();
            results.push((topic, rows));
        }
        if tombstones.is_empty() {
            let _ = reply.send((code::NONE, results));
            return None;
        }
        Some(self.write(group, tombstones, Then::OffsetDelete { results, reply }))
    }

    /// The committed offsets of deleted topics (name -> when the deletion was seen), in the
    /// groups this coordinator serves: Kafka forgets them when a topic goes, so a topic
    /// created again under the same name starts with no committed offsets. Offsets committed
    /// after the deletion was seen (to the topic created again) are left alone. (Tombstoned
    /// through [`Coordinator::expire`].)
    pub fn offsets_of_deleted(&self, deleted: &HashMap<Arc<str>, i64>) -> ExpiredOffsets {
        self.groups
            .borrow()
            .values()
            .filter(|g| self.serves(&g.id).is_ok())
            .filter_map(|g| {
                let keys: Vec<(Arc<str>, i32)> = g
                    .offsets
                    .iter()
                    .filter(|((t, _), c)| deleted.get(t).is_some_and(|at| c.commit_ms <= *at))
                    .map(|(k, _)| k.clone())
                    .collect();
                (!keys.is_empty()).then(|| (g.id.clone(), keys))
            })
            .collect()
    }

    /// Session expiry, rebalance deadlines, pending member ids, and (on `retention_due`)
    /// offsets retention: (group, expired offsets) to tombstone.
    pub fn tick(&self, retention_due: bool) -> ExpiredOffsets {
        let now = self.now();
        let wall = self.wall_ms();
        let mut expired_offsets = Vec::new();
        let mut groups = self.groups.borrow_mut();
        for g in groups.values_mut() {
            // Members handed an id that did not come back within their session timeout.
            g.pending.retain(|_, expires| now < *expires);
            let dead: Vec<String> = g
                .members
                .iter()
                .filter(|m| {
                    // Members waiting in JoinGroup are bounded by the rebalance deadline.
                    m.join_reply.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            for id in dead {
                tracing::info!(group = %g.id, member = %id, "member session expired");
                g.remove_member(&id, now, &self.config, wall);
            }
            self.maybe_complete(g);
            if let Some(c) = &mut g.consumer {
                let had = c.has_members();
                for id in c.tick(now, &self.config.consumer) {
                    tracing::info!(group = %g.id, member = %id, "consumer group member fenced (session or revocation timeout)");
                }
                if had && !c.has_members() {
                    g.empty_since_ms = wall;
                }
            }
            if retention_due && g.is_empty() && self.serves(&g.id).is_ok() {
                let cutoff = wall - self.config.offsets_retention_ms as i64;
                let old: Vec<(Arc<str>, i32)> = g
                    .offsets
                    .iter()
                    .filter(|(_, c)| c.commit_ms.max(g.empty_since_ms) < cutoff)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !old.is_empty() {
                    expired_offsets.push((g.id.clone(), old));
                }
            }
        }
        // An empty group without offsets is forgotten at the retention pass, as Kafka does at
        // its offsets cleanup: until then it is listed (Empty) and keeps its generation.
        if retention_due {
            groups.retain(|_, g| !(g.is_empty() && g.offsets.is_empty() && g.pending.is_empty()));
        }
        expired_offsets
    }

    /// KIP-848: a ConsumerGroupHeartbeat. A non-empty classic group is not a consumer
    /// group (GROUP_ID_NOT_FOUND, as Kafka answers without migration); an empty one becomes
    /// one, keeping its offsets.
    fn consumer_heartbeat(&self, a: &HeartbeatArgs) -> HeartbeatResult {
        let now = self.now();
        let wall = self.wall_ms();
        let mut groups = self.groups.borrow_mut();
        let joining = a.member_epoch == crate::consumer::JOIN_EPOCH;
        let g = match groups.get_mut(&a.group) {
            Some(g) => g,
            None if joining && !a.group.is_empty() => groups
                .entry(a.group.clone())
                .or_insert_with(|| Group::new(&a.group, wall)),
            None if a.group.is_empty() => {
                return HeartbeatResult::error(code::INVALID_REQUEST, "GroupId can't be empty.")
            }
            None => {
                return HeartbeatResult::error(
                    code::UNKNOWN_MEMBER_ID,
                    format!("group {} has no member {}", a.group, a.member_id),
                )
            }
        };
        if g.consumer.is_none() {
            if g.state != State::Empty || !g.pending.is_empty() {
                return HeartbeatResult::error(
                    code::GROUP_ID_NOT_FOUND,
                    format!("Group {} is not a consumer group.", a.group),
                );
            }
            g.consumer = Some(ConsumerGroup::default());
            g.protocol_type = Some("consumer".to_string());
        }
        let c = g.consumer.as_mut().expect("consumer group");
        let had = c.has_members();
        let r = c.heartbeat(a, now, &self.config.consumer);
        if had && !c.has_members() {
            g.empty_since_ms = wall;
        }
        r
    }

    /// OffsetFetch v9+ from a member of a KIP-848 group: it must be a member at that epoch.
    fn check_consumer_member(&self, group: &str, member_id: &str, epoch: i32) -> Result<(), i16> {
        match self
            .groups
            .borrow()
            .get(group)
            .and_then(|g| g.consumer.as_ref())
        {
            Some(c) => c.check_member_epoch(member_id, epoch),
            None => Ok(()),
        }
    }

    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }
}

/// A ConsumerGroupDescribe refusal.
fn consumer_describe_error(error: i16, message: String) -> DescribedConsumerGroup {
    DescribedConsumerGroup {
        error,
        message: (!message.is_empty()).then_some(message),
        state: "Dead",
        group_epoch: -1,
        assignment_epoch: -1,
        assignor: String::new(),
        members: Vec::new(),
    }
}

/// A JoinGroup refusal.
fn join_error(error: i16, member_id: &str) -> JoinResult {
    JoinResult {
        error,
        member_id: member_id.to_string(),
        generation: -1,
        ..Default::default()
    }
}

/// A commit's answer when its write failed with `c`: the whole request fails without a
/// partition to write to, otherwise each partition that had no error of its own gets `c`.
fn commit_failed(codes: Vec<i16>, c: i16) -> Result<Vec<i16>, i16> {
    if c == code::COORDINATOR_NOT_AVAILABLE {
        return Err(c);
    }
    Ok(codes
        .into_iter()
        .map(|x| if x == code::NONE { c } else { x })
        .collect())
}

/// Answers `op` with `error` (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...).
pub fn reply_error(op: GroupOp, error: i16) {
    match op {
        GroupOp::Join(a, r) => {
            let _ = r.send(JoinResult {
                error,
                member_id: a.member_id,
                generation: -1,
                ..Default::default()
            });
        }
        GroupOp::Sync(_, r) => {
            let _ = r.send(SyncResult {
                error,
                ..Default::default()
            });
        }
        GroupOp::Heartbeat { reply, .. } => {
            let _ = reply.send(error);
        }
        GroupOp::Leave { reply, .. } => {
            let _ = reply.send((error, Vec::new()));
        }
        GroupOp::Commit { reply, .. } | GroupOp::TxnCommit { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        GroupOp::Fetch { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        GroupOp::ConsumerHeartbeat(_, reply) => {
            let _ = reply.send(HeartbeatResult::error(error, ""));
        }
        GroupOp::ConsumerDescribe { reply, .. } => {
            let _ = reply.send(consumer_describe_error(error, String::new()));
        }
        GroupOp::Describe { reply, .. } => {
            let _ = reply.send(Described {
                error,
                state: State::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        }
        GroupOp::List { reply, .. } => {
            let _ = reply.send(Vec::new());
        }
        GroupOp::Delete { reply, .. } => {
            let _ = reply.send(error);
        }
        GroupOp::OffsetDelete { reply, .. } => {
            let _ = reply.send((error, Vec::new()));
        }
    }
}
