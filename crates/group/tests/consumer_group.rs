//! KIP-848's consumer group protocol through the coordinator: joins, reconciliation
//! (revoke first, then assign; never one partition with two members), leaving, fencing,
//! static members, timeouts, and the offset checks of consumer groups.

use futures_channel::oneshot;
use runnel_group::consumer::{ConsumerConfig, HeartbeatArgs, HeartbeatResult};
use runnel_group::{code, Coordinator, GroupConfig, GroupOp, JoinArgs, JoinResult};
use runnel_metadata::{Snapshot, TopicId, TopicMeta};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

const T: TopicId = [7; 16];

fn snapshot(partitions: i32) -> Arc<Snapshot> {
    let mut s = Snapshot::default();
    let meta = Arc::new(TopicMeta {
        name: Arc::from("t"),
        id: T,
        partitions,
        overrides: BTreeMap::new(),
        assignment: Vec::new(),
    });
    s.topics.insert(meta.name.clone(), meta.clone());
    s.by_id.insert(T, meta.name.clone());
    Arc::new(s)
}

fn coordinator() -> Coordinator {
    let c = Coordinator::new(GroupConfig {
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 300_000,
        initial_rebalance_delay_ms: 0,
        offsets_retention_ms: 7 * 24 * 3600 * 1000,
        durable_commits: false,
        consumer: ConsumerConfig {
            heartbeat_interval_ms: 500,
            session_timeout_ms: 10_000,
        },
    });
    c.load(HashMap::new());
    c
}

