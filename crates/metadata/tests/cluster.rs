//! The metadata log's state machine: commands, their encoding, placement and leadership.

use runnel_metadata::cluster::{apply, code, Command, Outcome, Proposal};
use runnel_metadata::{BrokerMeta, BrokerState, Snapshot};
use std::collections::{BTreeMap, BTreeSet};

fn broker(id: i32, rack: Option<&str>) -> BrokerMeta {
    BrokerMeta {
        id,
        host: format!("10.0.0.{id}"),
        port: 9092,
        rack: rack.map(str::to_string),
        dir_id: [id as u8; 16],
        incarnation: 100 + id as u64,
        state: BrokerState::Active,
    }
}

fn cluster(racks: &[Option<&str>]) -> Snapshot {
    let mut s = Snapshot::default();
    for (i, r) in racks.iter().enumerate() {
        apply(&mut s, &Command::RegisterBroker(broker(i as i32 + 1, *r))).unwrap();
    }
    s
}

fn create(
    s: &mut Snapshot,
    name: &str,
    partitions: i32,
    rf: i16,
) -> Result<Outcome, (i16, String)> {
    apply(
        s,
        &Command::CreateTopic {
            name: name.into(),
            id: runnel_metadata::random_id(),
            partitions,
            replication_factor: rf,
            assignment: None,
            configs: BTreeMap::new(),
        },
    )
}

/// A topic of one partition on exactly `replicas`.
fn create_one_on(s: &mut Snapshot, name: &str, replicas: &[i32]) {
    apply(
        s,
        &Command::CreateTopic {
            name: name.into(),
            id: runnel_metadata::random_id(),
            partitions: 1,
            replication_factor: replicas.len() as i16,
            assignment: Some(vec![replicas.to_vec()]),
            configs: BTreeMap::new(),
        },
    )
    .unwrap();
}

fn leaders(s: &Snapshot, topic: &str) -> Vec<i32> {
    s.topic(topic)
        .unwrap()
        .assignment
        .iter()
        .map(|p| p.leader)
        .collect()
}

#[test]
fn every_command_round_trips_through_its_text() {
    let mut configs = BTreeMap::new();
    configs.insert("retention.ms".to_string(), "1000".to_string());
    let p = Proposal {
        request_id: u64::MAX,
        from: 3,
        commands: vec![
            Command::InitCluster {
                cluster_id: "abc-_".into(),
            },
            Command::RegisterBroker(broker(1, Some("rack-a"))),
            Command::RegisterBroker(broker(2, None)),
            Command::FenceBroker {
                id: 1,
                incarnation: 7,
            },
            Command::UnfenceBroker {
                id: 1,
                incarnation: 7,
            },
            Command::ShutdownBroker {
                id: 2,
                incarnation: 8,
            },
            Command::CreateTopic {
                name: "t.x_y-z".into(),
                id: [9; 16],
                partitions: 2,
                replication_factor: 2,
                assignment: Some(vec![vec![1, 2], vec![2, 1]]),
                configs,
            },
            Command::CreateTopic {
                name: "u".into(),
                id: [8; 16],
                partitions: 1,
                replication_factor: 1,
                assignment: None,
                configs: BTreeMap::new(),
            },
            Command::DeleteTopic { name: "u".into() },
            Command::CreatePartitions {
                name: "t".into(),
                count: 4,
                assignment: None,
            },
            Command::ElectPreferred { topics: None },
            Command::ElectPreferred {
                topics: Some(vec![("a:b".into(), 1), ("c".into(), 0)]),
            },
            Command::AllocateProducerIds { count: 1000 },
            Command::ReplicaOffline {
                broker: 2,
                incarnation: u64::MAX,
                topic: "t".into(),
                topic_id: [9; 16],
                partition: 3,
            },
        ],
    };
    assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
    assert!(Proposal::decode("proposal 1 2\nfly away\n").is_err());
    assert!(Proposal::decode("proposal 1 2\ndelete a b\n").is_err());
    assert!(Proposal::decode("nonsense").is_err());
}

