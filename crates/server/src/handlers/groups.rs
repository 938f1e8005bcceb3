//! The group APIs on the connection's shard: decode, send to the group's coordinator shard
//! ([`runnel_group`], driven by [`crate::groups`]), and encode the answer for the request's
//! version.

use crate::groups::coordinator_of;
use crate::shard::{Shard, ShardMsg};
use futures_channel::oneshot;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_group::{self as group, code, GroupOp, JoinArgs, SyncArgs};
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
use std::rc::Rc;

macro_rules! decode {
    ($req:expr) => {
        match $req.decode_body() {
            Ok(b) => b,
            Err(e) => return Outcome::Close(e),
        }
    };
}

/// Sends `op` (built around its reply channel) to the group's coordinator shard and waits;
/// NOT_COORDINATOR when another broker leads the group's `__consumer_offsets` partition.
pub(crate) async fn ask<R>(
    shard: &Rc<Shard>,
    group: &str,
    make: impl FnOnce(oneshot::Sender<R>) -> GroupOp,
) -> Result<R, i16> {
    let (to, p) = coordinator_of(shard, group);
    match shard.check_leader(runnel_group::offsets::TOPIC, p, -1) {
        Ok(()) => {}
        Err(code::UNKNOWN_TOPIC_OR_PARTITION) => return Err(code::COORDINATOR_NOT_AVAILABLE),
        Err(_) => return Err(code::NOT_COORDINATOR),
    }
    let (tx, rx) = oneshot::channel();
    let op = make(tx);
    let _ = shard.call(to, |done| ShardMsg::Group { op, done }).await;
    rx.await.map_err(|_| code::COORDINATOR_NOT_AVAILABLE)
}

pub(crate) fn s(x: &StrBytes) -> String {
    x.to_string()
}

pub(crate) fn opt(x: &Option<StrBytes>) -> Option<String> {
    x.as_ref().map(|v| v.to_string())
}