fn args(member: &str, epoch: i32, snap: &Arc<Snapshot>) -> HeartbeatArgs {
    HeartbeatArgs {
        group: "g".into(),
        version: 1,
        member_id: member.into(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: if epoch == 0 { 30_000 } else { -1 },
        subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
        subscribed_topic_regex: None,
        server_assignor: None,
        owned: (epoch == 0).then(Vec::new),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        snapshot: snap.clone(),
    }
}

fn beat(c: &Coordinator, a: HeartbeatArgs) -> HeartbeatResult {
    let (tx, mut rx) = oneshot::channel();
    assert!(c
        .handle(GroupOp::ConsumerHeartbeat(Box::new(a), tx))
        .is_none());
    rx.try_recv().unwrap().expect("answered at once")
}

/// A heartbeat reporting `owned` partitions of topic t.
fn beat_owning(
    c: &Coordinator,
    member: &str,
    epoch: i32,
    owned: &[i32],
    snap: &Arc<Snapshot>,
) -> HeartbeatResult {
    let mut a = args(member, epoch, snap);
    a.owned = Some(vec![(T, owned.to_vec())]);
    beat(c, a)
}

fn parts(r: &HeartbeatResult) -> Option<Vec<i32>> {
    r.assignment.as_ref().map(|a| {
        let mut v: Vec<i32> = a.iter().flat_map(|(_, ps)| ps.clone()).collect();
        v.sort();
        v
    })
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_revoked_them() {
    let c = coordinator();
    let snap = snapshot(4);
    let r = beat(&c, args("m1", 0, &snap));
    assert_eq!(r.error, code::NONE);
    assert_eq!(r.member_id.as_deref(), Some("m1"));
    assert_eq!(r.heartbeat_interval_ms, 500);
    assert_eq!(parts(&r), Some(vec![0, 1, 2, 3]));
    let e1 = r.member_epoch;
    assert!(e1 > 0);

    // m2 joins: its share is still m1's, so it gets nothing yet, at the new epoch.
    let r2 = beat(&c, args("m2", 0, &snap));
    assert_eq!(parts(&r2), Some(vec![]));
    let e2 = r2.member_epoch;
    assert!(e2 > e1);

    // m1 is told to give up two partitions, at its old epoch.
    let r = beat(&c, args("m1", e1, &snap));
    assert_eq!(
        r.member_epoch, e1,
        "the epoch moves only once the partitions are revoked"
    );
    let kept = parts(&r).expect("the smaller assignment");
    assert_eq!(kept.len(), 2);
    // Until m1 reports them gone, m2 still gets nothing.
    let r = beat(&c, args("m2", e2, &snap));
    assert!(parts(&r).is_none_or(|p| p.is_empty()));
    // m1 revoked: it moves to the new epoch, and m2 gets the other two.
    let r = beat_owning(&c, "m1", e1, &kept, &snap);
    assert_eq!(r.member_epoch, e2);
    let r = beat_owning(&c, "m2", e2, &[], &snap);
    let theirs = parts(&r).expect("m2's partitions");
    assert_eq!(theirs.len(), 2);
    assert!(
        theirs.iter().all(|p| !kept.contains(p)),
        "{kept:?} vs {theirs:?}"
    );

    // Described: stable, both members at the group's epoch with their assignments.
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::ConsumerDescribe {
        group: "g".into(),
        reply: tx,
    });
    let d = rx.try_recv().unwrap().unwrap();
    assert_eq!(d.error, code::NONE);
    assert_eq!(d.state, "Stable");
    assert_eq!(d.assignor, "uniform");
    assert_eq!(d.members.len(), 2);
    assert!(d
        .members
        .iter()
        .all(|m| m.member_epoch == e2 && m.assignment == m.target_assignment));
}

#[test]
fn a_leaving_member_frees_its_partitions_for_the_others() {
    let c = coordinator();
    let snap = snapshot(2);
    let e1 = beat(&c, args("m1", 0, &snap)).member_epoch;
    let e2 = beat(&c, args("m2", 0, &snap)).member_epoch;
    let kept = parts(&beat(&c, args("m1", e1, &snap))).unwrap();
    beat_owning(&c, "m1", e1, &kept, &snap);
    let r = beat_owning(&c, "m2", e2, &[], &snap);
    assert_eq!(parts(&r).unwrap().len(), 1);
    // m2 leaves (epoch -1): m1 gets both at its next heartbeat.
    let r = beat(&c, args("m2", -1, &snap));
    assert_eq!((r.error, r.member_epoch), (code::NONE, -1));
    let r = beat(&c, args("m1", e2, &snap));
    assert_eq!(parts(&r), Some(vec![0, 1]));
    assert!(r.member_epoch > e2);
    // The member that left is unknown now.
    let r = beat(&c, args("m2", e2, &snap));
    assert_eq!(r.error, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn epochs_from_the_future_or_the_past_are_fenced_unless_an_answer_was_lost() {
    let c = coordinator();
    let snap = snapshot(2);
    let e1 = beat(&c, args("m1", 0, &snap)).member_epoch;
    assert_eq!(
        beat(&c, args("m1", e1 + 5, &snap)).error,
        code::FENCED_MEMBER_EPOCH
    );
    // Partitions grow: m1 moves to a new epoch with three partitions.
    let snap3 = snapshot(3);
    let r = beat(&c, args("m1", e1, &snap3));
    let e2 = r.member_epoch;
    assert!(e2 > e1);
    assert_eq!(parts(&r), Some(vec![0, 1, 2]));
    // The answer was lost: m1 retries at its previous epoch with what it owned: accepted.
    let r = beat_owning(&c, "m1", e1, &[0, 1], &snap3);
    assert_eq!((r.error, r.member_epoch), (code::NONE, e2));
    assert_eq!(parts(&r), Some(vec![0, 1, 2]), "the assignment again");
    // Without saying what it owns, the old epoch is fenced.
    assert_eq!(
        beat(&c, args("m1", e1, &snap3)).error,
        code::FENCED_MEMBER_EPOCH
    );
    // A fenced member rejoins with its id and epoch 0 and gets everything again.
    let r = beat(&c, args("m1", 0, &snap3));
    assert_eq!(r.error, code::NONE);
    assert_eq!(parts(&r), Some(vec![0, 1, 2]));
}

#[test]
fn a_static_member_comes_back_to_its_partitions_without_a_new_epoch() {
    let c = coordinator();
    let snap = snapshot(2);
    let mut a = args("old", 0, &snap);
    a.instance_id = Some("i1".into());
    let r = beat(&c, a);
    let e = r.member_epoch;
    assert_eq!(parts(&r), Some(vec![0, 1]));
    // Another member cannot take the instance id while it is in use.
    let mut other = args("other", 0, &snap);
    other.instance_id = Some("i1".into());
    assert_eq!(beat(&c, other).error, code::UNRELEASED_INSTANCE_ID);
    // Leaving as a static member (-2) keeps the slot.
    let mut leave = args("old", -2, &snap);
    leave.instance_id = Some("i1".into());
    assert_eq!(beat(&c, leave).member_epoch, -2);
    let mut back = args("new", 0, &snap);
    back.instance_id = Some("i1".into());
    let r = beat(&c, back);
    assert_eq!(r.error, code::NONE);
    assert_eq!(r.member_epoch, e, "no new epoch");
    assert_eq!(parts(&r), Some(vec![0, 1]));
    assert_eq!(
        beat(&c, args("old", e, &snap)).error,
        code::UNKNOWN_MEMBER_ID
    );
    // Coming back under the id of another member that is still there: that member goes
    // (it is not silently overwritten), so the group has one member and a new epoch.
    let e_dup = beat(&c, args("dup", 0, &snap)).member_epoch;
    let mut leave = args("new", -2, &snap);
    leave.instance_id = Some("i1".into());
    beat(&c, leave);
    let mut back = args("dup", 0, &snap);
    back.instance_id = Some("i1".into());
    assert_eq!(beat(&c, back).error, code::NONE);
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::ConsumerDescribe {
        group: "g".into(),
        reply: tx,
    });
    let d = rx.try_recv().unwrap().unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].instance_id.as_deref(), Some("i1"));
    assert!(
        d.group_epoch > e_dup,
        "the member it replaced left the group"
    );
}