#[test]
fn replicas_spread_over_brokers_and_racks_and_the_first_replica_leads() {
    let mut s = cluster(&[None, None, None]);
    create(&mut s, "t", 6, 3).unwrap();
    let t = s.topic("t").unwrap().clone();
    for p in &t.assignment {
        let set: BTreeSet<i32> = p.replicas.iter().copied().collect();
        assert_eq!(set, BTreeSet::from([1, 2, 3]));
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!(p.isr, p.replicas);
    }
    let mut per_leader = BTreeMap::new();
    for l in leaders(&s, "t") {
        *per_leader.entry(l).or_insert(0) += 1;
    }
    assert_eq!(
        per_leader.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );

    let mut s = cluster(&[Some("a"), Some("a"), Some("b"), Some("b")]);
    create(&mut s, "r", 8, 2).unwrap();
    let rack = |id: i32| s.brokers[&id].rack.clone();
    for p in &s.topic("r").unwrap().assignment {
        assert_ne!(rack(p.replicas[0]), rack(p.replicas[1]), "{p:?}");
    }
    assert_eq!(
        create(&mut s, "big", 1, 5).unwrap_err().0,
        code::INVALID_REPLICATION_FACTOR
    );
    assert_eq!(
        create(&mut s, "r", 1, 1).unwrap_err().0,
        code::TOPIC_ALREADY_EXISTS
    );
}

#[test]
fn a_fenced_broker_loses_its_leaderships_to_the_isr_and_gets_them_back_when_needed() {
    let mut s = cluster(&[None, None, None]);
    create(&mut s, "t", 3, 2).unwrap();
    let before = s.topic("t").unwrap().clone();
    let led_by_1: Vec<usize> = (0..3)
        .filter(|&p| before.assignment[p].leader == 1)
        .collect();
    assert!(!led_by_1.is_empty());
    apply(
        &mut s,
        &Command::FenceBroker {
            id: 1,
            incarnation: 101,
        },
    )
    .unwrap();
    let after = s.topic("t").unwrap().clone();
    for p in 0..3 {
        let (b, a) = (&before.assignment[p], &after.assignment[p]);
        assert!(!a.isr.contains(&1) || a.isr == vec![1]);
        assert_ne!(a.leader, 1);
        if b.leader == 1 {
            assert_eq!(a.leader_epoch, b.leader_epoch + 1);
            assert!(a.leader > 0 && b.replicas.contains(&a.leader));
        } else {
            assert_eq!((a.leader, a.leader_epoch), (b.leader, b.leader_epoch));
        }
    }
    assert!(!s.is_live(1));
    // A fence decided about an earlier run does not touch the broker's next run.
    apply(&mut s, &Command::RegisterBroker(broker(1, None))).unwrap();
    let mut newer = broker(1, None);
    newer.incarnation = 999;
    apply(&mut s, &Command::RegisterBroker(newer)).unwrap();
    apply(
        &mut s,
        &Command::FenceBroker {
            id: 1,
            incarnation: 101,
        },
    )
    .unwrap();
    assert!(s.is_live(1));
    // The last ISR member going away leaves the partition without a leader, still in
    // the ISR; it leads again when it is back.
    let mut s = cluster(&[None]);
    create(&mut s, "one", 1, 1).unwrap();
    apply(
        &mut s,
        &Command::ShutdownBroker {
            id: 1,
            incarnation: 101,
        },
    )
    .unwrap();
    let p = s.partition("one", 0).unwrap().clone();
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (-1, vec![1], 1));
    apply(&mut s, &Command::RegisterBroker(broker(1, None))).unwrap();
    let p = s.partition("one", 0).unwrap();
    assert_eq!((p.leader, p.leader_epoch), (1, 2));
}

#[test]
fn a_node_id_live_on_another_directory_is_refused_until_fenced() {
    let mut s = cluster(&[None, None]);
    let mut other = broker(2, None);
    other.dir_id = [77; 16];
    let e = apply(&mut s, &Command::RegisterBroker(other.clone())).unwrap_err();
    assert_eq!(e.0, code::DUPLICATE_BROKER_REGISTRATION);
    assert!(e.1.contains("node id 2"), "{}", e.1);
    apply(
        &mut s,
        &Command::FenceBroker {
            id: 2,
            incarnation: 102,
        },
    )
    .unwrap();
    apply(&mut s, &Command::RegisterBroker(other)).unwrap();
    assert_eq!(s.brokers[&2].dir_id, [77; 16]);
}