pub async fn join_group(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: JoinGroupRequest = decode!(req);
    let v = req.version;
    let args = JoinArgs {
        group: s(&body.group_id),
        member_id: s(&body.member_id),
        instance_id: opt(&body.group_instance_id),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout stands in, as in Kafka.
        rebalance_timeout_ms: if v >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: s(&body.protocol_type),
        protocols: body
            .protocols
            .iter()
            .map(|p| (s(&p.name), p.metadata.clone()))
            .collect(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.to_string(),
        require_known_member_id: v >= 4,
    };
    let member_id = args.member_id.clone();
    let group = args.group.clone();
    let r = ask(shard, &group, |tx| GroupOp::Join(args, tx))
        .await
        .unwrap_or_else(|e| group::JoinResult {
            error: e,
            generation: -1,
            member_id,
            ..Default::default()
        });
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_leader(sb(&r.leader))
        .with_member_id(sb(&r.member_id))
        .with_members(
            r.members
                .iter()
                .map(|(id, inst, meta)| {
                    let mut m = JoinGroupResponseMember::default()
                        .with_member_id(sb(id))
                        .with_metadata(meta.clone());
                    if v >= 5 {
                        m = m.with_group_instance_id(inst.as_deref().map(sb));
                    }
                    m
                })
                .collect(),
        );
    if v >= 7 {
        resp = resp
            .with_protocol_type(r.protocol_type.as_deref().map(sb))
            .with_protocol_name(r.protocol.as_deref().map(sb));
    } else {
        resp = resp.with_protocol_name(Some(sb(r.protocol.as_deref().unwrap_or_default())));
    }
    if v >= 9 {
        resp = resp.with_skip_assignment(r.skip_assignment);
    }
    encode_or_close(req.correlation_id, v, &resp)
}

pub async fn sync_group(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: SyncGroupRequest = decode!(req);
    let v = req.version;
    if v >= 5 && (body.protocol_type.is_none() || body.protocol_name.is_none()) {
        // As Kafka: from v5 both must be given (KIP-559).
        return encode_or_close(
            req.correlation_id,
            v,
            &SyncGroupResponse::default().with_error_code(code::INCONSISTENT_GROUP_PROTOCOL),
        );
    }
    let args = SyncArgs {
        group: s(&body.group_id),
        generation: body.generation_id,
        member_id: s(&body.member_id),
        instance_id: opt(&body.group_instance_id),
        protocol_type: opt(&body.protocol_type),
        protocol: opt(&body.protocol_name),
        assignments: body
            .assignments
            .iter()
            .map(|a| (s(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    let group = args.group.clone();
    let r = ask(shard, &group, |tx| GroupOp::Sync(args, tx))
        .await
        .unwrap_or_else(|e| group::SyncResult {
            error: e,
            ..Default::default()
        });
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    if v >= 5 {
        resp = resp
            .with_protocol_type(r.protocol_type.as_deref().map(sb))
            .with_protocol_name(r.protocol.as_deref().map(sb));
    }
    encode_or_close(req.correlation_id, v, &resp)
}

pub async fn heartbeat(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: HeartbeatRequest = decode!(req);
    let group = s(&body.group_id);
    let error = ask(shard, &group, |reply| GroupOp::Heartbeat {
        group: group.clone(),
        generation: body.generation_id,
        member_id: s(&body.member_id),
        instance_id: opt(&body.group_instance_id),
        reply,
    })
    .await
    .unwrap_or_else(|e| e);
    encode_or_close(
        req.correlation_id,
        req.version,
        &HeartbeatResponse::default().with_error_code(error),
    )
}

pub async fn leave_group(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: LeaveGroupRequest = decode!(req);
    let v = req.version;
    let group = s(&body.group_id);
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        body.members
            .iter()
            .map(|m| (s(&m.member_id), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(s(&body.member_id), None)]
    };
    let asked = members.clone();
    let (error, codes) = ask(shard, &group, |reply| GroupOp::Leave {
        group: group.clone(),
        members,
        reply,
    })
    .await
    .unwrap_or_else(|e| (e, Vec::new()));
    let mut resp = LeaveGroupResponse::default();
    if v >= 3 {
        resp = resp.with_error_code(error).with_members(
            asked
                .iter()
                .zip(codes.iter().chain(std::iter::repeat(&error)))
                .map(|((id, inst), c)| {
                    MemberResponse::default()
                        .with_member_id(sb(id))
                        .with_group_instance_id(inst.as_deref().map(sb))
                        .with_error_code(*c)
                })
                .collect(),
        );
    } else {
        // One member: its own result is the answer.
        resp = resp.with_error_code(if error != code::NONE {
            error
        } else {
            codes.first().copied().unwrap_or(code::NONE)
        });
    }
    encode_or_close(req.correlation_id, v, &resp)
}

pub async fn offset_commit(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: OffsetCommitRequest = decode!(req);
    let v = req.version;
    let group = s(&body.group_id);
    let snapshot = shard.snapshot();
    // Partitions of unknown topics are answered here; the rest go to the coordinator.
    let mut entries: Vec<group::CommitEntry> = Vec::new();
    // Per topic: (partition, error decided here, if any).
    type Rows = Vec<(i32, Option<i16>)>;
    let mut layout: Vec<(TopicName, Rows)> = Vec::new();
    for t in &body.topics {
        let meta = snapshot.topic(&t.name.0);
        let mut rows = Vec::new();
        for p in &t.partitions {
            match meta {
                Some(m) if (0..m.partitions).contains(&p.partition_index) => {
                    entries.push((
                        m.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        if v >= 6 { p.committed_leader_epoch } else { -1 },
                        opt(&p.committed_metadata),
                    ));
                    rows.push((p.partition_index, None));
                }
                _ => rows.push((p.partition_index, Some(code::UNKNOWN_TOPIC_OR_PARTITION))),
            }
        }
        layout.push((t.name.clone(), rows));
    }
    let result = if entries.is_empty() {
        Ok(Vec::new())
    } else {
        ask(shard, &group, |reply| GroupOp::Commit {
            group: group.clone(),
            version: v,
            generation: body.generation_id_or_member_epoch,
            member_id: s(&body.member_id),
            instance_id: opt(&body.group_instance_id),
            offsets: entries,
            reply,
        })
        .await
        .unwrap_or_else(Err)
    };
    let mut codes = match &result {
        Ok(c) => c.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let topics = layout
        .into_iter()
        .map(|(name, rows)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, pre)| {
                            let c = match (pre, &result) {
                                (Some(c), _) => c,
                                (None, Err(e)) => *e,
                                (None, Ok(_)) => codes.next().unwrap_or(code::NONE),
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        v,
        &OffsetCommitResponse::default().with_topics(topics),
    )
}

async fn fetch_group(
    shard: &Rc<Shard>,
    group: &str,
    partitions: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> Result<Vec<group::FetchedTopic>, i16> {
    ask(shard, group, |reply| GroupOp::Fetch {
        group: group.to_string(),
        partitions,
        require_stable,
        member,
        reply,
    })
    .await
    .unwrap_or_else(Err)
}

pub async fn offset_fetch(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: OffsetFetchRequest = decode!(req);
    let v = req.version;
    if v >= 8 {
        let mut groups = Vec::new();
        for g in &body.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            // v9: a KIP-848 member names itself and its epoch (checked by the coordinator).
            let member = g
                .member_id
                .as_ref()
                .filter(|m| !m.is_empty())
                .map(|m| (m.to_string(), g.member_epoch));
            let r = fetch_group(shard, &g.group_id, wanted, member, body.require_stable).await;
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match r {
                Ok(topics) => {
                    out.topics = topics
                        .into_iter()
                        .map(|(t, rows)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&t))
                                .with_partitions(
                                    rows.into_iter()
                                        .map(|(p, o, e, m, c)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(e)
                                                .with_metadata(m.as_deref().map(sb))
                                                .with_error_code(c)
                                        })
                                        .collect(),
                                )
                        })
                        .collect()
                }
                Err(c) => out = out.with_error_code(c),
            }
            groups.push(out);
        }
        return encode_or_close(
            req.correlation_id,
            v,
            &OffsetFetchResponse::default().with_groups(groups),
        );
    }
    let wanted = body.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let r = fetch_group(
        shard,
        &body.group_id,
        wanted,
        None,
        v >= 7 && body.require_stable,
    )
    .await;
    let mut resp = OffsetFetchResponse::default();
    match r {
        Ok(topics) => {
            resp.topics = topics
                .into_iter()
                .map(|(t, rows)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, o, e, m, c)| {
                                    let mut x = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_metadata(m.as_deref().map(sb))
                                        .with_error_code(c);
                                    if v >= 5 {
                                        x = x.with_committed_leader_epoch(e);
                                    }
                                    x
                                })
                                .collect(),
                        )
                })
                .collect();
        }
        Err(c) if v >= 2 => resp = resp.with_error_code(c),
        Err(_) => {}
    }
    encode_or_close(req.correlation_id, v, &resp)
}

