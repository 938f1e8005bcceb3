//! The classic group coordinator as a state machine, driven by random sequences of
//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup from four clients (two of them static
//! members when the input says so), with the clock moved by hand. Invariants: one leader per
//! generation, the leader among that generation's members; SyncGroup hands an assignment
//! only to a member of its generation, and exactly the one its leader gave it. A static
//! member that rejoins gets a new member id in the same generation and takes the old one's
//! place (KIP-345), leadership and assignment included: members are compared by instance
//! id when they have one.

use bytes::Bytes;
use futures_channel::oneshot;
use runnel_group::{Coordinator, GroupConfig, GroupOp, JoinArgs, JoinResult, SyncArgs, SyncResult};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const MEMBER_ID_REQUIRED: i16 = 79;

#[derive(Default)]
struct Client {
    member_id: String,
    instance: Option<String>,
    generation: i32,
    /// Members of the generation this client leads (from its join answer).
    leads: Option<Vec<String>>,
    join: Option<oneshot::Receiver<JoinResult>>,
    sync: Option<(i32, oneshot::Receiver<SyncResult>)>,
}

#[derive(Default)]
struct Seen {
    /// Member id -> the instance id it was handed to (static members).
    instance_of: HashMap<String, String>,
    /// generation -> leader, as every successful join answer names it.
    leaders: HashMap<i32, String>,
    /// generation -> its members, as the leader's join answer lists them.
    members: HashMap<i32, HashSet<String>>,
    /// generation -> the assignments its leader's accepted SyncGroup gave.
    assigned: HashMap<i32, HashMap<String, Bytes>>,
    /// (generation, member, assignment) of every successful SyncGroup answer.
    synced: Vec<(i32, String, Bytes)>,
    /// generation -> the assignments a leader sent, until its answer says accepted.
    sent: HashMap<(i32, String), HashMap<String, Bytes>>,
}

pub fn run(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(setup) = next() else { return };
    let c = Coordinator::new(GroupConfig {
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 300_000,
        initial_rebalance_delay_ms: if setup & 1 == 1 { 3_000 } else { 0 },
        offsets_retention_ms: 7 * 24 * 3600 * 1000,
        durable_commits: false,
        consumer: Default::default(),
    });
    c.load(HashMap::new());
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client {
            instance: (setup & (2 << i) != 0).then(|| format!("static-{i}")),
            ..Client::default()
        })
        .collect();
    let mut seen = Seen::default();
    while let Some(op) = next() {
        let slot = usize::from(op >> 4) % clients.len();
        let arg = next().unwrap_or(0);
        let cl = &mut clients[slot];
        match op % 6 {
            0 if cl.join.is_none() => {
                let member_id = match arg % 8 {
                    0 => String::new(),
                    1 => "stranger".to_string(),
                    _ => cl.member_id.clone(),
                };
                let (tx, rx) = oneshot::channel();
                let args = JoinArgs {
                    group: "g".into(),
                    member_id,
                    instance_id: cl.instance.clone(),
                    session_timeout_ms: 1_000 + i32::from(arg >> 4) * 1_000,
                    rebalance_timeout_ms: 5_000,
                    protocol_type: "consumer".into(),
                    protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
                    client_id: format!("c{slot}"),
                    client_host: "/127.0.0.1".into(),
                    require_known_member_id: arg & 1 == 1,
                };
                assert!(c.handle(GroupOp::Join(args, tx)).is_none());
                cl.join = Some(rx);
            }
            1 if cl.sync.is_none() => {
                let generation = match arg % 8 {
                    0 => cl.generation + 1,
                    1 => cl.generation - 1,
                    _ => cl.generation,
                };
                let assignments: Vec<(String, Bytes)> = cl
                    .leads
                    .iter()
                    .flatten()
                    .map(|m| (m.clone(), Bytes::from(format!("{generation}:{m}"))))
                    .collect();
                if !assignments.is_empty() {
                    seen.sent.insert(
                        (generation, cl.member_id.clone()),
                        assignments.iter().cloned().collect(),
                    );
                }
                let (tx, rx) = oneshot::channel();
                let args = SyncArgs {
                    group: "g".into(),
                    generation,
                    member_id: cl.member_id.clone(),
                    instance_id: cl.instance.clone(),
                    protocol_type: Some("consumer".into()),
                    protocol: Some("range".into()),
                    assignments,
                };
                assert!(c.handle(GroupOp::Sync(args, tx)).is_none());
                cl.sync = Some((generation, rx));
            }
            2 => {
                let (tx, _rx) = oneshot::channel();
                c.handle(GroupOp::Heartbeat {
                    group: "g".into(),
                    generation: cl.generation,
                    member_id: cl.member_id.clone(),
                    instance_id: cl.instance.clone(),
                    reply: tx,
                });
            }
            3 => {
                let (tx, _rx) = oneshot::channel();
                c.handle(GroupOp::Leave {
                    group: "g".into(),
                    members: vec![(cl.member_id.clone(), cl.instance.clone())],
                    reply: tx,
                });
                cl.leads = None;
            }
            _ => {
                c.advance_clock(Duration::from_millis(u64::from(arg % 16) * 500));
                c.tick(false);
            }
        }
        collect(&mut clients, &mut seen);
        check(&seen);
    }
    // Time passes: every waiting join and sync is answered or dropped.
    for _ in 0..8 {
        c.advance_clock(Duration::from_secs(5));
        c.tick(false);
        collect(&mut clients, &mut seen);
    }
    check(&seen);
}