#[test]
fn preferred_leaders_come_back_and_producer_ids_come_in_blocks() {
    let mut s = cluster(&[None, None, None]);
    create(&mut s, "t", 3, 3).unwrap();
    let preferred = leaders(&s, "t");
    apply(
        &mut s,
        &Command::ShutdownBroker {
            id: 2,
            incarnation: 102,
        },
    )
    .unwrap();
    apply(&mut s, &Command::RegisterBroker(broker(2, None))).unwrap();
    assert_ne!(leaders(&s, "t"), preferred);
    // Not in the ISR yet: broker 2 cannot take its leaderships back.
    let r = apply(&mut s, &Command::ElectPreferred { topics: None }).unwrap();
    let Outcome::Elected(codes) = r else {
        panic!("{r:?}")
    };
    assert!(codes.iter().all(|(_, c)| *c != 0));
    // Its leaders see it caught up and put it back in their ISRs.
    for p in 0..3 {
        let pm = s.partition("t", p).unwrap().clone();
        apply(
            &mut s,
            &Command::AlterIsr {
                topic: "t".into(),
                partition: p,
                leader: pm.leader,
                leader_epoch: pm.leader_epoch,
                from: pm.isr.clone(),
                to: pm.replicas.clone(),
            },
        )
        .unwrap();
    }
    let r = apply(&mut s, &Command::ElectPreferred { topics: None }).unwrap();
    let Outcome::Elected(codes) = r else {
        panic!("{r:?}")
    };
    assert!(codes.iter().any(|(_, c)| *c == 0));
    assert!(codes
        .iter()
        .all(|(_, c)| *c == 0 || *c == code::ELECTION_NOT_NEEDED));
    assert_eq!(leaders(&s, "t"), preferred);
    assert_eq!(
        apply(&mut s, &Command::AllocateProducerIds { count: 1000 }).unwrap(),
        Outcome::ProducerIds(0)
    );
    assert_eq!(
        apply(&mut s, &Command::AllocateProducerIds { count: 1000 }).unwrap(),
        Outcome::ProducerIds(1000)
    );
}

#[test]
fn the_state_round_trips_through_its_snapshot_text() {
    use runnel_metadata::cluster::{decode_state, encode_state};
    let mut s = cluster(&[Some("a"), None, Some("b")]);
    apply(
        &mut s,
        &Command::InitCluster {
            cluster_id: "abc".into(),
        },
    )
    .unwrap();
    create(&mut s, "t", 4, 2).unwrap();
    let mut configs = BTreeMap::new();
    configs.insert("retention.ms".to_string(), "5".to_string());
    apply(
        &mut s,
        &Command::CreateTopic {
            name: "u".into(),
            id: [3; 16],
            partitions: 1,
            replication_factor: 1,
            assignment: None,
            configs,
        },
    )
    .unwrap();
    apply(
        &mut s,
        &Command::FenceBroker {
            id: 2,
            incarnation: 102,
        },
    )
    .unwrap();
    apply(&mut s, &Command::AllocateProducerIds { count: 7 }).unwrap();
    let back = decode_state(&encode_state(&s)).unwrap();
    assert_eq!(back.cluster_id, s.cluster_id);
    assert_eq!(back.next_producer_id, 7);
    assert_eq!(back.brokers, s.brokers);
    assert_eq!(back.topics, s.topics);
    assert_eq!(back.by_id, s.by_id);
    // Applying the same command to both gives the same result.
    let (mut a, mut b) = (s.clone(), back);
    let c = Command::RegisterBroker(broker(2, None));
    assert_eq!(apply(&mut a, &c), apply(&mut b, &c));
    assert_eq!(a.topics, b.topics);
    assert!(decode_state("nonsense").is_err());
}