pub async fn describe_groups(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DescribeGroupsRequest = decode!(req);
    let v = req.version;
    let mut groups = Vec::new();
    for g in &body.groups {
        let d = ask(shard, g, |reply| GroupOp::Describe {
            group: g.to_string(),
            reply,
        })
        .await;
        let mut out = DescribedGroup::default().with_group_id(g.clone());
        match d {
            Ok(d) => {
                out = out
                    .with_error_code(d.error)
                    .with_group_state(sb(d.state.name()))
                    .with_protocol_type(sb(&d.protocol_type))
                    .with_protocol_data(sb(&d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let mut x = DescribedGroupMember::default()
                                    .with_member_id(sb(&m.member_id))
                                    .with_client_id(sb(&m.client_id))
                                    .with_client_host(sb(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if v >= 4 {
                                    x = x.with_group_instance_id(m.instance_id.as_deref().map(sb));
                                }
                                x
                            })
                            .collect(),
                    );
            }
            Err(e) => out = out.with_error_code(e),
        }
        groups.push(out);
    }
    encode_or_close(
        req.correlation_id,
        v,
        &DescribeGroupsResponse::default().with_groups(groups),
    )
}

pub async fn list_groups(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ListGroupsRequest = decode!(req);
    let v = req.version;
    let states: Vec<String> = if v >= 4 {
        body.states_filter.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if v >= 5 {
        body.types_filter.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let mut groups = Vec::new();
    for i in 0..shard.shared.nr_shards {
        let (tx, rx) = oneshot::channel();
        let op = GroupOp::List {
            states: states.clone(),
            types: types.clone(),
            reply: tx,
        };
        let _ = shard.call(i, |done| ShardMsg::Group { op, done }).await;
        if let Ok(list) = rx.await {
            groups.extend(list);
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    let listed = groups
        .into_iter()
        .map(|l| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(sb(&l.group)))
                .with_protocol_type(sb(&l.protocol_type));
            if v >= 4 {
                g = g.with_group_state(sb(l.state));
            }
            if v >= 5 {
                g = g.with_group_type(sb(l.group_type));
            }
            g
        })
        .collect();
    encode_or_close(
        req.correlation_id,
        v,
        &ListGroupsResponse::default().with_groups(listed),
    )
}

pub async fn delete_groups(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: DeleteGroupsRequest = decode!(req);
    let mut results = Vec::new();
    for g in &body.groups_names {
        let c = ask(shard, g, |reply| GroupOp::Delete {
            group: g.to_string(),
            reply,
        })
        .await
        .unwrap_or_else(|e| e);
        if c == code::NONE {
            tracing::info!(group = %g.as_str(), "deleted group");
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(c),
        );
    }
    encode_or_close(
        req.correlation_id,
        req.version,
        &DeleteGroupsResponse::default().with_results(results),
    )
}

pub async fn offset_delete(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: OffsetDeleteRequest = decode!(req);
    let group = s(&body.group_id);
    let partitions: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let (error, topics) = ask(shard, &group, |reply| GroupOp::OffsetDelete {
        group: group.clone(),
        partitions,
        reply,
    })
    .await
    .unwrap_or_else(|e| (e, Vec::new()));
    let resp = OffsetDeleteResponse::default()
        .with_error_code(error)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, rows)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            rows.into_iter()
                                .map(|(p, c)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    encode_or_close(req.correlation_id, req.version, &resp)
}
