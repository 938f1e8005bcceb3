//! The metadata quorum (Kafka's KRaft, KIP-500/595/631): every change to the cluster's
//! metadata is a command in a Raft log ([`runnel_metadata::cluster`]), and every broker
//! applies the committed commands in order to its snapshot.
//!
//! Consensus is TiKV's `raft` crate: it is sans-IO (we call tick, step and propose, and it
//! hands back messages to send and entries to persist), so its storage ([`storage`]) and
//! transport ([`transport`]) are ours and it needs no async runtime of its own. It runs on
//! a thread beside the shard executors; shards reach it through [`Controller::propose`] and
//! receive every applied snapshot through the [`Applied`] channel.
//!
//! Every node is a voter and a broker (Kafka's combined mode). The Raft leader is the
//! active controller: besides ordering commands, it fences brokers it has not heard from
//! for the session timeout (a broker is heard through its controller's Raft traffic: the
//! two are one process), unfences them when heard again, names the cluster, creates
//! `__consumer_offsets` and moves leaderships back to preferred replicas.

pub mod storage;
mod transport;

use futures_channel::oneshot;
use raft::prelude::*;
use raft::storage::MemStorage;
use raft::StateRole;
use raft::{GetEntriesContext, RaftState, Storage};
use runnel_metadata::cluster::{self, Command, CommandResult, Proposal};
use runnel_metadata::{BrokerState, Snapshot};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka's NOT_CONTROLLER and REQUEST_TIMED_OUT.
const NOT_CONTROLLER: i16 = 41;
const REQUEST_TIMED_OUT: i16 = 7;
/// One Raft tick; elections time out after 10-20 ticks, leaders heartbeat every tick.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopping active controller waits for another voter to take over.
const HAND_OVER: Duration = Duration::from_secs(3);
/// How often the active controller retries a duty whose command did not apply yet.
const DUTY_RETRY: Duration = Duration::from_secs(3);

pub type Answer = Result<Vec<CommandResult>, (i16, String)>;
pub type Reply = oneshot::Sender<Answer>;

/// A batch of applied commands: the snapshot after them, and the answers to this node's
/// proposals among them (to send once the snapshot is in force).
pub struct Applied {
    pub snapshot: Arc<Snapshot>,
    pub replies: Vec<(Reply, Answer)>,
}

pub struct ControllerConfig {
    pub node_id: i32,
    /// node id -> host:port of its controller listener; this node among them.
    pub voters: BTreeMap<i32, String>,
    /// Where to accept other controllers; None for a quorum of one.
    pub listen: Option<SocketAddr>,
    /// `<data-dir>/__cluster_metadata-0`.
    pub dir: PathBuf,
    pub session_timeout: Duration,
    /// The cluster id to name a new cluster with (an existing data dir's); else random.
    pub cluster_id: Option<String>,
    /// `__consumer_offsets`: partitions, replication factor (capped by the voters) and configs.
    pub offsets_topic: (i32, i16, BTreeMap<String, String>),
    /// 0: no automatic preferred leader election.
    pub leader_imbalance_check_interval: Duration,
    /// Take a snapshot (and drop the entries before it) every this many applied entries.
    pub snapshot_interval_entries: u64,
}