#[test]
fn the_isr_changes_only_through_its_leader_and_a_returning_broker_waits_to_rejoin() {
    let mut s = cluster(&[None, None, None]);
    create(&mut s, "t", 1, 3).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    let follower = *p.replicas.iter().find(|r| **r != p.leader).unwrap();
    let shrunk: Vec<i32> = p.isr.iter().copied().filter(|r| *r != follower).collect();
    let alter = |from: &[i32], to: &[i32], epoch: i32| Command::AlterIsr {
        topic: "t".into(),
        partition: 0,
        leader: p.leader,
        leader_epoch: epoch,
        from: from.to_vec(),
        to: to.to_vec(),
    };
    // A stale epoch or a stale ISR is refused; the leader's shrink applies.
    assert_eq!(
        apply(&mut s, &alter(&p.isr, &shrunk, p.leader_epoch + 1))
            .unwrap_err()
            .0,
        code::FENCED_LEADER_EPOCH
    );
    apply(&mut s, &alter(&p.isr, &shrunk, p.leader_epoch)).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().isr, shrunk);
    assert_eq!(
        apply(&mut s, &alter(&p.isr, &shrunk, p.leader_epoch))
            .unwrap_err()
            .0,
        code::INVALID_UPDATE_VERSION
    );
    // The ISR round trips through the text encoding.
    let c = alter(&shrunk, &p.isr, p.leader_epoch);
    let text = Proposal {
        request_id: 1,
        from: 1,
        commands: vec![c.clone()],
    }
    .encode();
    assert_eq!(Proposal::decode(&text).unwrap().commands, vec![c.clone()]);
    // A fenced broker cannot join; a live one can.
    apply(
        &mut s,
        &Command::FenceBroker {
            id: follower,
            incarnation: 100 + follower as u64,
        },
    )
    .unwrap();
    assert_eq!(apply(&mut s, &c).unwrap_err().0, code::INELIGIBLE_REPLICA);
    // Coming back does not put it in the ISR: only its leader does, once it caught up.
    apply(&mut s, &Command::RegisterBroker(broker(follower, None))).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().isr, shrunk);
    apply(&mut s, &c).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().isr, p.isr);
}

#[test]
fn without_a_live_isr_member_a_partition_stays_offline_unless_unclean_election_is_on() {
    for unclean in [false, true] {
        let mut s = cluster(&[None, None]);
        let mut configs = std::collections::BTreeMap::new();
        configs.insert(
            "unclean.leader.election.enable".to_string(),
            unclean.to_string(),
        );
        apply(
            &mut s,
            &Command::CreateTopic {
                name: "t".into(),
                id: [7; 16],
                partitions: 1,
                replication_factor: 2,
                assignment: Some(vec![vec![1, 2]]),
                configs,
            },
        )
        .unwrap();
        // Broker 2 left the ISR (it fell behind); then the leader, broker 1, dies.
        apply(
            &mut s,
            &Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                from: vec![1, 2],
                to: vec![1],
            },
        )
        .unwrap();
        apply(
            &mut s,
            &Command::FenceBroker {
                id: 1,
                incarnation: 101,
            },
        )
        .unwrap();
        let p = s.partition("t", 0).unwrap();
        if unclean {
            assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        } else {
            assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        }
    }
}

#[test]
fn a_broker_restarted_before_it_was_fenced_gives_up_its_leaderships_and_isr_places() {
    let mut s = cluster(&[None, None, None]);
    create(&mut s, "t", 3, 3).unwrap();
    let before = s.topic("t").unwrap().clone();
    let mut again = broker(1, None);
    again.incarnation = 555;
    apply(&mut s, &Command::RegisterBroker(again)).unwrap();
    let after = s.topic("t").unwrap().clone();
    for p in 0..3 {
        let (b, a) = (&before.assignment[p], &after.assignment[p]);
        assert!(!a.isr.contains(&1), "{a:?}");
        assert_ne!(a.leader, 1);
        if b.leader == 1 {
            assert_eq!(a.leader_epoch, b.leader_epoch + 1);
        }
    }
    assert!(s.is_live(1));
    // The same run registering again (a retried proposal) changes nothing.
    let mut same = broker(1, None);
    same.incarnation = 555;
    apply(&mut s, &Command::RegisterBroker(same)).unwrap();
    assert_eq!(s.topic("t").unwrap().assignment, after.assignment);
}

