//! Several `runnel` processes on loopback forming a cluster: the metadata quorum, broker
//! registration, placement, leader failover, controlled shutdown, bad quorum flags.
//!
//! These tests check leadership and metadata; what replication keeps across failures is
//! in `replication.rs`.

use crate::clients::{consumer, producer};
use crate::common::*;
use crate::protocol::{call, connect};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Cluster {
    pub brokers: Vec<Broker>,
    pub voters: String,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` brokers, node ids 1..=n, every one a voter; started together, waited on together.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, false)
    }

    /// [`Cluster::start`] with each broker in a rack of its own, `rack<id>`.
    pub fn start_racked(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, true)
    }

    fn start_with(n: usize, extra: &[&str], racks: bool) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut brokers: Vec<Broker> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _))| {
                let node = (i + 1).to_string();
                let rack = format!("rack{node}");
                let mut args = vec!["--node-id", &node, "--controller-quorum-voters", &voters];
                if racks {
                    args.extend_from_slice(&["--rack", &rack]);
                }
                args.extend_from_slice(extra);
                Broker::launch(
                    &tmp.path().join(format!("node{}", i + 1)),
                    &format!("127.0.0.1:{client}"),
                    &args,
                )
            })
            .collect();
        for b in &mut brokers {
            b.await_ready();
        }
        // Each broker is ready once its own registration applied; wait until every one
        // has applied all of them, so topics created next get their full replica sets.
        for b in &brokers {
            await_view(&b.addr, None, "every broker registered", |v| {
                v.brokers.len() == n
            });
        }
        Cluster {
            brokers,
            voters,
            _tmp: tmp,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node id -> index in `brokers`.
    pub fn node(&mut self, id: i32) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }
}

/// (error, leader, leader epoch, replicas, isr)
pub type PartitionView = (i16, i32, i32, Vec<i32>, Vec<i32>);

/// The active controller (the metadata log's Raft leader) as `b` last logged it.
fn active_controller(b: &Broker) -> i32 {
    b.logs()
        .lines()
        .filter_map(|l| l.split("the active controller is node ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or(-1)
}

/// The cluster as one broker sees it.
#[derive(Debug, Clone)]
pub struct View {
    /// The broker named as controller: the one answering (KRaft names a live broker).
    pub controller: i32,
    pub brokers: BTreeSet<i32>,
    pub partitions: BTreeMap<i32, PartitionView>,
}

pub fn metadata(addr: &str, topic: Option<&str>) -> View {
    let mut s = connect(addr);
    let req = MetadataRequest::default()
        .with_topics(topic.map(|t| {
            vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))]
        }))
        .with_allow_auto_topic_creation(true);
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    View {
        controller: r.controller_id.0,
        brokers: r.brokers.iter().map(|b| b.node_id.0).collect(),
        partitions: r
            .topics
            .first()
            .filter(|_| topic.is_some())
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| {
                        (
                            p.partition_index,
                            (
                                p.error_code,
                                p.leader_id.0,
                                p.leader_epoch,
                                ids(&p.replica_nodes),
                                ids(&p.isr_nodes),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// CreateTopics of `topic` with one partition on `replicas` (explicit assignment) through
/// `addr`: the topic's error code.
pub fn create_with_replicas(addr: &str, topic: &'static str, replicas: &[i32]) -> i16 {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    let mut s = connect(addr);
    let r: CreateTopicsResponse = call(
        &mut s,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(
                        replicas.iter().map(|b| BrokerId(*b)).collect(),
                    )])])
            .with_timeout_ms(10_000),
    );
    r.topics[0].error_code
}

/// Waits until `addr`'s view satisfies `cond`; returns it.
fn await_view(addr: &str, topic: Option<&str>, what: &str, cond: impl Fn(&View) -> bool) -> View {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metadata(addr, topic);
        if cond(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `n` keyed records through `bootstrap` (acks=all); returns delivery failures.
fn produce(bootstrap: &str, topic: &str, from: u32, n: u32) -> Vec<String> {
    let (p, d) = producer(
        bootstrap,
        &[("acks", "all"), ("message.timeout.ms", "60000")],
    );
    for i in from..from + n {
        let v = i.to_string();
        loop {
            match p.send(BaseRecord::<str, str>::to(topic).key(&v).payload(&v)) {
                Ok(()) => break,
                Err(_) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let r = d.0.lock().unwrap();
    assert_eq!(r.len(), n as usize);
    r.iter().filter_map(|x| x.as_ref().err().cloned()).collect()
}

fn consume_all(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> BTreeSet<u32> {
    let c = consumer(bootstrap, &[]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.insert(
                std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
    }
    got
}

#[test]
fn three_brokers_form_a_cluster_and_serve_an_rf3_topic_through_one_bootstrap_address() {
    with_timeout(180, || {
        let c = Cluster::start(3, &["--default-partitions", "6"]);
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, None, "three live brokers", |v| {
            v.brokers.len() == 3 && v.controller > 0
        });
        assert_eq!(v.brokers, BTreeSet::from([1, 2, 3]));
        // Auto-created with the default replication factor: min(3, brokers).
        let v = await_view(&first, Some("rf3"), "the topic", |v| {
            v.partitions.len() == 6
        });
        let leaders: BTreeSet<i32> = v.partitions.values().map(|p| p.1).collect();
        assert_eq!(leaders, BTreeSet::from([1, 2, 3]), "{v:?}");
        for (p, (err, leader, epoch, replicas, isr)) in &v.partitions {
            assert_eq!(*err, 0);
            assert_eq!(replicas.len(), 3, "partition {p}");
            assert_eq!(replicas[0], *leader, "the first replica leads");
            assert_eq!(*epoch, 0);
            assert_eq!(isr.len(), 3);
        }
        // Every broker sees the same, and names itself as the controller to send admin
        // requests to (it forwards them through the metadata log).
        assert_eq!(v.controller, 1);
        for (i, b) in c.brokers.iter().enumerate().skip(1) {
            let w = await_view(&b.addr, Some("rf3"), "the same metadata", |w| {
                w.partitions == v.partitions
            });
            assert_eq!(w.controller, i as i32 + 1);
        }
        // librdkafka through one bootstrap address finds each partition's leader.
        assert!(produce(&first, "rf3", 0, 600).is_empty());
        let last = c.brokers[2].addr.clone();
        assert_eq!(consume_all(&last, "rf3", 6, 600), (0..600).collect());
        // kcat too.
        let (st, out, err) = run_cmd(
            std::process::Command::new("kcat").args([
                "-b",
                &last,
                "-C",
                "-t",
                "rf3",
                "-o",
                "beginning",
                "-e",
                "-q",
            ]),
            Duration::from_secs(60),
        );
        assert!(st.success(), "{err}");
        assert_eq!(out.lines().count(), 600);
        // A broker that leads nothing of a partition refuses to take its records.
        let (follower, p) = v
            .partitions
            .iter()
            .find_map(|(p, x)| (x.1 != 1).then_some((1, *p)))
            .unwrap();
        let mut s = connect(&c.brokers[follower - 1].addr);
        let r = crate::protocol::produce_to(
            &mut s,
            9,
            vec![("rf3", p, crate::protocol::batch(&[b"x"]))],
        );
        assert_eq!(r.responses[0].partition_responses[0].error_code, 6);
        // From v10 the answer names the leader and how to reach it (KIP-951).
        let r = crate::protocol::produce_to(
            &mut s,
            11,
            vec![("rf3", p, crate::protocol::batch(&[b"x"]))],
        );
        let pr = &r.responses[0].partition_responses[0];
        let leader = v.partitions[&p].1;
        assert_eq!(pr.error_code, 6);
        assert_eq!(
            (
                pr.current_leader.leader_id.0,
                pr.current_leader.leader_epoch
            ),
            (leader, 0)
        );
        assert_eq!(r.node_endpoints.len(), 1);
        assert_eq!(r.node_endpoints[0].node_id.0, leader);
        assert_eq!(
            format!("{}:{}", r.node_endpoints[0].host, r.node_endpoints[0].port),
            c.brokers[leader as usize - 1].addr
        );
        // Fetch too (v12+: CurrentLeader). A follower serves only consumers that name a rack
        // (KIP-392); this one names none.
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let fetch = |s: &mut std::net::TcpStream, epoch: i32| -> FetchResponse {
            call(
                s,
                ApiKey::Fetch,
                12,
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(-1)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str("rf3")))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(p)
                            .with_current_leader_epoch(epoch)
                            .with_partition_max_bytes(1 << 20)])]),
            )
        };
        let r = fetch(&mut s, 0);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(pd.error_code, 6);
        assert_eq!(
            (
                pd.current_leader.leader_id.0,
                pd.current_leader.leader_epoch
            ),
            (leader, 0)
        );
    });
}

#[test]
fn killing_a_partition_leader_moves_its_leadership_within_the_session_timeout() {
    with_timeout(240, || {
        let session_ms = 2000;
        let mut c = Cluster::start(
            3,
            &[
                "--default-partitions",
                "3",
                "--broker-session-timeout-ms",
                "2000",
            ],
        );
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, Some("fo"), "the topic", |v| {
            v.partitions.len() == 3 && v.brokers.len() == 3
        });
        let (leader, epoch) = (v.partitions[&0].1, v.partitions[&0].2);
        let other = c
            .brokers
            .iter()
            .enumerate()
            .find(|(i, _)| *i as i32 + 1 != leader)
            .map(|(_, b)| b.addr.clone())
            .unwrap();
        let killed_at = Instant::now();
        c.node(leader).kill();
        let w = await_view(&other, Some("fo"), "a new leader", |w| {
            w.partitions[&0].1 > 0 && w.partitions[&0].1 != leader
        });
        let took = killed_at.elapsed();
        println!(
            "leader {leader} killed: partition 0 led by {} after {} ms (session timeout {session_ms} ms)",
            w.partitions[&0].1,
            took.as_millis()
        );
        assert!(took <= Duration::from_millis(session_ms + 2000), "{took:?}");
        assert!(w.partitions[&0].2 > epoch, "the leader epoch moves on");
        assert!(
            !w.brokers.contains(&leader),
            "a fenced broker is not listed"
        );
        assert!(!w.partitions[&0].4.contains(&leader), "nor in the ISR");
        // The survivors' metrics say so.
        let survivors: Vec<&Broker> = c
            .brokers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 + 1 != leader)
            .map(|(_, b)| b)
            .collect();
        wait_until("the metrics", Duration::from_secs(10), || {
            survivors.iter().all(|b| b.metric_sum("live_brokers") == 2)
        });
        assert_eq!(
            survivors
                .iter()
                .map(|b| b.metric_sum("active_controller"))
                .sum::<u64>(),
            1
        );
        assert!(survivors
            .iter()
            .all(|b| b.metric_sum("partitions_without_leader") == 0));
        // Clients follow the metadata and carry on.
        assert!(produce(&other, "fo", 0, 100).is_empty());
        // The killed broker restarts and rejoins.
        c.node(leader).restart();
        await_view(&other, Some("fo"), "the restarted broker back", |w| {
            w.brokers.contains(&leader) && w.partitions[&0].4.contains(&leader)
        });
    });
}

#[test]
fn killing_the_active_controller_elects_another_and_metadata_keeps_changing() {
    with_timeout(240, || {
        let mut c = Cluster::start(3, &["--broker-session-timeout-ms", "2000"]);
        let first = c.brokers[0].addr.clone();
        await_view(&first, Some("before"), "a topic", |v| {
            v.partitions.len() == 1
        });
        let controller = active_controller(&c.brokers[0]);
        c.node(controller).kill();
        let survivor = (1..=3).find(|n| *n != controller).unwrap();
        let other = c.node(survivor).addr.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let took_over = loop {
            let n = active_controller(c.node(survivor));
            if n > 0 && n != controller {
                break n;
            }
            assert!(Instant::now() < deadline, "no new active controller");
            std::thread::sleep(Duration::from_millis(50));
        };
        println!("controller {controller} killed; node {took_over} took over");
        // Metadata changes go on: a new topic, and the old one is still there.
        await_view(&other, Some("after"), "a new topic", |v| {
            v.partitions.len() == 1
        });
        await_view(&other, Some("before"), "the old topic", |v| {
            v.partitions.len() == 1
        });
        // The killed controller comes back and learns what it missed.
        c.node(controller).restart();
        let back = c.node(controller).addr.clone();
        let mut s = connect(&back);
        let r: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        let names: BTreeSet<String> = r
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect();
        assert!(
            names.contains("before") && names.contains("after"),
            "{names:?}"
        );
    });
}

#[test]
fn sigterm_moves_leaderships_away_first_and_metadata_survives_a_full_restart() {
    with_timeout(240, || {
        let mut c = Cluster::start(3, &["--default-partitions", "6"]);
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, Some("rolling"), "the topic", |v| {
            v.partitions.len() == 6 && v.brokers.len() == 3
        });
        // Controlled shutdown: by the time broker 3 has exited, it leads nothing and the
        // others say so (no waiting for a session timeout).
        let status = c.node(3).stop();
        assert!(status.success());
        assert!(c.node(3).logs().contains("controlled shutdown done"));
        let w = metadata(&first, Some("rolling"));
        assert!(
            w.partitions.values().all(|p| p.1 != 3 && p.1 > 0),
            "broker 3 still leads: {w:?}"
        );
        assert!(!w.brokers.contains(&3));
        c.node(3).restart();
        await_view(&first, None, "broker 3 back", |w| w.brokers.contains(&3));
        // Its leaders take it back into their ISRs once it caught up (nothing to catch up
        // on here but the fetch that says so).
        await_view(&first, Some("rolling"), "broker 3 back in every ISR", |w| {
            w.partitions.values().all(|p| p.4.contains(&3))
        });
        // ElectLeaders (kafka-leader-election.sh) gives the preferred replicas their
        // leaderships back.
        let mut s = connect(&first);
        let r: ElectLeadersResponse = call(
            &mut s,
            ApiKey::ElectLeaders,
            2,
            &ElectLeadersRequest::default()
                .with_election_type(0)
                .with_topic_partitions(None)
                .with_timeout_ms(10_000),
        );
        assert_eq!(r.error_code, 0);
        let codes: Vec<i16> = r
            .replica_election_results
            .iter()
            .flat_map(|t| t.partition_result.iter().map(|p| p.error_code))
            .collect();
        assert!(
            codes.contains(&0) && codes.iter().all(|c| *c == 0 || *c == 84),
            "{codes:?}"
        );
        let w = metadata(&first, Some("rolling"));
        assert!(w.partitions.values().all(|p| p.1 == p.3[0]), "{w:?}");
        // Every broker stops; all start again; the topic and its replica sets are there.
        for b in &mut c.brokers {
            assert!(b.stop().success());
        }
        for b in &mut c.brokers {
            b.relaunch();
        }
        for b in &mut c.brokers {
            b.await_ready();
        }
        let w = await_view(
            &first,
            Some("rolling"),
            "the topic after the restart",
            |w| {
                w.partitions.len() == 6
                    && w.brokers.len() == 3
                    && w.partitions.values().all(|p| p.1 > 0)
            },
        );
        for (p, x) in &v.partitions {
            assert_eq!(w.partitions[p].3, x.3, "replicas of partition {p}");
        }
    });
}

#[test]
fn bad_quorum_configurations_are_refused_with_a_clear_message() {
    with_timeout(180, || {
        let c = Cluster::start(3, &[]);
        let tmp = tempfile::tempdir().unwrap();
        // A fourth process claiming node 2 with another data dir: node 2's controller port
        // is taken.
        let (st, _, err) = run_cmd(
            std::process::Command::new(BIN).args([
                "--node-id",
                "2",
                "--controller-quorum-voters",
                &c.voters,
                "--data-dir",
                tmp.path().join("dup").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains("node id 2"), "{err}");
        // Voters that disagree with the quorum's: refused, both named.
        let wrong = format!("{},4@127.0.0.1:{}", c.voters, free_port());
        let own = wrong.rsplit('@').next().unwrap().to_string();
        let (st, _, err) = run_cmd(
            std::process::Command::new(BIN).args([
                "--node-id",
                "4",
                "--controller-quorum-voters",
                &wrong,
                "--controller-listen",
                &own,
                "--data-dir",
                tmp.path().join("wrong").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains(&wrong) && err.contains(&c.voters), "{err}");
        // A node id outside the voters: a flag error.
        let (st, _, err) = run_cmd(
            std::process::Command::new(BIN).args([
                "--node-id",
                "9",
                "--controller-quorum-voters",
                &c.voters,
                "--data-dir",
                tmp.path().join("nine").to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(st.code(), Some(2), "{err}");
        assert!(err.contains("--node-id 9"), "{err}");
        // A data dir of node 1 started as node 2.
        let mut c = c;
        let dir1: PathBuf = c.brokers[0].dir.clone();
        assert!(c.node(1).stop().success());
        let (st, _, err) = run_cmd(
            std::process::Command::new(BIN).args([
                "--node-id",
                "2",
                "--data-dir",
                dir1.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains("belongs to node 1"), "{err}");
    });
}

/// FindCoordinator's answer for `group` from `addr`: (error, node).
fn find_coordinator(addr: &str, group: &str) -> (i16, i32) {
    let mut s = connect(addr);
    let r: FindCoordinatorResponse = call(
        &mut s,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())),
    );
    (r.error_code, r.node_id.0)
}

#[test]
fn the_group_coordinator_is_the_offsets_partitions_leader_and_moves_with_it() {
    with_timeout(240, || {
        let mut c = Cluster::start(
            3,
            &[
                "--broker-session-timeout-ms",
                "2000",
                "--offsets-topic-partitions",
                "3",
                "--default-partitions",
                "2",
            ],
        );
        let first = c.brokers[0].addr.clone();
        await_view(
            &first,
            Some("__consumer_offsets"),
            "__consumer_offsets",
            |v| v.partitions.len() == 3 && v.partitions.values().all(|p| p.1 > 0),
        );
        let (err, coordinator) = find_coordinator(&first, "g");
        assert_eq!(err, 0);
        // Every broker names the same coordinator; the others refuse the group's requests.
        for b in &c.brokers {
            assert_eq!(find_coordinator(&b.addr, "g"), (0, coordinator));
        }
        let not_coordinator = c
            .brokers
            .iter()
            .enumerate()
            .find(|(i, _)| *i as i32 + 1 != coordinator)
            .map(|(_, b)| b.addr.clone())
            .unwrap();
        let mut s = connect(&not_coordinator);
        let r: HeartbeatResponse = call(
            &mut s,
            ApiKey::Heartbeat,
            3,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("m")),
        );
        assert_eq!(r.error_code, 16, "NOT_COORDINATOR");

        // A subscribed consumer reads, its coordinator is killed, the group re-forms on the
        // new leader of the group's offsets partition and the consumer reads on.
        assert!(produce(&c.bootstrap(), "gt", 0, 50).is_empty());
        let cons = consumer(
            &c.bootstrap(),
            &[
                ("group.id", "g"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
            ],
        );
        cons.subscribe(&["gt"]).unwrap();
        let read = |n: usize| {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < n && Instant::now() < deadline {
                if let Some(Ok(m)) = cons.poll(Duration::from_millis(100)) {
                    let v: u32 = std::str::from_utf8(m.payload().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    got.push(v);
                }
            }
            got
        };
        assert_eq!(read(50).len(), 50);
        cons.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .unwrap();
        let committed = |bootstrap: &str| -> i64 {
            let probe = consumer(bootstrap, &[("group.id", "g")]);
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition("gt", 0);
            tpl.add_partition("gt", 1);
            let got = probe
                .committed_offsets(tpl, Duration::from_secs(20))
                .unwrap();
            got.elements()
                .iter()
                .map(|e| e.offset().to_raw().unwrap_or(-1).max(0))
                .sum()
        };
        assert_eq!(committed(&c.bootstrap()), 50);
        c.node(coordinator).kill();
        let survivor = (1..=3).find(|n| *n != coordinator).unwrap();
        let addr = c.node(survivor).addr.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let moved = loop {
            let (e, n) = find_coordinator(&addr, "g");
            if e == 0 && n != coordinator {
                break n;
            }
            assert!(Instant::now() < deadline, "the coordinator did not move");
            std::thread::sleep(Duration::from_millis(50));
        };
        println!("group coordinator {coordinator} killed; node {moved} took over");
        let live: String = c
            .brokers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 + 1 != coordinator)
            .map(|(_, b)| b.addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        // The commit survived the move (__consumer_offsets is replicated, and a commit is
        // answered once its ISR has it): the group resumes after what it committed, and
        // reads the records produced after the move, none of the first 50 again.
        assert_eq!(committed(&live), 50, "committed offsets after the move");
        assert!(produce(&live, "gt", 1000, 50).is_empty());
        let again = read(50);
        assert_eq!(again.len(), 50, "the group did not re-form: {again:?}");
        assert!(again.iter().all(|v| *v >= 1000), "read again: {again:?}");
    });
}

#[test]
fn five_brokers_keep_a_quorum_and_serve_with_two_of_them_down() {
    with_timeout(240, || {
        let mut c = Cluster::start(
            5,
            &[
                "--broker-session-timeout-ms",
                "2000",
                "--default-partitions",
                "10",
            ],
        );
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, Some("five"), "the topic", |v| {
            v.partitions.len() == 10
        });
        let leaders: BTreeSet<i32> = v.partitions.values().map(|p| p.1).collect();
        assert_eq!(leaders.len(), 5, "leaders on every broker: {v:?}");
        // Two brokers die: three voters are still a majority of five.
        c.node(4).kill();
        c.node(5).kill();
        let w = await_view(&first, Some("five"), "leaders on the three left", |w| {
            w.brokers.len() == 3 && w.partitions.values().all(|p| (1..=3).contains(&p.1))
        });
        assert!(w.partitions.values().all(|p| p.4.iter().all(|r| *r <= 3)));
        await_view(&first, Some("made-with-three"), "a new topic", |w| {
            w.partitions.len() == 10
        });
        // A topic made with the three: all its replicas are in sync, so acks=all works.
        // ("five" has partitions with two of three replicas down: fewer in-sync replicas
        // than min.insync.replicas=2, so acks=all is refused there, as Kafka does.)
        assert!(produce(&first, "made-with-three", 0, 100).is_empty());
        c.node(4).restart();
        c.node(5).restart();
        await_view(&first, None, "all five back", |w| w.brokers.len() == 5);
    });
}

#[test]
fn a_wiped_broker_is_refused_while_its_old_self_is_registered_then_rejoins() {
    with_timeout(240, || {
        let mut c = Cluster::start(3, &["--broker-session-timeout-ms", "3000"]);
        let first = c.brokers[0].addr.clone();
        await_view(&first, Some("w"), "the topic", |v| v.partitions.len() == 1);
        // Killed and wiped; restarted before the controller has fenced it: the node id is
        // still registered, live, with another directory id.
        c.node(3).kill();
        let dir = c.node(3).dir.clone();
        std::fs::remove_dir_all(&dir).unwrap();
        let addr = c.node(3).addr.clone();
        let args: Vec<String> = vec![
            "--node-id".into(),
            "3".into(),
            "--controller-quorum-voters".into(),
            c.voters.clone(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            dir.to_str().unwrap().into(),
            "--broker-session-timeout-ms".into(),
            "3000".into(),
        ];
        let (st, _, err) = run_cmd(
            std::process::Command::new(BIN).args(&args),
            Duration::from_secs(60),
        );
        // Either refused as a duplicate, or (if the fence won the race) joined: only the
        // first is a refusal to check here.
        if st.code() == Some(1) {
            assert!(err.contains("registered by a running broker"), "{err}");
            println!("the wiped broker was refused while registered");
        } else {
            println!("the wiped broker joined: its old self was fenced first");
        }
        // Once fenced, the wiped broker joins as a new member of its replica sets.
        await_view(&first, None, "broker 3 fenced", |w| !w.brokers.contains(&3));
        c.node(3).restart();
        await_view(&first, Some("w"), "broker 3 back in the ISR", |w| {
            w.brokers.contains(&3) && w.partitions[&0].4.contains(&3)
        });
        let props = std::fs::read_to_string(dir.join("meta.properties")).unwrap();
        assert!(props.contains("node.id=3"), "{props}");
    });
}

#[test]
fn a_rolling_restart_with_sigterm_shows_clients_no_errors() {
    with_timeout(300, || {
        let mut c = Cluster::start(3, &["--default-partitions", "6"]);
        let bootstrap = c.bootstrap();
        await_view(&c.brokers[0].addr, Some("roll"), "the topic", |v| {
            v.partitions.len() == 6
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producing = {
            let (stop, bootstrap) = (stop.clone(), bootstrap.clone());
            std::thread::spawn(move || {
                let (p, d) = producer(
                    &bootstrap,
                    &[("acks", "all"), ("message.timeout.ms", "60000")],
                );
                let mut sent = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let v = sent.to_string();
                    if p.send(BaseRecord::<str, str>::to("roll").key(&v).payload(&v))
                        .is_ok()
                    {
                        sent += 1;
                    }
                    p.poll(Duration::from_millis(5));
                }
                p.flush(Duration::from_secs(60)).unwrap();
                let r = d.0.lock().unwrap();
                assert_eq!(
                    r.len(),
                    sent as usize,
                    "every record gets a delivery report"
                );
                let errors: Vec<String> =
                    r.iter().filter_map(|x| x.as_ref().err().cloned()).collect();
                (sent, errors)
            })
        };
        // A group consumer reads throughout; it must see no error either.
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let consuming = {
            let (stop, bootstrap, read) = (stop.clone(), bootstrap.clone(), read.clone());
            std::thread::spawn(move || {
                let cons = consumer(
                    &bootstrap,
                    &[("group.id", "rolling"), ("auto.offset.reset", "earliest")],
                );
                cons.subscribe(&["roll"]).unwrap();
                let (mut errors, mut last_read) = (Vec::new(), Instant::now());
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    match cons.poll(Duration::from_millis(100)) {
                        Some(Ok(_)) => {
                            read.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                            last_read = Instant::now();
                        }
                        Some(Err(e)) => errors.push(e.to_string()),
                        None => {}
                    }
                }
                (last_read, errors)
            })
        };
        let reading = |what: &str| {
            let from = read.load(std::sync::atomic::Ordering::Acquire);
            wait_until(what, Duration::from_secs(60), || {
                read.load(std::sync::atomic::Ordering::Acquire) > from
            });
        };
        reading("the consumer to read");
        for id in 1..=3 {
            std::thread::sleep(Duration::from_millis(500));
            assert!(c.node(id).stop().success());
            assert!(c.node(id).logs().contains("controlled shutdown"));
            c.node(id).restart();
            let addr = c.node(id).addr.clone();
            await_view(&addr, None, "the restarted broker listed", |v| {
                v.brokers.len() == 3
            });
        }
        reading("the consumer to read after the restarts");
        stop.store(true, std::sync::atomic::Ordering::Release);
        let (sent, errors) = producing.join().unwrap();
        println!(
            "{sent} records produced through a rolling restart, {} errors",
            errors.len()
        );
        assert!(sent > 100, "the producer made progress: {sent}");
        assert!(errors.is_empty(), "delivery errors: {errors:?}");
        let (_, errors) = consuming.join().unwrap();
        println!(
            "{} records consumed through it, errors: {errors:?}",
            read.load(std::sync::atomic::Ordering::Acquire)
        );
        // librdkafka reports a connection the stopping broker closed (BrokerTransportFailure,
        // a local event it reconnects after, as against Kafka); anything else is an error.
        let real: Vec<&String> = errors
            .iter()
            .filter(|e| !e.contains("BrokerTransportFailure"))
            .collect();
        assert!(real.is_empty(), "consumer errors: {real:?}");
    });
}

#[test]
fn the_python_and_go_clients_use_rf3_topics_through_one_bootstrap_address() {
    with_timeout(240, || {
        let c = Cluster::start(3, &[]);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/clients_test.py"
        );
        let (status, out, err) = run_cmd(
            std::process::Command::new("python3").args([script, "cluster", &c.brokers[1].addr]),
            Duration::from_secs(180),
        );
        assert!(status.success(), "{out}\n{err}");
        assert!(out.contains("OK"), "{out}");
        // The Go clients (franz-go, Sarama) too, with replication factor 3.
        for which in ["franz", "sarama"] {
            let (status, out, err) = run_cmd(
                std::process::Command::new(crate::tools::go_clients()).args([
                    which,
                    &c.brokers[2].addr,
                    "3",
                ]),
                Duration::from_secs(150),
            );
            assert!(status.success(), "{which}: {out}\n{err}");
        }
    });
}

#[test]
fn a_topic_recreated_while_a_replica_was_down_does_not_inherit_its_old_data() {
    with_timeout(240, || {
        let mut c = Cluster::start(3, &[]);
        let first = c.brokers[0].addr.clone();
        await_view(&first, Some("re"), "the topic", |v| v.partitions.len() == 1);
        assert!(produce(&first, "re", 0, 20).is_empty());
        assert!(c.node(3).stop().success());
        let mut s = connect(&first);
        let r: DeleteTopicsResponse = call(
            &mut s,
            ApiKey::DeleteTopics,
            4,
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(StrBytes::from_static_str("re"))])
                .with_timeout_ms(10_000),
        );
        assert_eq!(r.responses[0].error_code, 0);
        // Recreated with broker 3 (down, still registered) as its preferred replica.
        assert_eq!(create_with_replicas(&first, "re", &[3, 1, 2]), 0);
        assert!(produce(&first, "re", 100, 5).is_empty());
        // Broker 3 comes back: its old directory goes, and once it leads (preferred
        // election) it serves only the new topic's records from offset 0.
        c.node(3).restart();
        await_view(&first, Some("re"), "broker 3 in the ISR", |v| {
            v.partitions[&0].4.contains(&3)
        });
        let _: ElectLeadersResponse = call(
            &mut s,
            ApiKey::ElectLeaders,
            2,
            &ElectLeadersRequest::default()
                .with_topic_partitions(None)
                .with_timeout_ms(10_000),
        );
        await_view(&first, Some("re"), "broker 3 leading", |v| {
            v.partitions[&0].1 == 3
        });
        // It holds what it replicated of the new topic (5 records from offset 0), none of
        // the old topic's 20.
        let dir = c.node(3).partition_dir("re", 0);
        let batches = segment_batches(&dir);
        assert_eq!(batches.first().map(|b| b.0), Some(0), "{batches:?}");
        assert_eq!(batches.iter().map(|b| b.2).sum::<i32>(), 5, "{batches:?}");
        let addr3 = c.node(3).addr.clone();
        let mut s3 = connect(&addr3);
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let r: ListOffsetsResponse = call(
            &mut s3,
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("re")))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2)])]),
        );
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset),
            (0, 0),
            "log start offset of the new topic"
        );
    });
}

#[test]
fn the_metadata_log_is_snapshotted_and_a_follower_behind_it_catches_up_from_the_snapshot() {
    with_timeout(240, || {
        let mut c = Cluster::start(3, &["--metadata-snapshot-interval-entries", "5"]);
        let first = c.brokers[0].addr.clone();
        assert!(c.node(3).stop().success());
        // Far more changes than the interval while broker 3 is away: the others drop the
        // entries it lacks, so it must take a snapshot.
        for i in 0..15 {
            let t = format!("snap{i}");
            await_view(&first, Some(&t), "a topic", |v| v.partitions.len() == 1);
        }
        for b in &c.brokers[..2] {
            let dir = b.dir.join("__cluster_metadata-0");
            assert!(dir.join("snapshot").exists(), "{}", dir.display());
        }
        assert!(c.node(1).logs().contains("metadata snapshot taken"));
        c.node(3).restart();
        let addr3 = c.node(3).addr.clone();
        assert!(c
            .node(3)
            .logs()
            .contains("installed the active controller's metadata snapshot"));
        let v = await_view(&addr3, Some("snap14"), "the last topic", |v| {
            v.partitions.len() == 1
        });
        assert_eq!(v.brokers.len(), 3);
        // Every node restarts from its snapshot and the entries after it.
        for b in &mut c.brokers {
            assert!(b.stop().success());
        }
        for b in &mut c.brokers {
            b.relaunch();
        }
        for b in &mut c.brokers {
            b.await_ready();
        }
        for i in 0..15 {
            let t = format!("snap{i}");
            let v = metadata(&addr3, Some(&t));
            assert_eq!(v.partitions.len(), 1, "{t} after the restart");
        }
    });
}

#[test]
fn a_broker_that_stops_answering_is_fenced_and_comes_back_when_it_answers_again() {
    with_timeout(240, || {
        let mut c = Cluster::start(
            3,
            &[
                "--default-partitions",
                "6",
                "--broker-session-timeout-ms",
                "2000",
            ],
        );
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, Some("hang"), "the topic", |v| {
            v.partitions.len() == 6
        });
        assert!(v.partitions.values().any(|p| p.1 == 3));
        // SIGSTOP: the process is there but answers nothing, as behind a cut network.
        c.node(3).signal(libc::SIGSTOP);
        let w = await_view(&first, Some("hang"), "broker 3 fenced", |w| {
            !w.brokers.contains(&3) && w.partitions.values().all(|p| p.1 != 3 && p.1 > 0)
        });
        assert!(w.partitions.values().all(|p| !p.4.contains(&3)));
        c.node(3).signal(libc::SIGCONT);
        // Heard again: unfenced without a restart, back in its ISRs.
        await_view(&first, Some("hang"), "broker 3 back", |w| {
            w.brokers.contains(&3) && w.partitions.values().all(|p| p.4.len() == 3)
        });
        assert!(produce(&first, "hang", 0, 60).is_empty());
    });
}

#[test]
fn a_broker_cut_off_from_the_quorum_stops_leading_before_it_is_fenced() {
    with_timeout(240, || {
        let mut c = Cluster::start(
            3,
            &[
                "--default-partitions",
                "3",
                "--broker-session-timeout-ms",
                "4000",
            ],
        );
        let first = c.brokers[0].addr.clone();
        let v = await_view(&first, Some("lease"), "the topic", |v| {
            v.partitions.len() == 3
        });
        let (p, _) = v
            .partitions
            .iter()
            .find(|(_, x)| x.1 == 1)
            .expect("broker 1 leads one");
        let p = *p;
        let produce_to_1 = || {
            let mut s = connect(&first);
            let r = crate::protocol::produce_to(
                &mut s,
                9,
                vec![("lease", p, crate::protocol::batch(&[b"x"]))],
            );
            r.responses[0].partition_responses[0].error_code
        };
        assert_eq!(produce_to_1(), 0);
        // The other two stop answering: broker 1 hears no quorum, and within half the
        // session timeout it refuses to act as a leader.
        c.node(2).signal(libc::SIGSTOP);
        c.node(3).signal(libc::SIGSTOP);
        let cut = Instant::now();
        wait_until("broker 1 to stop leading", Duration::from_secs(10), || {
            produce_to_1() == 6
        });
        println!(
            "broker 1 stopped acting as leader {} ms after the cut",
            cut.elapsed().as_millis()
        );
        assert!(
            cut.elapsed() < Duration::from_millis(4000),
            "within the session timeout"
        );
        c.node(2).signal(libc::SIGCONT);
        c.node(3).signal(libc::SIGCONT);
        wait_until("broker 1 to lead again", Duration::from_secs(30), || {
            let v = metadata(&first, Some("lease"));
            v.partitions[&p].1 == 1 && produce_to_1() == 0
        });
    });
}
