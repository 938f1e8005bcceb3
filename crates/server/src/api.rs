//! Request dispatch: the frame's header decides the handler. Produce is dispatched in
//! request order by the connection's reader (see [`crate::produce`]); every other request is
//! handled in a task of its own, and the connection writes the answers in request order.

use crate::shard::Shard;
use crate::wire::{self, code, Response};
use crate::{admin_api, fetch, group_api, produce};
use bytes::Bytes;
use glommio::task::JoinHandle;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::rc::Rc;

/// What a request comes to.
pub enum Outcome {
    Reply(Response),
    /// acks=0 produce: the client expects no answer.
    NoReply,
    /// The request cannot be answered: log the reason and close the connection, as Kafka does
    /// for unknown APIs, unsupported versions and undecodable bodies.
    Close(String),
}

pub fn encode_or_close<R>(correlation_id: i32, version: i16, body: &R) -> Outcome
where
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
{
    match wire::encode(correlation_id, version, body) {
        Ok(r) => Outcome::Reply(r),
        Err(e) => Outcome::Close(e),
    }
}

pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// A request with its header decoded; `body` is what follows the header.
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub frame: Bytes,
    pub body_offset: usize,
    /// The request header's client id ("" if none).
    pub client_id: String,
    /// The client's address, as Kafka shows it ("/127.0.0.1").
    pub client_host: Rc<str>,
}

impl Request {
    pub fn decode_body<T: Decodable>(&self) -> Result<T, String> {
        let mut body = self.frame.slice(self.body_offset..);
        let req = T::decode(&mut body, self.version).map_err(|e| {
            format!(
                "malformed {:?} v{} request: {e}",
                self.api_key, self.version
            )
        })?;
        if !body.is_empty() {
            // Kafka ignores trailing bytes, and clients rely on it (librdkafka 2.x sends
            // Metadata v12 with a field that ended at v10).
            tracing::debug!(
                "{:?} v{} request: {} bytes after the body ignored",
                self.api_key,
                self.version,
                body.len()
            );
        }
        Ok(req)
    }
}

/// Starts a request: checks the header, then spawns its handler. Returns the task whose
/// output the connection writes, in request order.
pub async fn dispatch(
    shard: &Rc<Shard>,
    frame: Bytes,
    client_host: &Rc<str>,
) -> JoinHandle<Outcome> {
    shard.counters().requests.incr();
    let req = match parse_header(frame, client_host) {
        Ok(req) => req,
        Err(outcome) => return glommio::spawn_local(async move { outcome }).detach(),
    };
    if req.api_key == ApiKey::Produce {
        // The ordering-sensitive part runs here, in the reader, before the next request.
        return produce::dispatch(shard, req).await;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move { handle(&shard, req).await }).detach()
}

fn parse_header(frame: Bytes, client_host: &Rc<str>) -> Result<Request, Outcome> {
    let Some(peek) = wire::peek(&frame) else {
        return Err(Outcome::Close(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        )));
    };
    let Ok(api_key) = ApiKey::try_from(peek.api_key) else {
        return Err(Outcome::Close(format!("unknown API key {}", peek.api_key)));
    };
    let version = peek.api_version;
    let supported = wire::supported_range(api_key)
        .filter(|(lo, hi)| (*lo..=*hi).contains(&version))
        .is_some();
    if api_key == ApiKey::ApiVersions && !supported {
        // KIP-511: answer an ApiVersions of unknown version with UNSUPPORTED_VERSION and our
        // list, in a v0 response the client can always parse.
        return Err(api_versions_response(
            peek.correlation_id,
            0,
            code::UNSUPPORTED_VERSION,
        ));
    }
    if !supported || (api_key == ApiKey::Produce && version < wire::MIN_PRODUCE_VERSION) {
        return Err(Outcome::Close(format!(
            "unsupported version {version} of {api_key:?} (see ApiVersions)"
        )));
    }
    let header_version = api_key.request_header_version(version);
    let mut buf = frame.clone();
    // The header is decoded and dropped here: its client id would otherwise hold a
    // reference to the frame, which produce needs to own alone.
    let client_id;
    let body_offset = match RequestHeader::decode(&mut buf, header_version) {
        Ok(h) => {
            client_id = h.client_id.map(|c| c.to_string()).unwrap_or_default();
            frame.len() - buf.len()
        }
        Err(e) => {
            return Err(Outcome::Close(format!(
                "malformed {api_key:?} v{version} request header: {e}"
            )))
        }
    };
    drop(buf);
    Ok(Request {
        client_id,
        client_host: client_host.clone(),
        api_key,
        version,
        correlation_id: peek.correlation_id,
        frame,
        body_offset,
    })
}

