//! KIP-848's consumer group protocol (ConsumerGroupHeartbeat): the coordinator assigns.
//!
//! Each member heartbeats its subscription; any change to a subscription, to the members,
//! or to the subscribed topics' partitions bumps the group epoch, and the coordinator runs
//! the server-side assignor ([`crate::assignor`]) into a target assignment of that epoch.
//! Each member then moves to its target on its own heartbeats, Kafka's reconciliation:
//! first it is told to give up what it must lose (it stays at its epoch until it reports
//! them gone), then it gets the new partitions and the new epoch; a partition another
//! member still owns is withheld until that member has released it. So no partition is
//! ever owned by two members, and no member waits for the whole group, as a classic
//! rebalance does.
//!
//! Membership is kept in memory like the classic groups' (committed offsets are what is
//! written): after a coordinator failover the members get UNKNOWN_MEMBER_ID and join again.

use crate::assignor::{self, Assignment, Spec};
use runnel_metadata::{Snapshot, TopicId};
use runnel_protocol::code;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Member epochs with a meaning of their own (Kafka's).
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone)]
pub struct HeartbeatArgs {
    pub group: String,
    pub version: i16,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// None: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns; None: unchanged.
    pub owned: Option<Vec<(TopicId, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
    /// The cluster as the receiving shard saw it: the subscribed topics' ids and partitions.
    pub snapshot: Arc<Snapshot>,
}

#[derive(Debug, Clone, Default)]
pub struct HeartbeatResult {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Given when the member's assignment changed or it (re)joined.
    pub assignment: Option<Vec<(TopicId, Vec<i32>)>>,
}

impl HeartbeatResult {
    pub fn error(error: i16, message: impl Into<String>) -> HeartbeatResult {
        HeartbeatResult {
            error,
            message: Some(message.into()),
            member_epoch: -1,
            ..Default::default()
        }
    }
}

/// One member in a ConsumerGroupDescribe answer.
#[derive(Debug, Clone)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
}

#[derive(Debug, Clone)]
pub struct DescribedConsumerGroup {
    pub error: i16,
    pub message: Option<String>,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<DescribedMember>,
}

/// Where a member stands in its reconciliation (Kafka's MemberState).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconciling {
    /// At the target assignment's epoch with all of its partitions.
    Stable,
    /// Told to give up `revoking`; keeps its epoch until it reports them gone.
    Unrevoked,
    /// At the new epoch, waiting for partitions other members still own.
    Unreleased,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout: Duration,
    topic_names: Vec<String>,
    regex: Option<String>,
    /// `regex` compiled (once, when the subscription changes).
    compiled: Option<regex::Regex>,
    server_assignor: Option<String>,
    epoch: i32,
    previous_epoch: i32,
    state: Reconciling,
    assigned: Assignment,
    revoking: Assignment,
    last_seen: Instant,
    /// While Unrevoked: when the member is fenced if it has not revoked.
    revoke_deadline: Option<Instant>,
    /// A static member that left with epoch -2: its slot and assignment wait for it to
    /// come back (until its session times out).
    away: bool,
}

/// The KIP-848 side of a group.
#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    members: BTreeMap<String, Member>,
    /// Per member: its share of the target assignment (of `assignment_epoch`).
    target: BTreeMap<String, Assignment>,
    /// Who owns each partition: assigned to, or still revoking, a member.
    owners: HashMap<(TopicId, i32), String>,
    /// The subscribed topics (id -> partitions) the target assignment was computed from.
    subscribed: BTreeMap<TopicId, i32>,
    /// Their names (by name or by regex).
    subscribed_topic_names: BTreeSet<String>,
}

/// Settings from the broker's flags (Kafka's group.consumer.* configs).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub heartbeat_interval_ms: i32,
    pub session_timeout_ms: i32,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: 45_000,
        }
    }
}

fn to_wire(a: &Assignment) -> Vec<(TopicId, Vec<i32>)> {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn from_wire(owned: &[(TopicId, Vec<i32>)]) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in owned {
        a.entry(*t).or_default().extend(ps.iter().copied());
    }
    a
}

