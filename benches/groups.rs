//! Consumer groups: how long a group of GROUP_MEMBERS (default 10) takes from the first
//! JoinGroup to every member holding its assignment, and OffsetCommit throughput.
//!
//! `cargo bench -p runnel-benches --bench groups` after `cargo build --release --bin runnel`.
//! The broker runs with --group-initial-rebalance-delay-ms 0 (Kafka's 3 s delay only waits
//! for stragglers). Members speak the classic protocol with kafka-protocol's encoders: JoinGroup
//! v5 (MEMBER_ID_REQUIRED first), then SyncGroup; the leader assigns one opaque blob per member,
//! as a client assignor would. Commits: one connection, COMMIT_PARTITIONS (default 100)
//! partition offsets per OffsetCommit v8, 5 in flight, with --sync-on-acks-all on (commits
//! are fdatasynced before the answer) and off.

#[path = "common.rs"]
mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let members: usize = env("GROUP_MEMBERS", 10);
    let rounds: usize = env("GROUP_ROUNDS", 5);
    let partitions: usize = env("COMMIT_PARTITIONS", 100);
    let commits: usize = env("COMMIT_REQUESTS", 5000);
    let bin = broker_bin();

    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        &bin,
        tmp.path(),
        &["--group-initial-rebalance-delay-ms", "0"],
    );
    create_topic(&broker.addr, "bench-group-topic", partitions as i32);
    let mut times = Vec::new();
    for round in 0..rounds {
        let t = rebalance(&broker.addr, &format!("bench-group-{round}"), members);
        println!(
            "round {round}: {members} members joined and assigned in {:.1} ms",
            t.as_secs_f64() * 1e3
        );
        times.push(t);
    }
    times.sort();
    println!(
        "rebalance of {members} members (first JoinGroup to every SyncGroup answered): median {:.1} ms, min {:.1} ms, max {:.1} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    broker.stop();

    for sync in ["true", "false"] {
        let tmp = tempfile::tempdir().unwrap();
        let broker = Broker::start(&bin, tmp.path(), &["--sync-on-acks-all", sync]);
        create_topic(&broker.addr, "bench-group-topic", partitions as i32);
        let (secs, n) = commit_throughput(&broker.addr, partitions, commits);
        println!(
            "OffsetCommit, {partitions} partitions per request, sync={sync}: {:.0} requests/s, {:.0} partition offsets/s ({n} requests in {secs:.2} s)",
            n as f64 / secs,
            (n * partitions) as f64 / secs
        );
        broker.stop();
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn send<T: Encodable + HeaderVersion>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    corr: i32,
    body: &T,
) {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).unwrap();
}

fn recv<T: Decodable + HeaderVersion>(s: &mut TcpStream, version: i16) -> T {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).unwrap();
    let mut b = Bytes::from(buf);
    ResponseHeader::decode(&mut b, T::header_version(version)).unwrap();
    T::decode(&mut b, version).unwrap()
}

fn create_topic(addr: &str, topic: &'static str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut s = connect(addr);
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    send(&mut s, ApiKey::CreateTopics, 7, 1, &req);
    let r: CreateTopicsResponse = recv(&mut s, 7);
    assert!(
        matches!(r.topics[0].error_code, 0 | 36),
        "create: {}",
        r.topics[0].error_code
    );
}

fn join(s: &mut TcpStream, group: &str, member_id: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"subscription"))]);
    send(s, ApiKey::JoinGroup, 5, 2, &req);
    recv(s, 5)
}

/// Shared by the members of one round: per member its last synced generation and when.
struct Round {
    synced: Vec<Option<(i32, Instant)>>,
    /// Member count of each generation, as the leader saw it.
    sizes: std::collections::HashMap<i32, usize>,
    stop: bool,
}