async fn handle(shard: &Rc<Shard>, req: Request) -> Outcome {
    match req.api_key {
        ApiKey::ApiVersions => {
            match req.decode_body::<ApiVersionsRequest>() {
                Ok(_) => {}
                // KIP-511: a v3+ body we cannot parse still gets INVALID_REQUEST, not a close.
                Err(e) if req.version >= 3 => {
                    tracing::debug!("{e}");
                    return api_versions_response(
                        req.correlation_id,
                        req.version,
                        code::INVALID_REQUEST,
                    );
                }
                Err(e) => return Outcome::Close(e),
            }
            api_versions_response(req.correlation_id, req.version, code::NONE)
        }
        ApiKey::Metadata => match req.decode_body::<MetadataRequest>() {
            Ok(body) => metadata(shard, &req, body).await,
            Err(e) => Outcome::Close(e),
        },
        ApiKey::Fetch => fetch::handle(shard, &req).await,
        ApiKey::ListOffsets => admin_api::list_offsets(shard, &req).await,
        ApiKey::CreateTopics => admin_api::create_topics(shard, &req).await,
        ApiKey::DeleteTopics => admin_api::delete_topics(shard, &req).await,
        ApiKey::CreatePartitions => admin_api::create_partitions(shard, &req).await,
        ApiKey::DeleteRecords => admin_api::delete_records(shard, &req).await,
        ApiKey::OffsetForLeaderEpoch => admin_api::offset_for_leader_epoch(shard, &req).await,
        ApiKey::DescribeConfigs => admin_api::describe_configs(shard, &req).await,
        ApiKey::DescribeCluster => admin_api::describe_cluster(shard, &req).await,
        ApiKey::FindCoordinator => admin_api::find_coordinator(shard, &req).await,
        ApiKey::InitProducerId => admin_api::init_producer_id(shard, &req).await,
        ApiKey::JoinGroup => group_api::join_group(shard, &req).await,
        ApiKey::SyncGroup => group_api::sync_group(shard, &req).await,
        ApiKey::Heartbeat => group_api::heartbeat(shard, &req).await,
        ApiKey::LeaveGroup => group_api::leave_group(shard, &req).await,
        ApiKey::OffsetCommit => group_api::offset_commit(shard, &req).await,
        ApiKey::OffsetFetch => group_api::offset_fetch(shard, &req).await,
        ApiKey::DescribeGroups => group_api::describe_groups(shard, &req).await,
        ApiKey::ListGroups => group_api::list_groups(shard, &req).await,
        ApiKey::DeleteGroups => group_api::delete_groups(shard, &req).await,
        ApiKey::OffsetDelete => group_api::offset_delete(shard, &req).await,
        other => Outcome::Close(format!("{other:?} is not served")),
    }
}

fn api_versions_response(correlation_id: i32, version: i16, error_code: i16) -> Outcome {
    let api_keys = wire::SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    // Only defaults in the tagged fields (features), so none is written: librdkafka before
    // 2.2 cannot skip them.
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys);
    encode_or_close(correlation_id, version, &body)
}

async fn metadata(shard: &Rc<Shard>, req: &Request, body: MetadataRequest) -> Outcome {
    let version = req.version;
    let config = shard.config();
    let mut snapshot = shard.snapshot();
    // Which topics: null = all; v0 sends an empty list for all.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match &body.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let auto_create = config.auto_create_topics && (version < 4 || body.allow_auto_topic_creation);
    if let (Some(wanted), true) = (&wanted, auto_create) {
        let missing: Vec<crate::admin::NewTopic> = wanted
            .iter()
            .filter_map(|(n, _)| n.as_ref())
            .filter(|n| snapshot.topic(n).is_none())
            .filter(|n| crate::metadata::validate_topic_name(n).is_ok())
            .map(|n| crate::admin::NewTopic {
                name: n.clone(),
                partitions: config.default_partitions,
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
    let topic_out = |meta: &crate::metadata::TopicMeta| {
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(topic_name(&meta.name)))
            .with_partitions(
                (0..meta.partitions)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(crate::metadata::NODE_ID))
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![BrokerId(crate::metadata::NODE_ID)])
                            .with_isr_nodes(vec![BrokerId(crate::metadata::NODE_ID)])
                    })
                    .collect(),
            );
        if version >= 10 {
            t = t.with_topic_id(uuid::Uuid::from_bytes(meta.id));
        }
        if version >= 1 && &*meta.name == crate::offsets_store::TOPIC {
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
                        let err = if crate::metadata::validate_topic_name(n).is_err() {
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
    let mut broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(crate::metadata::NODE_ID))
        .with_host(sb(&shard.shared.advertised_host))
        .with_port(shard.shared.advertised_port);
    broker.rack = None;
    let mut resp = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_topics(topics);
    if version >= 1 {
        resp = resp.with_controller_id(BrokerId(crate::metadata::NODE_ID));
    }
    if version >= 2 {
        resp = resp.with_cluster_id(Some(sb(&snapshot.cluster_id)));
    }
    encode_or_close(req.correlation_id, version, &resp)
}
