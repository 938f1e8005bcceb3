//! The group coordinator as a state machine, without a broker or a runtime: operations in,
//! answers out on their channels, writes handed back, time moved by hand.

use bytes::Bytes;
use futures_channel::oneshot;
use runnel_group::{
    code, Coordinator, GroupConfig, GroupOp, JoinArgs, JoinResult, State, SyncArgs, SyncResult,
};
use std::collections::HashMap;
use std::time::Duration;

const SESSION_MS: i32 = 10_000;

fn coordinator(initial_delay_ms: u64) -> Coordinator {
    let c = Coordinator::new(GroupConfig {
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 300_000,
        initial_rebalance_delay_ms: initial_delay_ms,
        offsets_retention_ms: 7 * 24 * 3600 * 1000,
        durable_commits: false,
        consumer: Default::default(),
    });
    c.load(HashMap::new());
    c
}

fn args(member_id: &str, instance: Option<&str>) -> JoinArgs {
    JoinArgs {
        group: "g".into(),
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"subscription"))],
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

/// The answer on `rx`, if it was given.
fn answer<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
    rx.try_recv()
        .expect("the coordinator kept or answered the reply")
}

fn join(c: &Coordinator, a: JoinArgs) -> oneshot::Receiver<JoinResult> {
    let (tx, rx) = oneshot::channel();
    assert!(c.handle(GroupOp::Join(a, tx)).is_none());
    rx
}

/// A new member's two JoinGroups (KIP-394): the id, then the join with it (still waiting).
fn new_member(c: &Coordinator, instance: Option<&str>) -> (String, oneshot::Receiver<JoinResult>) {
    if instance.is_some() {
        let mut rx = join(c, args("", instance));
        // Static members join at once; their id comes with the join answer.
        let pending = answer(&mut rx);
        assert!(pending.is_none(), "the join waits for the round");
        return (String::new(), rx);
    }
    let r = answer(&mut join(c, args("", None))).expect("answered at once");
    assert_eq!(r.error, code::MEMBER_ID_REQUIRED);
    let rx = join(c, args(&r.member_id, None));
    (r.member_id, rx)
}

fn sync(
    c: &Coordinator,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
) -> oneshot::Receiver<SyncResult> {
    let (tx, rx) = oneshot::channel();
    let a = SyncArgs {
        group: "g".into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        assignments,
    };
    assert!(c.handle(GroupOp::Sync(a, tx)).is_none());
    rx
}

fn heartbeat(c: &Coordinator, member: &str, generation: i32) -> i16 {
    let (tx, mut rx) = oneshot::channel();
    assert!(c
        .handle(GroupOp::Heartbeat {
            group: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            reply: tx,
        })
        .is_none());
    answer(&mut rx).expect("heartbeats are answered at once")
}

fn state(c: &Coordinator) -> (State, usize) {
    let (tx, mut rx) = oneshot::channel();
    assert!(c
        .handle(GroupOp::Describe {
            group: "g".into(),
            reply: tx
        })
        .is_none());
    let d = answer(&mut rx).unwrap();
    (d.state, d.members.len())
}

