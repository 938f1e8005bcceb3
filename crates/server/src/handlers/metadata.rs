//! Metadata (with topic auto-creation).

use crate::shard::Shard;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use runnel_protocol::{code, encode_or_close, sb, topic_name, Outcome, Request};
use std::rc::Rc;

/// The "controller" clients are told of: the broker they send admin requests to. Every
/// broker takes them (they become commands in the metadata log, which Raft forwards to
/// the active controller), so, as KRaft brokers do, this names a live broker rather than
/// the Raft leader: this one. A client told of the Raft leader would keep sending to it
/// after it died, until its next metadata refresh (librdkafka: 5 minutes).
pub fn controller_for_clients(shard: &Shard, snapshot: &runnel_metadata::Snapshot) -> i32 {
    let me = shard.node_id();
    if snapshot.is_live(me) {
        me
    } else {
        snapshot.controller_id
    }
}

/// Metadata: the live brokers, the topics asked for (all: null) with each partition's
/// leader, replicas, ISR and offline replicas; missing topics are auto-created when allowed.
pub async fn handle(shard: &Rc<Shard>, req: &Request, body: MetadataRequest) -> Outcome {
    let version = req.version;
    let config = shard.config();
    let mut snapshot = shard.snapshot();
    // Which topics: null = all; v0 sends an empty list for all.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match &body.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => {
            let mut seen = std::collections::HashSet::new();
            Some(
                t.iter()
                    // By id (v10+): the Java client sends an empty name with the id, not null.
                    .map(|t| {
                        let name = t.name.as_ref().map(|n| n.0.to_string());
                        let name = name.filter(|n| !n.is_empty() || t.topic_id.is_nil());
                        (name, t.topic_id)
                    })
                    // A topic asked for twice is answered once, as Kafka does (the Java
                    // client repeats them).
                    .filter(|w| seen.insert(w.clone()))
                    .collect(),
            )
        }
    };
    let auto_create = config.auto_create_topics && (version < 4 || body.allow_auto_topic_creation);
    if let (Some(wanted), true) = (&wanted, auto_create) {
        let missing: Vec<crate::admin::NewTopic> = wanted
            .iter()
            .filter_map(|(n, _)| n.as_ref())
            .filter(|n| snapshot.topic(n).is_none())
            .filter(|n| runnel_metadata::validate_topic_name(n).is_ok())
            .map(|n| crate::admin::NewTopic {
                name: n.clone(),
                partitions: config.default_partitions,
                replication_factor: None,
                assignment: None,
                configs: Default::default(),
            })
            .collect();
        if !missing.is_empty() {
            for (t, r) in missing.iter().zip(
                crate::admin::submit(
                    shard,
                    crate::admin::AdminOp::CreateTopics {
                        topics: missing.clone(),
                        validate_only: false,
                    },
                )
                .await,
            ) {
                match r {
                    Ok(_) => tracing::info!(
                        topic = %t.name,
                        partitions = t.partitions,
                        "auto-created topic"
                    ),
                    Err((c, e)) if c != code::TOPIC_ALREADY_EXISTS => {
                        tracing::warn!(topic = %t.name, "auto-create failed: {e}")
                    }
                    Err(_) => {}
                }
            }
            snapshot = shard.snapshot();
        }
    }
    let topic_out = |meta: &runnel_metadata::TopicMeta| {
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(topic_name(&meta.name)))
            .with_partitions(
                meta.assignment
                    .iter()
                    .enumerate()
                    .map(|(p, pm)| {
                        let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
                        let offline = snapshot.offline_replicas(pm);
                        let mut out = MetadataResponsePartition::default()
                            .with_partition_index(p as i32)
                            .with_leader_id(BrokerId(pm.leader))
                            .with_leader_epoch(pm.leader_epoch)
                            .with_replica_nodes(ids(&pm.replicas))
                            .with_isr_nodes(ids(&pm.isr));
                        if version >= 5 {
                            out = out.with_offline_replicas(ids(&offline));
                        }
                        if pm.leader < 0 {
                            out = out.with_error_code(code::LEADER_NOT_AVAILABLE);
                        }
                        out
                    })
                    .collect(),
            );
        if version >= 10 {
            t = t.with_topic_id(uuid::Uuid::from_bytes(meta.id));
        }
        if version >= 1 && runnel_metadata::cluster::is_internal(&meta.name) {
            t = t.with_is_internal(true);
        }
        t
    };
    let topics: Vec<MetadataResponseTopic> = match wanted {
        None => snapshot.topics.values().map(|m| topic_out(m)).collect(),
        Some(wanted) => wanted
            .iter()
            .map(|(name, id)| {
                let meta = match name {
                    Some(n) => snapshot.topic(n),
                    None => snapshot.topic_by_id(id.as_bytes()),
                };
                match (meta, name) {
                    (Some(m), _) => topic_out(m),
                    (None, Some(n)) => {
                        let err = if runnel_metadata::validate_topic_name(n).is_err() {
                            code::INVALID_TOPIC_EXCEPTION
                        } else {
                            code::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(err)
                            .with_name(Some(topic_name(n)))
                    }
                    (None, None) => {
                        let mut t = MetadataResponseTopic::default()
                            .with_error_code(code::UNKNOWN_TOPIC_ID)
                            .with_name(None);
                        if version >= 10 {
                            t = t.with_topic_id(*id);
                        }
                        t
                    }
                }
            })
            .collect(),
    };
    let brokers = snapshot
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(sb(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(sb))
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        resp = resp.with_controller_id(BrokerId(controller_for_clients(shard, &snapshot)));
    }
    if version >= 2 {
        resp = resp.with_cluster_id(Some(sb(&snapshot.cluster_id)));
    }
    encode_or_close(req.correlation_id, version, &resp)
}