/// One rebalance of a new group of `n` members, as real members behave: join (twice, with
/// MEMBER_ID_REQUIRED), sync, heartbeat, rejoin on REBALANCE_IN_PROGRESS. The time from the
/// first JoinGroup until every member holds its assignment of the generation that has all `n`.
fn rebalance(addr: &str, group: &str, n: usize) -> Duration {
    use std::sync::{Arc, Barrier, Mutex};
    let barrier = Arc::new(Barrier::new(n + 1));
    let round = Arc::new(Mutex::new(Round {
        synced: vec![None; n],
        sizes: Default::default(),
        stop: false,
    }));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (addr, group, barrier, round) = (
                addr.to_string(),
                group.to_string(),
                barrier.clone(),
                round.clone(),
            );
            std::thread::spawn(move || {
                let mut s = connect(&addr);
                barrier.wait();
                let first = join(&mut s, &group, "");
                assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED first");
                let me = first.member_id.to_string();
                let gid = GroupId(StrBytes::from_string(group.clone()));
                let mut generation = -1;
                let mut need_join = true;
                while !round.lock().unwrap().stop {
                    if need_join {
                        let r = join(&mut s, &group, &me);
                        assert_eq!(r.error_code, 0, "join");
                        generation = r.generation_id;
                        if !r.members.is_empty() {
                            round
                                .lock()
                                .unwrap()
                                .sizes
                                .insert(generation, r.members.len());
                        }
                        let assignments = r
                            .members
                            .iter()
                            .map(|m| {
                                SyncGroupRequestAssignment::default()
                                    .with_member_id(m.member_id.clone())
                                    .with_assignment(Bytes::from(
                                        m.member_id.to_string().into_bytes(),
                                    ))
                            })
                            .collect();
                        let req = SyncGroupRequest::default()
                            .with_group_id(gid.clone())
                            .with_generation_id(generation)
                            .with_member_id(StrBytes::from_string(me.clone()))
                            .with_assignments(assignments);
                        send(&mut s, ApiKey::SyncGroup, 3, 3, &req);
                        let sync: SyncGroupResponse = recv(&mut s, 3);
                        match sync.error_code {
                            0 => {
                                assert_eq!(&sync.assignment[..], me.as_bytes(), "own assignment");
                                round.lock().unwrap().synced[i] =
                                    Some((generation, Instant::now()));
                                need_join = false;
                            }
                            27 => continue,
                            e => panic!("sync error {e}"),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    let hb = HeartbeatRequest::default()
                        .with_group_id(gid.clone())
                        .with_generation_id(generation)
                        .with_member_id(StrBytes::from_string(me.clone()));
                    send(&mut s, ApiKey::Heartbeat, 1, 5, &hb);
                    let r: HeartbeatResponse = recv(&mut s, 1);
                    match r.error_code {
                        0 => {}
                        27 => need_join = true,
                        e => panic!("heartbeat error {e}"),
                    }
                }
                let leave = LeaveGroupRequest::default()
                    .with_group_id(gid)
                    .with_member_id(StrBytes::from_string(me));
                send(&mut s, ApiKey::LeaveGroup, 1, 4, &leave);
                let _: LeaveGroupResponse = recv(&mut s, 1);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let done = loop {
        std::thread::sleep(Duration::from_millis(2));
        let mut r = round.lock().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the group never settled"
        );
        let Some(Some((g, _))) = r.synced.first().copied() else {
            continue;
        };
        if r.sizes.get(&g) == Some(&n)
            && r.synced.iter().all(|x| x.is_some_and(|(gen, _)| gen == g))
        {
            let last = r.synced.iter().map(|x| x.unwrap().1).max().unwrap();
            r.stop = true;
            break last;
        }
    };
    for h in handles {
        h.join().unwrap();
    }
    done - start
}

fn commit_throughput(addr: &str, partitions: usize, commits: usize) -> (f64, usize) {
    let mut s = connect(addr);
    let make = |i: usize| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("bench-committer")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("bench-group-topic")))
                .with_partitions(
                    (0..partitions as i32)
                        .map(|p| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(i as i64)
                        })
                        .collect(),
                )])
    };
    let t = Instant::now();
    let (mut sent, mut done) = (0, 0);
    while done < commits {
        while sent < commits && sent - done < 5 {
            send(&mut s, ApiKey::OffsetCommit, 8, sent as i32, &make(sent));
            sent += 1;
        }
        let r: OffsetCommitResponse = recv(&mut s, 8);
        assert!(
            r.topics[0].partitions.iter().all(|p| p.error_code == 0),
            "commit error"
        );
        done += 1;
    }
    (t.elapsed().as_secs_f64(), commits)
}