/// Three members in one round, synced: (member ids, generation, leader).
fn stable_group(c: &Coordinator, instances: [Option<&str>; 3]) -> (Vec<String>, i32, String) {
    let mut joins: Vec<(String, oneshot::Receiver<JoinResult>)> =
        instances.iter().map(|i| new_member(c, *i)).collect();
    for (_, rx) in &mut joins {
        assert!(
            answer(rx).is_none(),
            "nobody is answered before the round ends"
        );
    }
    // group.initial.rebalance.delay.ms holds the first round open for more members.
    c.advance_clock(Duration::from_secs(4));
    assert!(c.tick(false).is_empty());
    let results: Vec<JoinResult> = joins
        .iter_mut()
        .map(|(_, rx)| answer(rx).expect("the round completed"))
        .collect();
    let generation = results[0].generation;
    let leader = results[0].leader.clone();
    let ids: Vec<String> = results.iter().map(|r| r.member_id.clone()).collect();
    for r in &results {
        assert_eq!(
            (r.error, r.generation, &r.leader),
            (code::NONE, generation, &leader)
        );
        assert_eq!(r.protocol.as_deref(), Some("range"));
        let expected = if r.member_id == leader { 3 } else { 0 };
        assert_eq!(
            r.members.len(),
            expected,
            "only the leader gets the member list"
        );
    }
    assert_eq!(state(c), (State::CompletingRebalance, 3));
    // The leader assigns; everyone gets their part.
    let assignments: Vec<(String, Bytes)> = ids
        .iter()
        .map(|m| (m.clone(), Bytes::from(format!("for {m}"))))
        .collect();
    let mut others: Vec<_> = ids
        .iter()
        .filter(|m| **m != leader)
        .map(|m| (m.clone(), sync(c, m, generation, Vec::new())))
        .collect();
    for (_, rx) in &mut others {
        assert!(
            answer(rx).is_none(),
            "followers wait for the leader's assignment"
        );
    }
    let mine = answer(&mut sync(c, &leader, generation, assignments)).unwrap();
    assert_eq!(mine.assignment, Bytes::from(format!("for {leader}")));
    for (m, rx) in &mut others {
        let r = answer(rx).unwrap();
        assert_eq!(
            (r.error, r.assignment.clone()),
            (code::NONE, Bytes::from(format!("for {m}")))
        );
    }
    assert_eq!(state(c), (State::Stable, 3));
    (ids, generation, leader)
}

#[test]
fn three_members_join_one_round_and_sync_their_assignments() {
    let c = coordinator(3_000);
    let (ids, generation, leader) = stable_group(&c, [None, None, None]);
    assert_eq!(generation, 1);
    assert!(ids.contains(&leader));
    for m in &ids {
        assert_eq!(heartbeat(&c, m, generation), code::NONE);
    }
    assert_eq!(
        heartbeat(&c, &ids[0], generation + 1),
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&c, "stranger", generation),
        code::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn a_member_whose_session_expires_is_removed_and_the_others_rebalance() {
    let c = coordinator(3_000);
    let (ids, generation, _) = stable_group(&c, [None, None, None]);
    let (alive, dead) = (&ids[..2], &ids[2]);
    // The first two keep heartbeating; the third goes silent past its session timeout.
    for _ in 0..3 {
        c.advance_clock(Duration::from_millis(SESSION_MS as u64 * 2 / 5));
        for m in alive {
            assert_eq!(heartbeat(&c, m, generation), code::NONE);
        }
        c.tick(false);
    }
    assert_eq!(state(&c), (State::PreparingRebalance, 2));
    assert_eq!(heartbeat(&c, dead, generation), code::UNKNOWN_MEMBER_ID);
    let mut rejoins: Vec<_> = alive
        .iter()
        .map(|m| {
            assert_eq!(heartbeat(&c, m, generation), code::REBALANCE_IN_PROGRESS);
            join(&c, args(m, None))
        })
        .collect();
    let results: Vec<JoinResult> = rejoins.iter_mut().map(|rx| answer(rx).unwrap()).collect();
    for r in &results {
        assert_eq!((r.error, r.generation), (code::NONE, generation + 1));
    }
    assert_eq!(state(&c), (State::CompletingRebalance, 2));
}

#[test]
fn a_static_member_that_restarts_takes_its_slot_back_without_a_rebalance() {
    let c = coordinator(3_000);
    let (ids, generation, leader) = stable_group(&c, [Some("i1"), Some("i2"), Some("i3")]);
    // Which member was instance i2: the one the describe lists with it.
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Describe {
        group: "g".into(),
        reply: tx,
    });
    let described = answer(&mut rx).unwrap();
    let old = described
        .members
        .iter()
        .find(|m| m.instance_id.as_deref() == Some("i2"))
        .unwrap();
    let old_id = old.member_id.clone();
    let old_assignment = old.assignment.clone();
    assert!(!old_assignment.is_empty());

    // The process restarts: a new JoinGroup with no member id and the same instance id.
    let r = answer(&mut join(&c, args("", Some("i2")))).expect("answered at once");
    assert_eq!((r.error, r.generation), (code::NONE, generation));
    assert_ne!(r.member_id, old_id);
    assert_eq!(state(&c), (State::Stable, 3), "no rebalance");
    // The old incarnation is fenced; the others see nothing happen.
    let (tx, mut hb) = oneshot::channel();
    c.handle(GroupOp::Heartbeat {
        group: "g".into(),
        generation,
        member_id: old_id.clone(),
        instance_id: Some("i2".into()),
        reply: tx,
    });
    assert_eq!(answer(&mut hb), Some(code::FENCED_INSTANCE_ID));
    for m in ids.iter().filter(|m| **m != old_id) {
        assert_eq!(heartbeat(&c, m, generation), code::NONE);
    }
    let _ = leader;
    // Its SyncGroup returns the assignment it had.
    let s = answer(&mut sync(&c, &r.member_id, generation, Vec::new())).unwrap();
    assert_eq!((s.error, s.assignment), (code::NONE, old_assignment));
}