#[test]
fn a_reassignment_grows_the_replicas_then_shrinks_them_once_the_added_ones_are_in_sync() {
    use runnel_metadata::cluster::{decode_state, encode_state};
    let mut s = cluster(&[None, None, None, None]);
    create_one_on(&mut s, "t", &[1, 2, 3]);
    let reassign = |target: Option<Vec<i32>>| Command::Reassign {
        topic: "t".into(),
        partition: 0,
        target,
    };
    // Round trip through the text, both forms.
    for c in [reassign(Some(vec![4, 2, 3])), reassign(None)] {
        let p = Proposal {
            request_id: 1,
            from: 1,
            commands: vec![c],
        };
        assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
    }
    // Bad targets, and a cancel with nothing in progress.
    assert_eq!(
        apply(&mut s, &reassign(Some(vec![1, 1, 2]))).unwrap_err().0,
        code::INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        apply(&mut s, &reassign(Some(vec![1, 9]))).unwrap_err().0,
        code::INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(apply(&mut s, &reassign(None)).unwrap_err().0, 85);
    // Move 1 (the leader) to 4: the set grows, the ISR and the leader stay.
    apply(&mut s, &reassign(Some(vec![4, 2, 3]))).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![4, 2, 3, 1]);
    assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![1]));
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (1, 0, vec![1, 2, 3])
    );
    // An in-progress reassignment survives the state snapshot.
    let back = decode_state(&encode_state(&s)).unwrap();
    assert_eq!(back.topics, s.topics);
    // The leader adds 4 to the ISR: the reassignment completes, the leader hands over to the
    // first target replica in the ISR, and the epoch moves on.
    apply(
        &mut s,
        &Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            from: vec![1, 2, 3],
            to: vec![1, 2, 3, 4],
        },
    )
    .unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![4, 2, 3]);
    assert_eq!(p.isr, vec![4, 2, 3]);
    assert_eq!((p.leader, p.leader_epoch), (4, 1));
    assert!(!p.reassigning());
    // Removing only (RF 3 -> 2) completes at once; the leader stays, the epoch moves.
    apply(&mut s, &reassign(Some(vec![4, 2]))).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (vec![4, 2], vec![4, 2])
    );
    assert_eq!((p.leader, p.leader_epoch), (4, 2));
    // Started, then replaced by another target: as in Kafka, the new one starts from every
    // current replica, so what the first added and the second drops stays until the end.
    apply(&mut s, &reassign(Some(vec![4, 3]))).unwrap();
    apply(&mut s, &reassign(Some(vec![4, 1]))).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![4, 1, 3, 2]);
    assert_eq!(
        (p.adding.clone(), p.removing.clone()),
        (vec![1], vec![3, 2])
    );
    // Cancelled: back to the replicas before the last reassignment.
    apply(&mut s, &reassign(None)).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (vec![4, 3, 2], vec![4, 2])
    );
    assert!(!p.reassigning());
    assert_eq!(p.leader, 4);
}