impl Seen {
    /// Who a member id is: its instance id for a static member, else the id itself.
    fn who(&self, id: &str) -> String {
        self.instance_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

fn collect(clients: &mut [Client], seen: &mut Seen) {
    for cl in clients.iter_mut() {
        if let Some(rx) = &mut cl.join {
            match rx.try_recv() {
                Ok(None) => {}
                Ok(Some(r)) => {
                    cl.join = None;
                    if r.error == MEMBER_ID_REQUIRED {
                        cl.member_id = r.member_id.clone();
                    } else if r.error == 0 {
                        cl.member_id = r.member_id.clone();
                        cl.generation = r.generation;
                        if let Some(i) = &cl.instance {
                            seen.instance_of.insert(r.member_id.clone(), i.clone());
                        }
                        for (m, i, _) in &r.members {
                            if let Some(i) = i {
                                seen.instance_of.insert(m.clone(), i.clone());
                            }
                        }
                        // Compared by who they are as far as known now (an answer may
                        // name a static leader before its own answer taught us its instance).
                        let first = seen
                            .leaders
                            .entry(r.generation)
                            .or_insert_with(|| r.leader.clone())
                            .clone();
                        assert_eq!(
                            seen.who(&first),
                            seen.who(&r.leader),
                            "two leaders for generation {}",
                            r.generation
                        );
                        if r.leader == r.member_id {
                            let members: Vec<String> =
                                r.members.iter().map(|(m, _, _)| m.clone()).collect();
                            assert!(
                                members.contains(&r.member_id),
                                "the leader is not among its generation's members"
                            );
                            let set: HashSet<String> =
                                members.iter().map(|m| seen.who(m)).collect();
                            if let Some(prev) = seen.members.insert(r.generation, set.clone()) {
                                assert_eq!(
                                    prev, set,
                                    "generation {} changed members",
                                    r.generation
                                );
                            }
                            cl.leads = Some(members);
                        } else {
                            cl.leads = None;
                        }
                    }
                }
                Err(_) => cl.join = None, // dropped: the member was replaced or removed
            }
        }
        if let Some((generation, rx)) = &mut cl.sync {
            let generation = *generation;
            match rx.try_recv() {
                Ok(None) => {}
                Ok(Some(r)) => {
                    cl.sync = None;
                    if r.error == 0 {
                        if let Some(sent) = seen.sent.remove(&(generation, cl.member_id.clone())) {
                            let by_who = sent.into_iter().map(|(m, a)| (seen.who(&m), a)).collect();
                            // The first accepted leader's sync assigns; a later one (the
                            // group already Stable, e.g. a static leader that rejoined) is
                            // answered with the assignment in force, as Kafka does.
                            seen.assigned.entry(generation).or_insert(by_who);
                        }
                        let who = seen.who(&cl.member_id);
                        seen.synced.push((generation, who, r.assignment.clone()));
                    }
                }
                Err(_) => cl.sync = None,
            }
        }
    }
}

fn check(seen: &Seen) {
    for (generation, member, assignment) in &seen.synced {
        if let Some(members) = seen.members.get(generation) {
            assert!(
                members.contains(member),
                "generation {generation}: {member} synced but is not a member"
            );
        }
        if let Some(assigned) = seen.assigned.get(generation) {
            let want = assigned.get(member).cloned().unwrap_or_default();
            assert_eq!(
                assignment, &want,
                "generation {generation}: {member} got another assignment than its leader gave"
            );
        }
    }
}

/// Seeds: rounds of joins, syncs and heartbeats with time passing, dynamic and static.
pub fn seeds() -> Vec<Vec<u8>> {
    let round: Vec<u8> = vec![
        0x00, 2, 0x10, 2, 0x20, 2, 0x05, 1, // joins (ids handed out), time
        0x00, 2, 0x10, 2, 0x20, 2, 0x05, 8, // joins with the ids, the round completes
        0x01, 2, 0x11, 2, 0x21, 2, // syncs
        0x02, 0, 0x12, 0, 0x22, 0, 0x05, 4, // heartbeats, time
        0x13, 0, 0x05, 8, 0x00, 2, 0x20, 2, // one leaves, rejoin
        0x01, 2, 0x21, 2, 0x05, 15, 0x05, 15,
    ];
    vec![
        [&[0u8][..], &round].concat(),
        [&[1u8][..], &round].concat(),
        [&[0x1eu8][..], &round].concat(),
        [&[0x0bu8][..], &round, &round].concat(),
    ]
}