#[test]
fn a_static_member_that_restarts_before_the_leaders_sync_starts_a_new_round() {
    // Found by the group_coordinator fuzz target: the leader assigns by the member ids of
    // the join round, so a static member that takes a new id in CompletingRebalance would
    // get nothing for the whole generation. Kafka starts a new round; so do we.
    let c = coordinator(3_000);
    let mut a = join(&c, args("", Some("i1")));
    let mut b = join(&c, args("", Some("i2")));
    c.advance_clock(Duration::from_secs(4));
    c.tick(false);
    let ra = answer(&mut a).expect("the round completed");
    let rb = answer(&mut b).expect("the round completed");
    assert_eq!(state(&c), (State::CompletingRebalance, 2));
    let (leader, follower) = if ra.member_id == ra.leader {
        (ra, rb)
    } else {
        (rb, ra)
    };
    // The follower restarts and joins with no member id before the leader syncs.
    let (tx, mut again) = oneshot::channel();
    let follower_instance = {
        let (tx2, mut rx2) = oneshot::channel();
        c.handle(GroupOp::Describe {
            group: "g".into(),
            reply: tx2,
        });
        answer(&mut rx2)
            .unwrap()
            .members
            .iter()
            .find(|m| m.member_id == follower.member_id)
            .and_then(|m| m.instance_id.clone())
            .unwrap()
    };
    assert!(c
        .handle(GroupOp::Join(args("", Some(&follower_instance)), tx))
        .is_none());
    assert!(
        answer(&mut again).is_none(),
        "the returning member waits for a new round"
    );
    assert_eq!(state(&c).0, State::PreparingRebalance);
    // The leader's sync for the old generation is refused; it rejoins, and both get the
    // next generation.
    let assignments = vec![
        (leader.member_id.clone(), Bytes::from_static(b"l")),
        (follower.member_id.clone(), Bytes::from_static(b"f")),
    ];
    let s = answer(&mut sync(
        &c,
        &leader.member_id,
        leader.generation,
        assignments,
    ));
    assert_eq!(s.map(|s| s.error), Some(code::REBALANCE_IN_PROGRESS));
    let leader_instance = if follower_instance == "i1" {
        "i2"
    } else {
        "i1"
    };
    let mut l = join(&c, args(&leader.member_id, Some(leader_instance)));
    c.advance_clock(Duration::from_secs(4));
    c.tick(false);
    let rl = answer(&mut l).expect("everyone rejoined");
    let rf = answer(&mut again).expect("everyone rejoined");
    assert_eq!(rl.generation, leader.generation + 1);
    assert_eq!(rf.generation, rl.generation);
    assert_ne!(rf.member_id, follower.member_id);
}