#[test]
fn a_replaced_reassignment_keeps_its_leader_and_a_removal_waits_for_a_target_in_sync() {
    let mut s = cluster(&[None, None, None, None, None, None]);
    create_one_on(&mut s, "t", &[1, 2, 3]);
    let reassign = |target: Vec<i32>| Command::Reassign {
        topic: "t".into(),
        partition: 0,
        target: Some(target),
    };
    let alter_isr = |s: &Snapshot, to: Vec<i32>| {
        let p = s.partition("t", 0).unwrap();
        Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            from: p.isr.clone(),
            to,
        }
    };
    // [1,2,3] -> [4,5,3]: 4 catches up; then 1 dies and 4 leads.
    apply(&mut s, &reassign(vec![4, 5, 3])).unwrap();
    let c = alter_isr(&s, vec![1, 2, 3, 4]);
    apply(&mut s, &c).unwrap();
    apply(
        &mut s,
        &Command::FenceBroker {
            id: 1,
            incarnation: 101,
        },
    )
    .unwrap();
    assert_eq!(s.partition("t", 0).unwrap().leader, 4);
    // Replaced by [6,5,3]: 4 leads on (it stays a replica, removing) until 6 is in sync.
    apply(&mut s, &reassign(vec![6, 5, 3])).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(p.leader, 4);
    assert!(p.replicas.contains(&4) && p.removing.contains(&4));
    assert_eq!(
        (p.adding.clone(), p.removing.clone()),
        (vec![6], vec![4, 1, 2])
    );
    let c = alter_isr(&s, vec![2, 3, 4, 6, 5]);
    apply(&mut s, &c).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!((p.replicas.clone(), p.leader), (vec![6, 5, 3], 6));
    assert!(!p.reassigning());

    // A move that only removes, while its target replica is out of the ISR, completes once
    // that replica is back in it.
    let shrink = alter_isr(&s, vec![6, 5]);
    apply(&mut s, &shrink).unwrap();
    apply(&mut s, &reassign(vec![3])).unwrap();
    assert!(s.partition("t", 0).unwrap().reassigning());
    let c = alter_isr(&s, vec![6, 5, 3]);
    apply(&mut s, &c).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert!(!p.reassigning());
    assert_eq!(
        (p.replicas.clone(), p.isr.clone(), p.leader),
        (vec![3], vec![3], 3)
    );
}