fn is_subset(a: &Assignment, of: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || of.get(t).is_some_and(|o| ps.is_subset(o)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|o| !ps.is_disjoint(o)))
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .map(|(t, ps)| {
            let left: BTreeSet<i32> = match b.get(t) {
                Some(o) => ps.difference(o).copied().collect(),
                None => ps.clone(),
            };
            (*t, left)
        })
        .filter(|(_, ps)| !ps.is_empty())
        .collect()
}

fn both(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let o = b.get(t)?;
            let common: BTreeSet<i32> = ps.intersection(o).copied().collect();
            (!common.is_empty()).then_some((*t, common))
        })
        .collect()
}

/// A subscription regex (RE2 syntax, as Kafka's RE2J) matching whole topic names.
pub fn compile_regex(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

impl Member {}

impl ConsumerGroup {
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Kafka's consumer group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != Reconciling::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Every topic a member subscribes to, by name or by regex (OffsetDelete refuses
    /// those).
    pub fn subscribed_names(&self) -> BTreeSet<String> {
        let mut out = self.subscribed_topic_names.clone();
        out.extend(
            self.members
                .values()
                .flat_map(|m| m.topic_names.iter().cloned()),
        );
        out
    }

    /// An OffsetCommit or OffsetFetch from `member_id` at `epoch` (KIP-848's checks; one
    /// from outside the group, epoch < 0 without a member id, only while the group has no
    /// members).
    pub fn check_member_epoch(&self, member_id: &str, epoch: i32) -> Result<(), i16> {
        if epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(code::UNKNOWN_MEMBER_ID)
            };
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        // Kafka answers STALE_MEMBER_EPOCH either way: the member retries once its
        // heartbeat has brought its epoch up to date.
        if epoch != m.epoch {
            return Err(code::STALE_MEMBER_EPOCH);
        }
        Ok(())
    }

    /// One heartbeat: join, leave, or stay, with the member's next assignment.
    pub fn heartbeat(
        &mut self,
        a: &HeartbeatArgs,
        now: Instant,
        cfg: &ConsumerConfig,
    ) -> HeartbeatResult {
        if let Err(e) = validate(a) {
            return e;
        }
        let regex = match a
            .subscribed_topic_regex
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            Some(r) => match compile_regex(r) {
                Ok(compiled) => Some((r.to_string(), compiled)),
                Err(msg) => {
                    let c = if a.version >= 1 {
                        code::INVALID_REGULAR_EXPRESSION
                    } else {
                        code::INVALID_REQUEST
                    };
                    return HeartbeatResult::error(c, msg);
                }
            },
            None => None,
        };
        if a.member_epoch == LEAVE_EPOCH || a.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(a, now);
        }
        let owned = a.owned.as_deref().map(from_wire);
        // One heartbeat moves the group epoch at most once, whatever it changed.
        let mut changed = false;
        let member_id = if a.member_epoch == JOIN_EPOCH {
            match self.join(a, now) {
                Ok((id, new)) => {
                    changed = new;
                    id
                }
                Err(e) => return e,
            }
        } else {
            let Some(m) = self.members.get(&a.member_id) else {
                return HeartbeatResult::error(
                    code::UNKNOWN_MEMBER_ID,
                    format!("member {} is not in group {}", a.member_id, a.group),
                );
            };
            if m.away {
                return HeartbeatResult::error(
                    code::UNKNOWN_MEMBER_ID,
                    "the member left the group",
                );
            }
            let lost_answer = a.member_epoch == m.previous_epoch
                && owned.as_ref().is_some_and(|o| is_subset(o, &m.assigned));
            if a.member_epoch > m.epoch || (a.member_epoch < m.epoch && !lost_answer) {
                return HeartbeatResult::error(
                    code::FENCED_MEMBER_EPOCH,
                    format!(
                        "member epoch {} is fenced (the member is at {})",
                        a.member_epoch, m.epoch
                    ),
                );
            }
            a.member_id.clone()
        };
        // The member's settings: a field left out is unchanged.
        let m = self.members.get_mut(&member_id).expect("member");
        m.last_seen = now;
        m.client_id = a.client_id.clone();
        m.client_host = a.client_host.clone();
        if a.rack_id.is_some() {
            m.rack_id = a.rack_id.clone();
        }
        if a.rebalance_timeout_ms > 0 {
            m.rebalance_timeout = Duration::from_millis(a.rebalance_timeout_ms as u64);
        }
        if let Some(names) = &a.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            changed |= names != m.topic_names;
            m.topic_names = names;
        }
        if a.subscribed_topic_regex.is_some() {
            let (text, compiled) = regex.unzip();
            changed |= text != m.regex;
            m.regex = text;
            m.compiled = compiled;
        }
        if a.server_assignor.is_some() && a.server_assignor != m.server_assignor {
            m.server_assignor = a.server_assignor.clone();
            changed = true;
        }
        self.refresh(&a.snapshot, changed);
        let was = self.members[&member_id].assigned.clone();
        self.reconcile(&member_id, owned.as_ref(), now);
        let m = &self.members[&member_id];
        let give = a.member_epoch == JOIN_EPOCH
            || m.assigned != was
            || owned.as_ref().is_some_and(|o| *o != m.assigned);
        HeartbeatResult {
            error: code::NONE,
            message: None,
            member_id: Some(member_id.clone()),
            member_epoch: m.epoch,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment: give.then(|| to_wire(&m.assigned)),
        }
    }

    /// Epoch 0: a new member, a static member back under its instance id, or a member
    /// that was fenced starting over (its old incarnation goes, partitions and all).
    /// Returns the member id, and whether the group has a new member.
    fn join(&mut self, a: &HeartbeatArgs, now: Instant) -> Result<(String, bool), HeartbeatResult> {
        let member_id = if a.member_id.is_empty() {
            // v0: the coordinator names the member.
            uuid_like()
        } else {
            a.member_id.clone()
        };
        let mut inherited: Option<Member> = None;
        if let Some(inst) = &a.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(inst))
                .map(|m| (m.id.clone(), m.away));
            match holder {
                Some((old, true)) => {
                    // KIP-345 under KIP-848: the static member comes back to its slot and
                    // its assignment, with no rebalance. (A different member already under
                    // the new id is an earlier incarnation of this one: it goes.)
                    if old != member_id && self.members.contains_key(&member_id) {
                        self.remove(&member_id);
                    }
                    let mut m = self.members.remove(&old).expect("member");
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(member_id.clone(), t);
                    }
                    for owner in self.owners.values_mut() {
                        if *owner == old {
                            *owner = member_id.clone();
                        }
                    }
                    m.id = member_id.clone();
                    m.away = false;
                    inherited = Some(m);
                }
                Some((old, false)) if old != member_id => {
                    return Err(HeartbeatResult::error(
                        code::UNRELEASED_INSTANCE_ID,
                        format!("instance id {inst} is in use by member {old}"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(m) = inherited {
            self.members.insert(member_id.clone(), m);
            return Ok((member_id, false));
        }
        if self.members.contains_key(&member_id) {
            // A fenced member rejoins with its id: its old incarnation is gone.
            self.remove(&member_id);
        }
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: a.instance_id.clone(),
                rack_id: None,
                client_id: a.client_id.clone(),
                client_host: a.client_host.clone(),
                rebalance_timeout: Duration::from_millis(a.rebalance_timeout_ms.max(0) as u64),
                topic_names: Vec::new(),
                regex: None,
                compiled: None,
                server_assignor: None,
                epoch: 0,
                previous_epoch: -1,
                state: Reconciling::Stable,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                last_seen: now,
                revoke_deadline: None,
                away: false,
            },
        );
        Ok((member_id, true))
    }

    fn leave(&mut self, a: &HeartbeatArgs, now: Instant) -> HeartbeatResult {
        let Some(m) = self.members.get_mut(&a.member_id) else {
            return HeartbeatResult::error(
                code::UNKNOWN_MEMBER_ID,
                format!("member {} is not in group {}", a.member_id, a.group),
            );
        };
        if a.member_epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
            // Away until its session times out; its partitions stay its own.
            m.away = true;
            m.last_seen = now;
        } else {
            self.remove(&a.member_id);
        }
        HeartbeatResult {
            member_id: Some(a.member_id.clone()),
            member_epoch: a.member_epoch,
            ..Default::default()
        }
    }

    /// Removes a member: its partitions are free for the others at the next epoch.
    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_none() {
            return;
        }
        self.owners.retain(|_, o| o != id);
        self.target.remove(id);
        self.epoch += 1;
    }

    /// Bumps the group epoch when the members changed (`changed`) or the subscribed topics'
    /// partitions did, and computes a new target assignment when the group epoch is ahead
    /// of it.
    fn refresh(&mut self, snapshot: &Snapshot, changed: bool) {
        // Each distinct regex is matched against the topics once per heartbeat, however
        // many members share it. Internal topics are left out, as in Kafka.
        let mut by_regex: HashMap<&str, Vec<&runnel_metadata::TopicMeta>> = HashMap::new();
        for m in self.members.values() {
            if let (Some(text), Some(re)) = (m.regex.as_deref(), m.compiled.as_ref()) {
                by_regex.entry(text).or_insert_with(|| {
                    snapshot
                        .topics
                        .values()
                        .filter(|t| !t.name.starts_with("__") && re.is_match(&t.name))
                        .map(|t| &**t)
                        .collect()
                });
            }
        }
        let mut subscribed = BTreeMap::new();
        let mut names = BTreeSet::new();
        let mut per_member: Vec<(String, BTreeSet<TopicId>)> = Vec::new();
        for m in self.members.values() {
            let mut topics = BTreeSet::new();
            let by_name = m
                .topic_names
                .iter()
                .filter_map(|n| snapshot.topic(n).map(|t| &**t));
            let by_re = m
                .regex
                .as_deref()
                .and_then(|r| by_regex.get(r))
                .into_iter()
                .flatten()
                .copied();
            for t in by_name.chain(by_re) {
                topics.insert(t.id);
                subscribed.insert(t.id, t.partitions);
                names.insert(t.name.to_string());
            }
            per_member.push((m.id.clone(), topics));
        }
        self.subscribed_topic_names = names;
        if changed || subscribed != self.subscribed {
            self.subscribed = subscribed;
            self.epoch += 1;
        }
        if self.epoch <= self.assignment_epoch {
            return;
        }
        self.assignor = self.choose_assignor();
        let specs: Vec<Spec> = per_member
            .iter()
            .map(|(id, topics)| Spec {
                member_id: id,
                topics: topics.clone(),
                previous: self.target.get(id),
            })
            .collect();
        let target = assignor::assign(&self.assignor, &specs, &self.subscribed);
        tracing::debug!(epoch = self.epoch, assignor = %self.assignor, members = specs.len(), "consumer group target assignment");
        self.target = target;
        self.assignment_epoch = self.epoch;
    }

    /// The assignor most members ask for (ties to the default order), else the default.
    fn choose_assignor(&self) -> String {
        let mut votes: Vec<(usize, &str)> = assignor::ASSIGNORS.iter().map(|a| (0, *a)).collect();
        for m in self.members.values() {
            if let Some(v) = votes
                .iter_mut()
                .find(|(_, a)| Some(*a) == m.server_assignor.as_deref())
            {
                v.0 += 1;
            }
        }
        let best = votes.iter().map(|v| v.0).max().unwrap_or(0);
        votes
            .iter()
            .find(|v| v.0 == best)
            .map_or(assignor::ASSIGNORS[0], |v| v.1)
            .to_string()
    }

    /// Moves a member one step towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("member");
        if m.state == Reconciling::Unrevoked {
            // Done once the member reports none of them owned.
            if owned.is_none_or(|o| intersects(o, &m.revoking)) {
                return;
            }
            let revoked = std::mem::take(&mut m.revoking);
            for (t, ps) in &revoked {
                for p in ps {
                    if self.owners.get(&(*t, *p)).map(String::as_str) == Some(id) {
                        self.owners.remove(&(*t, *p));
                    }
                }
            }
            m.revoke_deadline = None;
            m.state = Reconciling::Stable;
        }
        if m.epoch == epoch && m.state == Reconciling::Stable {
            return;
        }
        let lose = minus(&m.assigned, &target);
        if !lose.is_empty() {
            m.assigned = both(&m.assigned, &target);
            m.revoking = lose;
            m.state = Reconciling::Unrevoked;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
            return;
        }
        let mut unreleased = false;
        for (t, ps) in minus(&target, &m.assigned) {
            for p in ps {
                match self.owners.get(&(t, p)) {
                    Some(o) if o != id => unreleased = true,
                    _ => {
                        self.owners.insert((t, p), id.to_string());
                        m.assigned.entry(t).or_default().insert(p);
                    }
                }
            }
        }
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        m.state = if unreleased {
            Reconciling::Unreleased
        } else {
            Reconciling::Stable
        };
    }

    /// Members whose session expired, or who did not revoke within their rebalance
    /// timeout, are fenced; returns their ids.
    pub fn tick(&mut self, now: Instant, cfg: &ConsumerConfig) -> Vec<String> {
        let session = Duration::from_millis(cfg.session_timeout_ms.max(0) as u64);
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now.saturating_duration_since(m.last_seen) > session
                    || m.revoke_deadline.is_some_and(|d| now >= d)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &dead {
            self.remove(id);
        }
        dead
    }

    pub fn describe(&self) -> DescribedConsumerGroup {
        DescribedConsumerGroup {
            error: code::NONE,
            message: None,
            state: self.state(),
            group_epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: if self.assignor.is_empty() {
                assignor::ASSIGNORS[0].to_string()
            } else {
                self.assignor.clone()
            },
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.topic_names.clone(),
                    subscribed_topic_regex: m.regex.clone(),
                    assignment: m.assigned.clone(),
                    target_assignment: self.target.get(&m.id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Kafka's request checks, with its messages.
fn validate(a: &HeartbeatArgs) -> Result<(), HeartbeatResult> {
    let bad = |msg: &str| Err(HeartbeatResult::error(code::INVALID_REQUEST, msg));
    if a.group.is_empty() {
        return bad("GroupId can't be empty.");
    }
    if a.instance_id.as_deref() == Some("") {
        return bad("InstanceId can't be empty.");
    }
    if a.rack_id.as_deref() == Some("") {
        return bad("RackId can't be empty.");
    }
    if a.version >= 1 && a.member_id.is_empty() {
        return bad("MemberId can't be empty.");
    }
    match a.member_epoch {
        JOIN_EPOCH => {
            if a.rebalance_timeout_ms <= 0 {
                return bad("RebalanceTimeoutMs must be provided in first request.");
            }
            if a.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                return bad("TopicPartitions must be empty when (re-)joining.");
            }
            if a.subscribed_topic_names.is_none() && a.subscribed_topic_regex.is_none() {
                return bad(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        e if e > 0 || e == LEAVE_EPOCH || e == STATIC_LEAVE_EPOCH => {
            if a.member_id.is_empty() {
                return bad("MemberId can't be empty.");
            }
        }
        _ => return bad("MemberEpoch is invalid."),
    }
    if a.member_epoch == STATIC_LEAVE_EPOCH && a.instance_id.is_none() {
        return bad("InstanceId can't be null when leaving as a static member (epoch -2).");
    }
    if let Some(name) = &a.server_assignor {
        if !assignor::ASSIGNORS.contains(&name.as_str()) {
            return Err(HeartbeatResult::error(
                code::UNSUPPORTED_ASSIGNOR,
                format!(
                    "ServerAssignor {name} is not supported. Supported assignors: {}.",
                    assignor::ASSIGNORS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A member id for v0 joins (the coordinator names members there).
fn uuid_like() -> String {
    runnel_metadata::hex(&runnel_metadata::random_id())
}