#[test]
fn a_member_id_under_another_instance_id_is_refused() {
    // Found by the group_coordinator fuzz target: a JoinGroup with a known member id and a
    // different group.instance.id took that member's place (and its assignment).
    let c = coordinator(3_000);
    let (_, _, _) = stable_group(&c, [Some("i1"), Some("i2"), None]);
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Describe {
        group: "g".into(),
        reply: tx,
    });
    let members = answer(&mut rx).unwrap().members;
    let id_of = |i: &str| {
        members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(i))
            .unwrap()
            .member_id
            .clone()
    };
    let r = answer(&mut join(&c, args(&id_of("i1"), Some("i2")))).expect("answered at once");
    assert_eq!(r.error, code::FENCED_INSTANCE_ID);
    let r = answer(&mut join(&c, args(&id_of("i1"), Some("i9")))).expect("answered at once");
    assert_eq!(r.error, code::UNKNOWN_MEMBER_ID);
    assert_eq!(state(&c), (State::Stable, 3), "nothing changed");
}

#[test]
fn a_member_id_the_coordinator_did_not_hand_out_is_refused_for_static_members_too() {
    // Found by the group_coordinator fuzz target: a static member joining with a member id
    // it made up was adopted under that id, so a second static member could join under the
    // same id later and take the first one's SyncGroup as the leader's.
    let c = coordinator(3_000);
    let (_, _, _) = stable_group(&c, [Some("i1"), None, None]);
    let r = answer(&mut join(&c, args("made-up", Some("i7")))).expect("answered at once");
    assert_eq!(r.error, code::UNKNOWN_MEMBER_ID);
    // An instance that is a member under its own id: fenced.
    let r = answer(&mut join(&c, args("made-up", Some("i1")))).expect("answered at once");
    assert_eq!(r.error, code::FENCED_INSTANCE_ID);
    assert_eq!(state(&c), (State::Stable, 3), "nothing changed");
    // With an empty id, a new static member joins, under an id of the coordinator's.
    let mut rx = join(&c, args("", Some("i7")));
    c.advance_clock(std::time::Duration::from_secs(10));
    c.tick(false);
    let r = answer(&mut rx).expect("the round completed");
    assert_eq!(r.error, 0);
    assert!(r.member_id != "made-up" && !r.member_id.is_empty());
}

/// A group of one member, joined and synced: (its id, the generation).
fn one_synced_member(c: &Coordinator) -> (String, i32) {
    let (id, mut rx) = new_member(c, None);
    let generation = answer(&mut rx).unwrap().generation;
    answer(&mut sync(
        c,
        &id,
        generation,
        vec![(id.clone(), Bytes::new())],
    ))
    .unwrap();
    (id, generation)
}

fn commit(
    c: &Coordinator,
    generation: i32,
    member: &str,
    offset: i64,
) -> (
    Option<runnel_group::PendingWrite>,
    oneshot::Receiver<Result<Vec<i16>, i16>>,
) {
    let (tx, rx) = oneshot::channel();
    let w = c.handle(GroupOp::Commit {
        version: 8,
        group: "g".into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        offsets: vec![("t".into(), 0, offset, -1, None)],
        reply: tx,
    });
    (w, rx)
}

/// OffsetFetch of g's partition t-0.
fn fetch(c: &Coordinator) -> Result<Vec<runnel_group::FetchedTopic>, i16> {
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Fetch {
        member: None,
        group: "g".into(),
        partitions: Some(vec![("t".into(), vec![0])]),
        require_stable: false,
        reply: tx,
    });
    answer(&mut rx).unwrap()
}

fn committed(c: &Coordinator) -> i64 {
    fetch(c).unwrap()[0].1[0].1
}

