//! KIP-848's consumer group APIs: ConsumerGroupHeartbeat (join, stay, leave; the
//! coordinator assigns) and ConsumerGroupDescribe. The state machine is
//! [`runnel_group::consumer`], on the group's coordinator shard.

use super::groups::{ask, opt, s};
use crate::shard::Shard;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, ConsumerGroupDescribeResponse, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    self as heartbeat, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::messages::*;
use runnel_group::assignor::Assignment;
use runnel_group::consumer::{HeartbeatArgs, HeartbeatResult};
use runnel_group::GroupOp;
use runnel_metadata::Snapshot;
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
use std::rc::Rc;

pub async fn heartbeat(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ConsumerGroupHeartbeatRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let args = HeartbeatArgs {
        group: s(&body.group_id),
        version: req.version,
        member_id: s(&body.member_id),
        member_epoch: body.member_epoch,
        instance_id: opt(&body.instance_id),
        rack_id: opt(&body.rack_id),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed_topic_names: body
            .subscribed_topic_names
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: opt(&body.subscribed_topic_regex),
        server_assignor: opt(&body.server_assignor),
        owned: body.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .map(|tp| (*tp.topic_id.as_bytes(), tp.partitions.clone()))
                .collect()
        }),
        client_id: req.client_id.clone(),
        client_host: req.client_host.to_string(),
        snapshot: shard.snapshot(),
    };
    let group = args.group.clone();
    let r = if group.is_empty() {
        HeartbeatResult::error(
            runnel_protocol::code::INVALID_REQUEST,
            "GroupId can't be empty.",
        )
    } else {
        ask(shard, &group, |reply| {
            GroupOp::ConsumerHeartbeat(Box::new(args), reply)
        })
        .await
        .unwrap_or_else(|e| HeartbeatResult::error(e, ""))
    };
    if r.error != runnel_protocol::code::NONE {
        tracing::debug!(%group, member = %body.member_id.as_str(), error = r.error, message = ?r.message, "consumer group heartbeat refused");
    }
    let resp = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(r.error)
        .with_error_message(r.message.as_deref().filter(|m| !m.is_empty()).map(sb))
        .with_member_id(r.member_id.as_deref().map(sb))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
        .with_assignment(r.assignment.map(|a| {
            heartbeat::Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(t, ps)| {
                        heartbeat::TopicPartitions::default()
                            .with_topic_id(uuid::Uuid::from_bytes(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            )
        }));
    encode_or_close(req.correlation_id, req.version, &resp)
}

/// An assignment with each topic's name (topics deleted since are left out).
fn named(a: &Assignment, snapshot: &Snapshot) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        a.iter()
            .filter_map(|(id, ps)| {
                let meta = snapshot.topic_by_id(id)?;
                Some(
                    describe::TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_bytes(*id))
                        .with_topic_name(topic_name(&meta.name))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    )
}

pub async fn describe(shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: ConsumerGroupDescribeRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let mut groups = Vec::new();
    for g in &body.group_ids {
        let d = ask(shard, g, |reply| GroupOp::ConsumerDescribe {
            group: g.to_string(),
            reply,
        })
        .await;
        let snapshot = shard.snapshot();
        let mut out = DescribedGroup::default()
            .with_group_id(g.clone())
            // Kafka answers -2147483648 (not asked for or not authorized).
            .with_authorized_operations(i32::MIN);
        match d {
            // (An error leaves the other fields at their defaults, as Kafka does.)
            Ok(d) if d.error != 0 => {
                out = out
                    .with_error_code(d.error)
                    .with_error_message(d.message.as_deref().map(sb))
            }
            Ok(d) => {
                out = out
                    .with_error_code(d.error)
                    .with_error_message(d.message.as_deref().map(sb))
                    .with_group_state(sb(d.state))
                    .with_group_epoch(d.group_epoch)
                    .with_assignment_epoch(d.assignment_epoch)
                    .with_assignor_name(sb(&d.assignor))
                    .with_members(
                        d.members
                            .iter()
                            .map(|m| {
                                let mut x = describe::Member::default()
                                    .with_member_id(sb(&m.member_id))
                                    .with_instance_id(m.instance_id.as_deref().map(sb))
                                    .with_rack_id(m.rack_id.as_deref().map(sb))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(sb(&m.client_id))
                                    .with_client_host(sb(&m.client_host))
                                    .with_subscribed_topic_names(
                                        m.subscribed_topic_names
                                            .iter()
                                            .map(|n| topic_name(n))
                                            .collect(),
                                    )
                                    // Kafka keeps "" for "no regex".
                                    .with_subscribed_topic_regex(Some(sb(m
                                        .subscribed_topic_regex
                                        .as_deref()
                                        .unwrap_or(""))))
                                    .with_assignment(named(&m.assignment, &snapshot))
                                    .with_target_assignment(named(&m.target_assignment, &snapshot));
                                if req.version >= 1 {
                                    // KIP-1099: 1 = a member of the consumer protocol.
                                    x = x.with_member_type(1);
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
        req.version,
        &ConsumerGroupDescribeResponse::default().with_groups(groups),
    )
}