#[test]
fn config_changes_check_every_value_and_round_trip_through_the_log_and_the_state() {
    use runnel_metadata::cluster::{decode_state, encode_state, ConfigResource};
    let mut s = cluster(&[None, None]);
    create(&mut s, "t", 1, 2).unwrap();
    let alter = |resource: ConfigResource, replace: bool, kv: &[(&str, Option<&str>)]| {
        Command::AlterConfigs {
            resource,
            replace,
            changes: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        }
    };
    let topic = || ConfigResource::Topic("t".into());
    let c = alter(
        topic(),
        false,
        &[
            ("cleanup.policy", Some("compact,delete")),
            ("retention.ms", Some("5")),
        ],
    );
    for c in [
        c.clone(),
        alter(
            ConfigResource::Broker(-1),
            true,
            &[("leader.replication.throttled.rate", None)],
        ),
    ] {
        let p = Proposal {
            request_id: 1,
            from: 1,
            commands: vec![c],
        };
        assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
    }
    apply(&mut s, &c).unwrap();
    let o = &s.topic("t").unwrap().overrides;
    assert_eq!(
        o.get("cleanup.policy").map(String::as_str),
        Some("compact,delete")
    );
    // One bad value: nothing of the change applies.
    let bad = alter(
        topic(),
        false,
        &[
            ("retention.ms", Some("7")),
            ("segment.index.bytes", Some("2")),
        ],
    );
    assert_eq!(apply(&mut s, &bad).unwrap_err().0, code::INVALID_CONFIG);
    assert_eq!(
        s.topic("t")
            .unwrap()
            .overrides
            .get("retention.ms")
            .map(String::as_str),
        Some("5")
    );
    // Not in normal form (the proposer normalizes), unknown names, unknown topics.
    for c in [
        alter(
            topic(),
            false,
            &[("cleanup.policy", Some("compact, delete"))],
        ),
        alter(topic(), false, &[("no.such", None)]),
        alter(
            ConfigResource::Broker(1),
            false,
            &[("num.partitions", Some("3"))],
        ),
    ] {
        assert_eq!(
            apply(&mut s, &c).unwrap_err().0,
            code::INVALID_CONFIG,
            "{c:?}"
        );
    }
    assert_eq!(
        apply(
            &mut s,
            &alter(ConfigResource::Topic("nope".into()), false, &[])
        )
        .unwrap_err()
        .0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    // Delete one key; replace drops the others.
    apply(&mut s, &alter(topic(), false, &[("retention.ms", None)])).unwrap();
    assert!(!s.topic("t").unwrap().overrides.contains_key("retention.ms"));
    apply(
        &mut s,
        &alter(topic(), true, &[("preallocate", Some("true"))]),
    )
    .unwrap();
    assert_eq!(
        s.topic("t").unwrap().overrides.keys().collect::<Vec<_>>(),
        vec!["preallocate"]
    );
    // Broker configs: cluster-wide and per broker; the broker's own wins.
    let rate = "leader.replication.throttled.rate";
    apply(
        &mut s,
        &alter(ConfigResource::Broker(-1), false, &[(rate, Some("1000"))]),
    )
    .unwrap();
    apply(
        &mut s,
        &alter(ConfigResource::Broker(2), false, &[(rate, Some("2000"))]),
    )
    .unwrap();
    assert_eq!(s.broker_config(1, rate), Some("1000"));
    assert_eq!(s.broker_config(2, rate), Some("2000"));
    assert_eq!(
        apply(
            &mut s,
            &alter(ConfigResource::Broker(9), false, &[(rate, Some("1"))])
        )
        .unwrap_err()
        .0,
        code::INVALID_REQUEST
    );
    let back = decode_state(&encode_state(&s)).unwrap();
    assert_eq!(back.broker_configs, s.broker_configs);
    assert_eq!(back.topics, s.topics);
    apply(
        &mut s,
        &alter(ConfigResource::Broker(2), false, &[(rate, None)]),
    )
    .unwrap();
    assert_eq!(s.broker_config(2, rate), Some("1000"));
}

/// A ReplicaOffline report from `broker` (run `incarnation`) about `topic`-0.
fn offline_report(s: &Snapshot, broker: i32, incarnation: u64, topic: &str) -> Command {
    Command::ReplicaOffline {
        broker,
        incarnation,
        topic: topic.into(),
        topic_id: s.topic(topic).map_or([0; 16], |t| t.id),
        partition: 0,
    }
}

/// Applies [`offline_report`].
fn report_offline(
    s: &mut Snapshot,
    broker: i32,
    incarnation: u64,
    topic: &str,
) -> Result<Outcome, (i16, String)> {
    let c = offline_report(s, broker, incarnation, topic);
    apply(s, &c)
}

#[test]
fn a_replica_reported_offline_leaves_the_isr_and_leadership_until_its_broker_restarts() {
    use runnel_metadata::cluster::{decode_state, encode_state};
    let mut s = cluster(&[None, None, None]);
    create_one_on(&mut s, "t", &[1, 2, 3]);
    create_one_on(&mut s, "single", &[1]);
    // A report from an earlier run of the broker, or about an earlier topic of the name,
    // changes nothing.
    report_offline(&mut s, 1, 7, "t").unwrap();
    let mut stale = offline_report(&s, 1, 101, "t");
    if let Command::ReplicaOffline { topic_id, .. } = &mut stale {
        *topic_id = [0xee; 16];
    }
    apply(&mut s, &stale).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().leader, 1);
    assert!(s.partition("t", 0).unwrap().offline.is_empty());
    // The leader's replica: leadership to the next in-sync replica, a new epoch, out of
    // the ISR, listed offline though its broker is live.
    let epoch = s.partition("t", 0).unwrap().leader_epoch;
    report_offline(&mut s, 1, 101, "t").unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (2, epoch + 1, vec![2, 3])
    );
    assert_eq!(s.offline_replicas(&p), vec![1]);
    // Reported again (a retry): nothing more changes.
    report_offline(&mut s, 1, 101, "t").unwrap();
    assert_eq!(s.partition("t", 0).unwrap(), &p);
    // It cannot rejoin the ISR.
    let rejoin = Command::AlterIsr {
        topic: "t".into(),
        partition: 0,
        leader: 2,
        leader_epoch: p.leader_epoch,
        from: vec![2, 3],
        to: vec![1, 2, 3],
    };
    assert_eq!(
        apply(&mut s, &rejoin).unwrap_err().0,
        code::INELIGIBLE_REPLICA
    );
    // A broker without a replica, an unknown partition: refused.
    create_one_on(&mut s, "other", &[2]);
    assert_eq!(
        report_offline(&mut s, 1, 101, "other").unwrap_err().0,
        code::INVALID_REQUEST
    );
    assert_eq!(
        report_offline(&mut s, 1, 101, "nope").unwrap_err().0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    // The only replica: no leader, the ISR keeps it (it has every acknowledged record),
    // and a preferred election cannot give it back while it is offline.
    report_offline(&mut s, 1, 101, "single").unwrap();
    let single = s.partition("single", 0).unwrap().clone();
    assert_eq!((single.leader, single.isr.clone()), (-1, vec![1]));
    assert_eq!(s.offline_replicas(&single), vec![1]);
    let elected = apply(&mut s, &Command::ElectPreferred { topics: None }).unwrap();
    let Outcome::Elected(elected) = elected else {
        panic!("{elected:?}")
    };
    assert!(elected.contains(&(
        ("single".to_string(), 0),
        code::PREFERRED_LEADER_NOT_AVAILABLE
    )));
    assert!(elected.contains(&(("t".to_string(), 0), code::PREFERRED_LEADER_NOT_AVAILABLE)));
    assert_eq!(s.partition("single", 0).unwrap().leader, -1);
    // With unclean election on, an offline replica is not chosen either.
    let mut unclean = BTreeMap::new();
    unclean.insert(
        "unclean.leader.election.enable".to_string(),
        "true".to_string(),
    );
    apply(
        &mut s,
        &Command::CreateTopic {
            name: "u".into(),
            id: [4; 16],
            partitions: 1,
            replication_factor: 2,
            assignment: Some(vec![vec![2, 1]]),
            configs: unclean,
        },
    )
    .unwrap();
    report_offline(&mut s, 1, 101, "u").unwrap();
    // A reassignment in progress and offline replicas round trip through the state.
    create_one_on(&mut s, "r", &[1, 2]);
    apply(
        &mut s,
        &Command::Reassign {
            topic: "r".into(),
            partition: 0,
            target: Some(vec![2, 3]),
        },
    )
    .unwrap();
    report_offline(&mut s, 1, 101, "r").unwrap();
    let r = s.partition("r", 0).unwrap();
    assert!(r.reassigning() && r.offline == vec![1], "{r:?}");
    let back = decode_state(&encode_state(&s)).unwrap();
    assert_eq!(back.topics, s.topics);
    // The others go: the offline replica never leads, clean or unclean.
    for id in [2, 3] {
        apply(
            &mut s,
            &Command::FenceBroker {
                id,
                incarnation: 100 + id as u64,
            },
        )
        .unwrap();
    }
    for topic in ["t", "u", "r"] {
        assert_eq!(s.partition(topic, 0).unwrap().leader, -1, "{topic}");
    }
    for id in [2, 3] {
        apply(&mut s, &Command::RegisterBroker(broker(id, None))).unwrap();
    }
    assert_eq!(s.partition("t", 0).unwrap().leader, 3);
    // A registration retried by the same run keeps it offline.
    apply(&mut s, &Command::RegisterBroker(broker(1, None))).unwrap();
    assert_eq!(s.partition("single", 0).unwrap().leader, -1);
    // A new run (its recovery re-read the logs): no longer offline, leads what has no
    // leader and names it in its ISR, and rejoins the others' ISRs through their leaders.
    let mut again = broker(1, None);
    again.incarnation = 555;
    apply(&mut s, &Command::RegisterBroker(again)).unwrap();
    let single = s.partition("single", 0).unwrap();
    assert_eq!((single.leader, single.offline.len()), (1, 0));
    let t = s.partition("t", 0).unwrap().clone();
    assert!(t.offline.is_empty());
    let rejoin = Command::AlterIsr {
        topic: "t".into(),
        partition: 0,
        leader: t.leader,
        leader_epoch: t.leader_epoch,
        from: t.isr.clone(),
        to: [t.isr.clone(), vec![1]].concat(),
    };
    apply(&mut s, &rejoin).unwrap();
    assert!(s.partition("t", 0).unwrap().isr.contains(&1));
}