#[test]
fn commits_are_checked_against_the_generation_and_applied_only_once_written() {
    let c = coordinator(0);
    let (id, mut rx) = new_member(&c, None);
    let generation = answer(&mut rx).unwrap().generation;
    // Not synced yet: the group is completing its rebalance.
    let (w, mut r) = commit(&c, generation, &id, 5);
    assert!(w.is_none());
    assert_eq!(answer(&mut r), Some(Err(code::REBALANCE_IN_PROGRESS)));
    answer(&mut sync(
        &c,
        &id,
        generation,
        vec![(id.clone(), Bytes::new())],
    ))
    .unwrap();

    for (generation, member, expected) in [
        (generation + 1, id.as_str(), code::ILLEGAL_GENERATION),
        (generation, "someone-else", code::UNKNOWN_MEMBER_ID),
        // A standalone commit is for groups without members.
        (-1, "", code::UNKNOWN_MEMBER_ID),
    ] {
        let (w, mut r) = commit(&c, generation, member, 5);
        assert!(w.is_none());
        assert_eq!(answer(&mut r), Some(Err(expected)));
    }

    // A good commit is answered only after its record is written.
    let (w, mut r) = commit(&c, generation, &id, 7);
    let w = w.expect("a write");
    assert_eq!(w.records.len(), 1);
    assert!(!c.quiescent(), "a write is in flight");
    assert!(answer(&mut r).is_none());
    assert_eq!(committed(&c), -1, "not applied before it is written");
    c.complete(w, Ok(()));
    assert!(c.quiescent());
    assert_eq!(answer(&mut r), Some(Ok(vec![code::NONE])));
    assert_eq!(committed(&c), 7);

    // A failed write answers KAFKA_STORAGE_ERROR and changes nothing.
    let (w, mut r) = commit(&c, generation, &id, 9);
    c.complete(w.unwrap(), Err(code::KAFKA_STORAGE_ERROR));
    assert_eq!(answer(&mut r), Some(Ok(vec![code::KAFKA_STORAGE_ERROR])));
    assert_eq!(committed(&c), 7);
}

#[test]
fn a_member_id_handed_out_and_never_used_holds_a_rebalance_only_for_its_session_timeout() {
    let c = coordinator(0);
    let (id, generation) = one_synced_member(&c);
    // A second consumer gets its id (KIP-394) and never joins with it (it resubscribed, or
    // went away); a third joins properly, which starts a rebalance.
    let abandoned = answer(&mut join(&c, args("", None))).unwrap();
    assert_eq!(abandoned.error, code::MEMBER_ID_REQUIRED);
    let (_, mut third) = new_member(&c, None);
    assert_eq!(heartbeat(&c, &id, generation), code::REBALANCE_IN_PROGRESS);
    let mut first = join(&c, args(&id, None));
    c.tick(false);
    assert!(
        answer(&mut first).is_none(),
        "the join waits for the handed-out id"
    );
    // Past its session timeout the id is forgotten and the round completes, long before the
    // rebalance timeout.
    c.advance_clock(Duration::from_millis(SESSION_MS as u64 + 100));
    c.tick(false);
    let r = answer(&mut first).expect("the round completed");
    assert_eq!((r.error, r.generation), (code::NONE, generation + 1));
    assert_eq!(answer(&mut third).unwrap().generation, generation + 1);
    assert_eq!(state(&c), (State::CompletingRebalance, 2));
}

#[test]
fn a_member_that_leaves_with_a_handed_out_id_no_longer_holds_the_rebalance() {
    let c = coordinator(0);
    let (id, generation) = one_synced_member(&c);
    let abandoned = answer(&mut join(&c, args("", None))).unwrap().member_id;
    let (_, mut third) = new_member(&c, None);
    let mut first = join(&c, args(&id, None));
    assert!(
        answer(&mut first).is_none(),
        "the join waits for the handed-out id"
    );
    // It unsubscribes before joining with its id: LeaveGroup with that id.
    let (tx, mut left) = oneshot::channel();
    c.handle(GroupOp::Leave {
        group: "g".into(),
        members: vec![(abandoned, None)],
        reply: tx,
    });
    assert_eq!(answer(&mut left), Some((code::NONE, vec![code::NONE])));
    assert_eq!(
        answer(&mut first).expect("completed").generation,
        generation + 1
    );
    assert_eq!(answer(&mut third).unwrap().generation, generation + 1);
}