impl ControllerConfig {
    /// The voters as written in --controller-quorum-voters (sorted), to compare quorums.
    pub fn voters_text(&self) -> String {
        self.voters
            .iter()
            .map(|(id, a)| format!("{id}@{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(crate) enum Input {
    Raft(Message),
    Propose {
        commands: Vec<Command>,
        timeout: Duration,
        reply: Reply,
    },
    /// A peer refused this node's voters.
    Rejected(String),
    Stop,
}

/// The handle shards and the broker hold.
pub struct Controller {
    tx: mpsc::Sender<Input>,
    /// Whether this broker may act on its leaderships: see [`Controller::has_lease`].
    lease: Arc<std::sync::atomic::AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Controller {
    /// Opens the metadata log and starts the quorum member. Applied snapshots (the first
    /// one after replaying the log) arrive on the returned channel, in order.
    pub fn start(
        cfg: ControllerConfig,
    ) -> Result<
        (
            Controller,
            futures_channel::mpsc::UnboundedReceiver<Applied>,
        ),
        String,
    > {
        let voters_text = cfg.voters_text();
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.dir.display()))?;
        storage::check_quorum(&cfg.dir, &voters_text)?;
        let (disk, replayed) = storage::DiskLog::open(&cfg.dir)?;
        let raft_id = |n: i32| n as u64 + 1;
        let ids: Vec<u64> = cfg.voters.keys().map(|&n| raft_id(n)).collect();
        // The latest snapshot, then the entries after it.
        let snapshot = storage::read_snapshot(&cfg.dir)?;
        let (mem, state, from) = match &snapshot {
            Some(snap) => {
                let mut state = std::str::from_utf8(&snap.data)
                    .map_err(|e| e.to_string())
                    .and_then(cluster::decode_state)
                    .map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
                state.version = 1;
                let mem = MemStorage::new();
                mem.wl()
                    .apply_snapshot(snap.clone())
                    .map_err(|e| e.to_string())?;
                (mem, state, snap.get_metadata().index)
            }
            None => (
                MemStorage::new_with_conf_state(ConfState::from((ids.clone(), vec![]))),
                Snapshot {
                    controller_id: -1,
                    ..Default::default()
                },
                0,
            ),
        };
        {
            let mut w = mem.wl();
            let after: Vec<Entry> = replayed
                .entries
                .into_iter()
                .filter(|e| e.index > from)
                .collect();
            w.append(&after).map_err(|e| e.to_string())?;
            let mut hs = replayed.hard_state;
            hs.commit = hs.commit.max(from);
            hs.term = hs.term.max(w.hard_state().term);
            w.set_hardstate(hs);
        }
        let store = MetaStorage {
            mem,
            latest: snapshot.unwrap_or_default(),
        };
        let config = Config {
            id: raft_id(cfg.node_id),
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: true,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            applied: from,
            ..Default::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, store, &logger).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let transport = match cfg.listen {
            Some(listen) => Some(transport::Transport::start(
                raft_id(cfg.node_id),
                listen,
                &cfg.voters
                    .iter()
                    .map(|(&n, a)| (raft_id(n), a.clone()))
                    .collect(),
                &voters_text,
                tx.clone(),
            )?),
            None if cfg.voters.len() > 1 => {
                return Err("a quorum of several voters needs --controller-listen".into())
            }
            None => None,
        };
        if ids.len() == 1 {
            // A quorum of one: no one to wait for.
            node.campaign().map_err(|e| e.to_string())?;
        }
        let (out, applied) = futures_channel::mpsc::unbounded();
        let lease = Arc::new(std::sync::atomic::AtomicBool::new(ids.len() == 1));
        let mut member = Member {
            lease: lease.clone(),
            leader_contact: Instant::now(),
            node,
            disk,
            transport,
            out,
            state,
            applied_index: from,
            snapshot_index: from,
            pending: HashMap::new(),
            last_heard: HashMap::new(),
            duties: HashMap::new(),
            leader: 0,
            previous_leader: 0,
            next_rebalance: Instant::now() + cfg.leader_imbalance_check_interval,
            cfg,
            published: 0,
        };
        let thread = std::thread::Builder::new()
            .name("runnel-controller".into())
            .spawn(move || {
                // The broker must not serve on with metadata that stopped moving.
                let run = std::panic::AssertUnwindSafe(|| member.run(rx));
                if std::panic::catch_unwind(run).is_err() {
                    fatal("the controller thread panicked".into());
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((
            Controller {
                tx,
                lease,
                thread: std::sync::Mutex::new(Some(thread)),
            },
            applied,
        ))
    }

    /// Proposes `commands` as one entry; answered when it has applied on this node (in an
    /// [`Applied`] batch), or with NOT_CONTROLLER / REQUEST_TIMED_OUT.
    pub fn propose(&self, commands: Vec<Command>, timeout: Duration) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Input::Propose { reply, .. })) = self.tx.send(Input::Propose {
            commands,
            timeout,
            reply,
        }) {
            let _ = reply.send(Err((NOT_CONTROLLER, "the controller has stopped".into())));
        }
        rx
    }

    /// Whether this broker is in touch with the quorum: it leads it, or heard its leader
    /// within half the broker session timeout. A broker cut off from the quorum stops
    /// acting as the leader of its partitions (and coordinator of its groups) well before
    /// the active controller, a full session later, fences it and hands them to others: so
    /// two brokers never both take writes for one partition. Always true in a quorum of one.
    pub fn has_lease(&self) -> bool {
        self.lease.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the quorum member (what it persisted stays); waits for its thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Member {
    lease: Arc<std::sync::atomic::AtomicBool>,
    /// When the Raft leader was last heard.
    leader_contact: Instant,
    node: RawNode<MetaStorage>,
    /// The index of the last entry applied to `state`.
    applied_index: u64,
    /// The index the latest snapshot was taken at.
    snapshot_index: u64,
    disk: storage::DiskLog,
    transport: Option<transport::Transport>,
    out: futures_channel::mpsc::UnboundedSender<Applied>,
    /// The applied state.
    state: Snapshot,
    /// This node's proposals awaiting their entry: request id -> (reply, deadline).
    pending: HashMap<u64, (Reply, Instant)>,
    /// When each peer's controller was last heard from (raft id).
    last_heard: HashMap<u64, Instant>,
    /// Duties proposed by the active controller and when, so they are not proposed every
    /// tick while the entry is on its way.
    duties: HashMap<String, Instant>,
    /// The Raft leader's id (0: none).
    leader: u64,
    /// The last leader before this one (0: none).
    previous_leader: u64,
    next_rebalance: Instant,
    cfg: ControllerConfig,
    /// The snapshot version last sent out.
    published: u64,
}

impl Member {
    fn run(&mut self, rx: mpsc::Receiver<Input>) {
        let mut next_tick = Instant::now() + TICK;
        let mut stopping: Option<Instant> = None;
        // The replayed log's commands apply before anything else.
        self.on_ready();
        self.publish(Vec::new());
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Input::Raft(mut m)) => {
                    self.last_heard.insert(m.from, Instant::now());
                    if m.from == self.node.raft.leader_id && m.term >= self.node.raft.term {
                        self.leader_contact = Instant::now();
                    }
                    // A voter whose data dir was wiped comes back with an empty log while
                    // the leader still believes it holds the entries it acknowledged; the
                    // leader's heartbeats then name a commit index past its log, which
                    // raft treats as a corrupted log and panics on. Committing up to 0
                    // commits nothing: the heartbeat is answered, the leader finds the log
                    // empty and sends it from the start.
                    // The same when the log is back only in part (a snapshot, or some of
                    // the entries, arrived): any heartbeat commit past this node's log.
                    if m.get_msg_type() == MessageType::MsgHeartbeat
                        && m.commit > self.node.raft.raft_log.last_index()
                    {
                        m.commit = 0;
                    }
                    if let Err(e) = self.node.step(m) {
                        tracing::debug!("raft step: {e}");
                    }
                }
                Ok(Input::Propose {
                    commands,
                    timeout,
                    reply,
                }) => self.propose(commands, Some((reply, Instant::now() + timeout))),
                Ok(Input::Rejected(why)) => {
                    tracing::error!("{why}");
                    // A misconfigured quorum member must not run: Kafka's controllers halt too.
                    std::process::exit(1);
                }
                Ok(Input::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if stopping.is_none() && self.hand_over() {
                        // Serve on until another voter leads (or a bound passes), so the
                        // quorum has an active controller the moment this one leaves.
                        stopping = Some(Instant::now() + HAND_OVER);
                    } else {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                self.node.tick();
                self.expire_pending();
                if self.node.raft.state == StateRole::Leader {
                    self.duties();
                }
            }
            self.on_ready();
            if self.cfg.voters.len() > 1 {
                let held = self.node.raft.state == StateRole::Leader
                    || self.leader_contact.elapsed() < self.cfg.session_timeout / 2;
                if held != self.lease.swap(held, std::sync::atomic::Ordering::Relaxed) {
                    if held {
                        tracing::info!("in touch with the metadata quorum again");
                    } else {
                        tracing::warn!(
                            "no word from the metadata quorum for {:?}: not acting as a leader",
                            self.cfg.session_timeout / 2
                        );
                    }
                }
            }
            if let Some(deadline) = stopping {
                if self.node.raft.state != StateRole::Leader || Instant::now() >= deadline {
                    return;
                }
            }
        }
    }

    /// On a clean stop, hands the Raft leadership to the most caught-up other voter;
    /// false when there is nothing to hand over.
    fn hand_over(&mut self) -> bool {
        if self.node.raft.state != StateRole::Leader {
            return false;
        }
        let me = self.node.raft.id;
        let to = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        match to {
            Some(to) => {
                tracing::info!(to = to as i64 - 1, "handing the active controller over");
                self.node.transfer_leader(to);
                true
            }
            None => false,
        }
    }

    fn propose(&mut self, commands: Vec<Command>, reply: Option<(Reply, Instant)>) {
        let request_id = u64::from_le_bytes(
            runnel_metadata::random_id()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        let p = Proposal {
            request_id,
            from: self.cfg.node_id,
            commands,
        };
        match self.node.propose(Vec::new(), p.encode().into_bytes()) {
            Ok(()) => {
                if let Some(r) = reply {
                    self.pending.insert(request_id, r);
                }
            }
            Err(e) => {
                if let Some((reply, _)) = reply {
                    let _ = reply.send(Err((
                        NOT_CONTROLLER,
                        format!("no active controller to take the change ({e})"),
                    )));
                }
            }
        }
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((reply, _)) = self.pending.remove(&id) {
                let _ = reply.send(Err((
                    REQUEST_TIMED_OUT,
                    "the metadata change did not commit in time (no quorum?)".into(),
                )));
            }
        }
    }

    /// Proposes `c` unless the same duty was proposed less than DUTY_RETRY ago.
    fn duty(&mut self, key: String, c: Command) {
        let now = Instant::now();
        if self
            .duties
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < DUTY_RETRY)
        {
            return;
        }
        self.duties.insert(key, now);
        self.propose(vec![c], None);
    }

    /// The active controller's work, each tick.
    fn duties(&mut self) {
        let now = Instant::now();
        let me = self.cfg.node_id;
        if self.state.cluster_id.is_empty() {
            let id = self
                .cfg
                .cluster_id
                .clone()
                .unwrap_or_else(|| runnel_metadata::base64_id(&runnel_metadata::random_id()));
            self.duty("init".into(), Command::InitCluster { cluster_id: id });
        }
        let brokers: Vec<_> = self.state.brokers.values().cloned().collect();
        for b in brokers {
            if b.id == me {
                continue;
            }
            let heard = self
                .last_heard
                .get(&(b.id as u64 + 1))
                .is_some_and(|at| now.duration_since(*at) < self.cfg.session_timeout);
            match b.state {
                BrokerState::Active if !heard => {
                    tracing::warn!(
                        broker = b.id,
                        "not heard from for {:?}: fencing it",
                        self.cfg.session_timeout
                    );
                    self.duty(
                        format!("fence {} {}", b.id, b.incarnation),
                        Command::FenceBroker {
                            id: b.id,
                            incarnation: b.incarnation,
                        },
                    );
                }
                BrokerState::Fenced if heard => self.duty(
                    format!("unfence {} {}", b.id, b.incarnation),
                    Command::UnfenceBroker {
                        id: b.id,
                        incarnation: b.incarnation,
                    },
                ),
                _ => {}
            }
        }
        let (partitions, rf, configs) = &self.cfg.offsets_topic;
        let rf = (*rf).min(self.cfg.voters.len() as i16);
        if self.state.topic(cluster::OFFSETS_TOPIC).is_none()
            && self.state.live_brokers().count() >= rf as usize
        {
            self.duty(
                "offsets".into(),
                Command::CreateTopic {
                    name: cluster::OFFSETS_TOPIC.into(),
                    id: runnel_metadata::random_id(),
                    partitions: *partitions,
                    replication_factor: rf,
                    assignment: None,
                    configs: configs.clone(),
                },
            );
        }
        if !self.cfg.leader_imbalance_check_interval.is_zero() && now >= self.next_rebalance {
            self.next_rebalance = now + self.cfg.leader_imbalance_check_interval;
            let imbalanced = self.state.topics.values().any(|t| {
                t.assignment.iter().any(|p| {
                    let pref = p.replicas[0];
                    p.leader != pref && p.isr.contains(&pref) && self.state.is_live(pref)
                })
            });
            if imbalanced {
                tracing::info!("moving leaderships back to preferred replicas");
                self.propose(vec![Command::ElectPreferred { topics: None }], None);
            }
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        let Some(t) = &self.transport else {
            return;
        };
        let mut snapshots = Vec::new();
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push(m.to);
            }
            t.send(m);
        }
        // Queued is as good as sent: if it is lost, the follower's next answer shows it is
        // still behind and the leader sends the snapshot again.
        for to in snapshots {
            self.node.report_snapshot(to, raft::SnapshotStatus::Finish);
        }
    }

    fn on_ready(&mut self) {
        if !self.node.has_ready() {
            return;
        }
        let mut ready = self.node.ready();
        if let Some(ss) = ready.ss() {
            if ss.leader_id != self.leader {
                if self.leader != 0 {
                    self.previous_leader = self.leader;
                    // What was proposed through the old leader may be lost with it: say so
                    // now (clients retry on NOT_CONTROLLER) rather than at the timeout. An
                    // entry the old leader did replicate may still apply later.
                    for (_, (reply, _)) in self.pending.drain() {
                        let _ = reply.send(Err((
                            NOT_CONTROLLER,
                            "the active controller changed; retry".into(),
                        )));
                    }
                }
                self.leader = ss.leader_id;
                tracing::info!(
                    controller = self.leader as i64 - 1,
                    "the active controller is {}",
                    if self.leader == 0 {
                        "unknown".to_string()
                    } else {
                        format!("node {}", self.leader - 1)
                    }
                );
                if ss.raft_state == StateRole::Leader {
                    // The previous leader keeps the time this node last heard it (as a
                    // follower, from its heartbeats): a dead old leader is fenced a session
                    // after it died, not a session after this election. Followers do not
                    // hear each other: the others get a full session from now.
                    let now = Instant::now();
                    for id in self.node.raft.prs().conf().voters().ids().iter() {
                        if id != self.previous_leader || !self.last_heard.contains_key(&id) {
                            self.last_heard.insert(id, now);
                        }
                    }
                    self.duties.clear();
                }
            }
        }
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Too far behind for the leader's log: its snapshot replaces this node's state.
            let snap = ready.snapshot().clone();
            self.install_snapshot(snap);
        }
        let mut replies = Vec::new();
        let committed = ready.take_committed_entries();
        self.apply(committed, &mut replies);
        if !ready.entries().is_empty() || ready.hs().is_some() {
            self.persist(ready.entries(), ready.hs().cloned());
            let mut w = self.node.mut_store().mem.wl();
            if let Err(e) = w.append(ready.entries()) {
                fatal(format!("metadata log append: {e}"));
            }
            if let Some(hs) = ready.hs() {
                w.set_hardstate(hs.clone());
            }
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let hs = {
                let mut w = self.node.mut_store().mem.wl();
                w.mut_hard_state().commit = commit;
                w.hard_state().clone()
            };
            self.persist(&[], Some(hs));
        }
        self.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed, &mut replies);
        self.node.advance_apply();
        self.publish(replies);
        if self.applied_index >= self.snapshot_index + self.cfg.snapshot_interval_entries {
            self.take_snapshot();
        }
    }

    /// Writes the applied state as the latest snapshot, drops the entries before it from
    /// memory and rewrites the log file with those after it.
    fn take_snapshot(&mut self) {
        let index = self.applied_index;
        let term = match self.node.store().term(index) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("no snapshot at {index}: {e}");
                return;
            }
        };
        let mut snap = raft::prelude::Snapshot {
            data: cluster::encode_state(&self.state).into_bytes().into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.node.raft.prs().conf().to_conf_state());
        if let Err(e) = storage::write_snapshot(&self.cfg.dir, &snap) {
            fatal(e);
        }
        let (entries, hs) = {
            let store = self.node.mut_store();
            store.latest = snap;
            // The entry at the snapshot's index stays: the next entry's check needs its term.
            if let Err(e) = store.mem.wl().compact(index) {
                fatal(format!("metadata log compaction: {e}"));
            }
            let first = store.mem.first_index().unwrap_or(index);
            let last = store.mem.last_index().unwrap_or(index);
            let entries = if last >= first {
                store
                    .mem
                    .entries(first, last + 1, None, GetEntriesContext::empty(false))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let hs = store.mem.rl().hard_state().clone();
            (entries, hs)
        };
        if let Err(e) = self.disk.rewrite(&entries, &hs) {
            fatal(e);
        }
        tracing::info!(
            index,
            kept = entries.len(),
            "metadata snapshot taken; earlier entries dropped"
        );
        self.snapshot_index = index;
    }

    /// A snapshot from the leader: the state it holds replaces this node's.
    fn install_snapshot(&mut self, snap: raft::prelude::Snapshot) {
        let index = snap.get_metadata().index;
        let mut state = match std::str::from_utf8(&snap.data)
            .map_err(|e| e.to_string())
            .and_then(cluster::decode_state)
        {
            Ok(s) => s,
            Err(e) => fatal(format!("the leader's metadata snapshot: {e}")),
        };
        if let Err(e) = storage::write_snapshot(&self.cfg.dir, &snap) {
            fatal(e);
        }
        let hs = {
            let store = self.node.mut_store();
            if let Err(e) = store.mem.wl().apply_snapshot(snap.clone()) {
                fatal(format!("applying the leader's snapshot: {e}"));
            }
            store.latest = snap;
            store.mem.rl().hard_state().clone()
        };
        if let Err(e) = self.disk.rewrite(&[], &hs) {
            fatal(e);
        }
        state.version = self.state.version + 1;
        state.controller_id = self.state.controller_id;
        self.state = state;
        self.applied_index = index;
        self.snapshot_index = index;
        tracing::info!(index, "installed the active controller's metadata snapshot");
    }

    fn persist(&mut self, entries: &[Entry], hs: Option<HardState>) {
        if let Err(e) = self.disk.write(entries, hs.as_ref()) {
            fatal(e);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>, replies: &mut Vec<(Reply, Answer)>) {
        for e in entries {
            self.applied_index = self.applied_index.max(e.index);
            if e.data.is_empty() || e.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            let p = match std::str::from_utf8(&e.data)
                .map_err(|e| e.to_string())
                .and_then(Proposal::decode)
            {
                Ok(p) => p,
                Err(err) => {
                    tracing::error!(index = e.index, "skipping a metadata entry: {err}");
                    // Its proposer, if it is this node, hears of it at once.
                    let head = std::str::from_utf8(&e.data)
                        .ok()
                        .and_then(|t| t.lines().next())
                        .map(|l| l.split(' ').collect::<Vec<_>>());
                    if let Some(["proposal", id, from]) = head.as_deref() {
                        if from.parse() == Ok(self.cfg.node_id) {
                            if let Some((reply, _)) =
                                id.parse().ok().and_then(|id| self.pending.remove(&id))
                            {
                                replies.push((reply, Err((42, format!("bad command: {err}")))));
                            }
                        }
                    }
                    continue;
                }
            };
            let results: Vec<CommandResult> = p
                .commands
                .iter()
                .map(|c| cluster::apply(&mut self.state, c))
                .collect();
            self.state.version += 1;
            if p.from == self.cfg.node_id {
                if let Some((reply, _)) = self.pending.remove(&p.request_id) {
                    replies.push((reply, Ok(results)));
                }
            }
        }
    }

    /// Sends the snapshot out when it changed (or the active controller did).
    fn publish(&mut self, replies: Vec<(Reply, Answer)>) {
        let controller = if self.leader == 0 {
            -1
        } else {
            self.leader as i32 - 1
        };
        if controller != self.state.controller_id {
            self.state.controller_id = controller;
            self.state.version += 1;
        }
        if self.state.version == self.published && replies.is_empty() && self.published != 0 {
            return;
        }
        self.published = self.state.version;
        let _ = self.out.unbounded_send(Applied {
            snapshot: Arc::new(self.state.clone()),
            replies,
        });
    }
}

/// Raft's view of the log: the entries in memory ([`MemStorage`], rebuilt from the file at
/// start), and the latest snapshot with its data (MemStorage keeps only its metadata), for
/// followers too far behind.
struct MetaStorage {
    mem: MemStorage,
    latest: raft::prelude::Snapshot,
}

impl Storage for MetaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<raft::prelude::Snapshot> {
        if self.latest.get_metadata().index >= request_index && !self.latest.data.is_empty() {
            Ok(self.latest.clone())
        } else {
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

/// The metadata log cannot be written: this node must stop rather than vote or lead on
/// a log it cannot keep (Kafka halts its process here too).
fn fatal(why: String) -> ! {
    tracing::error!("metadata log failure, stopping: {why}");
    std::process::exit(1);
}