#[test]
fn silent_members_and_members_that_do_not_revoke_are_removed() {
    let c = coordinator();
    let snap = snapshot(2);
    let e1 = beat(&c, args("m1", 0, &snap)).member_epoch;
    let mut a = args("m2", 0, &snap);
    a.rebalance_timeout_ms = 5_000;
    let e2 = beat(&c, a).member_epoch;
    // m1 is asked to revoke and never does: fenced after its rebalance timeout (30 s).
    assert!(parts(&beat(&c, args("m1", e1, &snap))).is_some());
    c.advance_clock(Duration::from_secs(8));
    beat(&c, args("m2", e2, &snap));
    c.tick(false);
    assert_eq!(
        beat(&c, args("m1", e1, &snap)).error,
        code::NONE,
        "within its rebalance timeout"
    );
    c.advance_clock(Duration::from_secs(25));
    beat(&c, args("m2", e2, &snap));
    c.tick(false);
    assert_eq!(
        beat(&c, args("m1", e1, &snap)).error,
        code::UNKNOWN_MEMBER_ID
    );
    // m2 now gets both.
    let r = beat(&c, args("m2", e2, &snap));
    assert_eq!(parts(&r), Some(vec![0, 1]));
    // And after its session timeout (10 s) of silence, m2 is gone too: the group is empty,
    // and without offsets it is forgotten at the next retention pass (as Kafka does at its
    // offsets cleanup).
    c.advance_clock(Duration::from_secs(11));
    c.tick(false);
    let describe = |c: &Coordinator| {
        let (tx, mut rx) = oneshot::channel();
        c.handle(GroupOp::ConsumerDescribe {
            group: "g".into(),
            reply: tx,
        });
        let d = rx.try_recv().unwrap().unwrap();
        (d.error, d.state, d.members.len())
    };
    assert_eq!(describe(&c), (code::NONE, "Empty", 0));
    c.tick(true);
    assert_eq!(describe(&c), (code::GROUP_ID_NOT_FOUND, "Dead", 0));
}

#[test]
fn bad_heartbeats_get_kafkas_errors() {
    let c = coordinator();
    let snap = snapshot(1);
    let mut a = args("", 0, &snap);
    assert_eq!(
        beat(&c, a.clone()).error,
        code::INVALID_REQUEST,
        "v1 needs a member id"
    );
    a.version = 0;
    let r = beat(&c, a);
    assert_eq!(r.error, code::NONE, "v0: the coordinator names the member");
    assert!(!r.member_id.unwrap().is_empty());
    let mut a = args("m", 0, &snap);
    a.rebalance_timeout_ms = -1;
    assert_eq!(beat(&c, a).error, code::INVALID_REQUEST);
    let mut a = args("m", 0, &snap);
    a.subscribed_topic_names = None;
    assert_eq!(beat(&c, a).error, code::INVALID_REQUEST);
    let mut a = args("m", 0, &snap);
    a.server_assignor = Some("sticky".into());
    assert_eq!(beat(&c, a).error, code::UNSUPPORTED_ASSIGNOR);
    let mut a = args("m", 0, &snap);
    a.subscribed_topic_regex = Some("t(".into());
    assert_eq!(beat(&c, a).error, code::INVALID_REGULAR_EXPRESSION);
    assert_eq!(
        beat(&c, args("nobody", 3, &snap)).error,
        code::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn a_regex_subscription_and_the_range_assignor() {
    let c = coordinator();
    let snap = snapshot(4);
    let mut a = args("a", 0, &snap);
    a.subscribed_topic_names = None;
    a.subscribed_topic_regex = Some("t|u".into());
    a.server_assignor = Some("range".into());
    let r = beat(&c, a);
    assert_eq!(parts(&r), Some(vec![0, 1, 2, 3]));
    let mut b = args("b", 0, &snap);
    b.server_assignor = Some("range".into());
    let eb = beat(&c, b).member_epoch;
    let ea = r.member_epoch;
    let kept = parts(&beat(&c, args("a", ea, &snap))).unwrap();
    assert_eq!(
        kept,
        vec![0, 1],
        "range: a (first by id) keeps the first half"
    );
    beat_owning(&c, "a", ea, &kept, &snap);
    assert_eq!(
        parts(&beat_owning(&c, "b", eb, &[], &snap)),
        Some(vec![2, 3])
    );
    // A topic subscribed by regex only is still subscribed: OffsetDelete refuses it.
    beat(&c, args("b", -1, &snap));
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::OffsetDelete {
        group: "g".into(),
        partitions: vec![("t".into(), vec![0])],
        reply: tx,
    });
    let (error, rows) = rx.try_recv().unwrap().unwrap();
    assert_eq!(error, code::NONE);
    assert_eq!(rows[0].1, vec![(0, code::GROUP_SUBSCRIBED_TO_TOPIC)]);
}

/// A classic consumer's JoinGroup.
fn join_args(member_id: &str) -> JoinArgs {
    JoinArgs {
        group: "g".into(),
        member_id: member_id.into(),
        instance_id: None,
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Default::default())],
        client_id: "c".into(),
        client_host: "h".into(),
        require_known_member_id: true,
    }
}