/// A group's `__consumer_offsets` partition being replayed: its groups get
/// COORDINATOR_LOAD_IN_PROGRESS (never an empty answer that would send a consumer back to
/// auto.offset.reset); a partition this coordinator does not lead: NOT_COORDINATOR.
#[test]
fn groups_of_a_partition_being_loaded_or_not_led_are_not_answered_from_an_empty_state() {
    let c = coordinator(0);
    let partitions = 50;
    let p = runnel_group::offsets::partition_for("g", partitions);
    c.loading(p, partitions);
    assert_eq!(fetch(&c).err(), Some(code::COORDINATOR_LOAD_IN_PROGRESS));
    let committed = runnel_group::offsets::Committed {
        offset: 42,
        leader_epoch: -1,
        metadata: None,
        commit_ms: 0,
    };
    c.load_partition(
        p,
        HashMap::from([(("g".to_string(), "t".into(), 0), committed)]),
    );
    assert_eq!(fetch(&c).unwrap()[0].1[0].1, 42);
    c.unload(p, partitions);
    assert_eq!(fetch(&c).err(), Some(code::NOT_COORDINATOR));
}

/// A commit whose write completes after the coordinator lost the group's partition is
/// answered (it is in the log, where the new coordinator loads it) but leaves no stray
/// group behind here.
#[test]
fn a_commit_completed_after_the_partition_moved_away_leaves_no_group_behind() {
    let c = coordinator(0);
    let partitions = 50;
    let p = runnel_group::offsets::partition_for("g", partitions);
    c.loading(p, partitions);
    c.load_partition(p, HashMap::new());
    let (w, mut rx) = commit(&c, -1, "", 7);
    let w = w.expect("a write to do");
    c.unload(p, partitions);
    c.complete(w, Ok(()));
    assert_eq!(answer(&mut rx).unwrap(), Ok(vec![code::NONE]));
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::List {
        states: vec![],
        types: vec![],
        reply: tx,
    });
    assert!(answer(&mut rx).unwrap().is_empty(), "no group re-created");
}

#[test]
fn the_offsets_of_a_deleted_topic_are_tombstoned_and_forgotten_and_others_kept() {
    let c = coordinator(0);
    let (id, generation) = one_synced_member(&c);
    let (w, _r) = commit(&c, generation, &id, 7);
    c.complete(w.unwrap(), Ok(()));
    assert_eq!(committed(&c), 7);
    let now = c.wall_ms();
    let other: HashMap<std::sync::Arc<str>, i64> = [("u".into(), now)].into();
    assert!(c.offsets_of_deleted(&other).is_empty(), "no offsets of u");
    // Deleted before the commit: that commit is to a topic created again, and stays.
    let earlier: HashMap<std::sync::Arc<str>, i64> = [("t".into(), now - 60_000)].into();
    assert!(c.offsets_of_deleted(&earlier).is_empty());
    let deleted: HashMap<std::sync::Arc<str>, i64> = [("t".into(), now)].into();
    let found = c.offsets_of_deleted(&deleted);
    assert_eq!(found, vec![("g".to_string(), vec![("t".into(), 0)])]);
    let (group, keys) = found.into_iter().next().unwrap();
    let w = c.expire(&group, keys);
    // Tombstones: a key with no value.
    assert!(w.records.iter().all(|(k, v)| &*k.1 == "t" && v.is_none()));
    assert_eq!(committed(&c), 7, "kept until the tombstones are written");
    c.complete(w, Ok(()));
    assert_eq!(committed(&c), -1);

    // A commit made while the tombstones are being written (to the topic created again)
    // stays.
    let (w, _r) = commit(&c, generation, &id, 8);
    c.complete(w.unwrap(), Ok(()));
    let deleted: HashMap<std::sync::Arc<str>, i64> = [("t".into(), c.wall_ms())].into();
    let (group, keys) = c.offsets_of_deleted(&deleted).into_iter().next().unwrap();
    let w = c.expire(&group, keys);
    c.advance_clock(Duration::from_secs(1));
    let (w2, _r2) = commit(&c, generation, &id, 9);
    c.complete(w2.unwrap(), Ok(()));
    c.complete(w, Ok(()));
    assert_eq!(committed(&c), 9);
}