fn join(c: &Coordinator) -> JoinResult {
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Join(join_args(""), tx));
    rx.try_recv().unwrap().expect("answered")
}

fn commit(c: &Coordinator, version: i16, member: &str, epoch: i32) -> Result<Vec<i16>, i16> {
    let (tx, mut rx) = oneshot::channel();
    let w = c.handle(GroupOp::Commit {
        group: "g".into(),
        version,
        generation: epoch,
        member_id: member.into(),
        instance_id: None,
        offsets: vec![(Arc::from("t"), 0, 5, -1, None)],
        reply: tx,
    });
    if let Some(w) = w {
        c.complete(w, Ok(()));
    }
    rx.try_recv().unwrap().expect("answered")
}

#[test]
fn classic_and_consumer_groups_keep_apart_and_commits_check_the_member_epoch() {
    let c = coordinator();
    let snap = snapshot(1);
    let e = beat(&c, args("m", 0, &snap)).member_epoch;
    // A classic member cannot join a consumer group with members.
    assert_eq!(join(&c).error, code::INCONSISTENT_GROUP_PROTOCOL);
    // Commits: the member at its epoch with v9; a stale epoch; an old version; outsiders.
    assert_eq!(commit(&c, 9, "m", e), Ok(vec![code::NONE]));
    assert_eq!(commit(&c, 9, "m", e - 1), Err(code::STALE_MEMBER_EPOCH));
    assert_eq!(commit(&c, 8, "m", e), Err(code::UNSUPPORTED_VERSION));
    assert_eq!(commit(&c, 9, "x", e), Err(code::UNKNOWN_MEMBER_ID));
    assert_eq!(
        commit(&c, 9, "", -1),
        Err(code::UNKNOWN_MEMBER_ID),
        "not while it has members"
    );
    // OffsetFetch v9 from a member checks its epoch too.
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Fetch {
        group: "g".into(),
        partitions: None,
        require_stable: false,
        member: Some(("m".into(), e + 1)),
        reply: tx,
    });
    assert_eq!(
        rx.try_recv().unwrap().unwrap().err(),
        Some(code::STALE_MEMBER_EPOCH)
    );
    // Listed as a consumer group.
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::List {
        states: vec![],
        types: vec!["Consumer".into()],
        reply: tx,
    });
    let listed = rx.try_recv().unwrap().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].group_type, listed[0].state),
        ("consumer", "Stable")
    );
    // Once empty, it becomes a classic group on JoinGroup, offsets kept; then a
    // heartbeat is refused while the classic group has members.
    beat(&c, args("m", -1, &snap));
    assert_eq!(commit(&c, 9, "", -1), Ok(vec![code::NONE]));
    assert_eq!(join(&c).error, code::MEMBER_ID_REQUIRED);
    let r = join(&c);
    let (tx, _rx) = oneshot::channel();
    c.handle(GroupOp::Join(join_args(&r.member_id), tx));
    assert_eq!(
        beat(&c, args("m2", 0, &snap)).error,
        code::GROUP_ID_NOT_FOUND
    );
}