#[test]
fn an_empty_group_without_offsets_stays_listed_until_the_retention_pass() {
    let c = coordinator(0);
    let leave = |id: String| {
        let (tx, _rx) = oneshot::channel();
        c.handle(GroupOp::Leave {
            group: "g".into(),
            members: vec![(id, None)],
            reply: tx,
        });
    };
    let (id, generation) = one_synced_member(&c);
    leave(id);
    c.tick(false);
    assert_eq!(state(&c), (State::Empty, 0));
    // Rejoining continues the generations, as in Kafka.
    let (id, mut rx) = new_member(&c, None);
    assert!(answer(&mut rx).unwrap().generation > generation);
    leave(id);
    c.tick(false);
    assert_eq!(state(&c), (State::Empty, 0));
    c.tick(true);
    assert_eq!(state(&c), (State::Dead, 0));
}

/// TxnOffsetCommit of g's partition t-0 by producer 7 (no membership: generation -1).
fn txn_commit(c: &Coordinator, offset: i64) -> Option<Vec<i16>> {
    let (tx, mut rx) = oneshot::channel();
    let w = c
        .handle(GroupOp::TxnCommit {
            group: "g".into(),
            producer_id: 7,
            producer_epoch: 0,
            generation: -1,
            member_id: String::new(),
            instance_id: None,
            offsets: vec![("t".into(), 0, offset, -1, None)],
            reply: tx,
        })
        .expect("a write");
    assert_eq!(
        w.txn,
        Some((7, 0)),
        "written as the producer's transactional batch"
    );
    c.complete(w, Ok(()));
    answer(&mut rx).unwrap().ok()
}

fn fetch_stable(c: &Coordinator) -> (i64, i16) {
    let (tx, mut rx) = oneshot::channel();
    c.handle(GroupOp::Fetch {
        member: None,
        group: "g".into(),
        partitions: Some(vec![("t".into(), vec![0])]),
        require_stable: true,
        reply: tx,
    });
    let rows = answer(&mut rx).unwrap().unwrap();
    (rows[0].1[0].1, rows[0].1[0].4)
}

#[test]
fn transactional_offsets_wait_for_their_marker() {
    let c = coordinator(0);
    assert_eq!(txn_commit(&c, 40), Some(vec![0]));
    // Pending: not committed, unstable to a require_stable fetch, no compaction meanwhile.
    assert_eq!(committed(&c), -1);
    assert_eq!(fetch_stable(&c), (-1, code::UNSTABLE_OFFSET_COMMIT));
    assert!(!c.quiescent());
    // An abort marker drops them.
    c.complete_txn(0, 7, false);
    assert_eq!(committed(&c), -1);
    assert_eq!(fetch_stable(&c), (-1, 0));
    assert!(c.quiescent());
    // A commit marker applies them; another producer's marker does nothing.
    txn_commit(&c, 50);
    c.complete_txn(0, 8, true);
    assert_eq!(committed(&c), -1);
    c.complete_txn(0, 7, true);
    assert_eq!(committed(&c), 50);
    assert_eq!(fetch_stable(&c), (50, 0));
    // Pending offsets of a partition this coordinator stops leading go with it.
    txn_commit(&c, 60);
    assert!(!c.quiescent());
    c.unload(runnel_group::offsets::partition_for("g", 50), 50);
    assert!(c.quiescent());
}
