//! Request dispatch: the frame's header decides the handler. Produce is dispatched in
//! request order by the connection's reader (see [`crate::handlers::produce`]); every other
//! request is handled in a task of its own, and the connection writes the answers in request
//! order.

use crate::handlers::{
    admin, configs, consumer_groups, fetch, groups, log_dirs, metadata, produce, producers,
    reassign, telemetry, topic_partitions, txn,
};
use crate::shard::Shard;
use bytes::Bytes;
use glommio::task::JoinHandle;
use kafka_protocol::messages::*;
use runnel_protocol::{api_versions_response, code, parse_header, Outcome, Request};
use std::rc::Rc;

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
            Ok(body) => metadata::handle(shard, &req, body).await,
            Err(e) => Outcome::Close(e),
        },
        ApiKey::Fetch => fetch::handle(shard, &req).await,
        ApiKey::ListOffsets => admin::list_offsets(shard, &req).await,
        ApiKey::CreateTopics => admin::create_topics(shard, &req).await,
        ApiKey::DeleteTopics => admin::delete_topics(shard, &req).await,
        ApiKey::CreatePartitions => admin::create_partitions(shard, &req).await,
        ApiKey::DeleteRecords => admin::delete_records(shard, &req).await,
        ApiKey::OffsetForLeaderEpoch => admin::offset_for_leader_epoch(shard, &req).await,
        ApiKey::DescribeConfigs => admin::describe_configs(shard, &req).await,
        ApiKey::AlterConfigs => configs::alter_configs(shard, &req).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter_configs(shard, &req).await,
        ApiKey::DescribeCluster => admin::describe_cluster(shard, &req).await,
        ApiKey::ElectLeaders => admin::elect_leaders(shard, &req).await,
        ApiKey::DescribeLogDirs => log_dirs::describe_log_dirs(shard, &req).await,
        ApiKey::AlterPartitionReassignments => reassign::alter(shard, &req).await,
        ApiKey::DescribeProducers => producers::describe_producers(shard, &req).await,
        ApiKey::DescribeTopicPartitions => {
            topic_partitions::describe_topic_partitions(shard, &req).await
        }
        ApiKey::ListPartitionReassignments => reassign::list(shard, &req).await,
        ApiKey::FindCoordinator => admin::find_coordinator(shard, &req).await,
        ApiKey::InitProducerId => admin::init_producer_id(shard, &req).await,
        ApiKey::AddPartitionsToTxn => txn::add_partitions_to_txn(shard, &req).await,
        ApiKey::AddOffsetsToTxn => txn::add_offsets_to_txn(shard, &req).await,
        ApiKey::EndTxn => txn::end_txn(shard, &req).await,
        ApiKey::WriteTxnMarkers => txn::write_txn_markers(shard, &req).await,
        ApiKey::TxnOffsetCommit => txn::txn_offset_commit(shard, &req).await,
        ApiKey::DescribeTransactions => txn::describe_transactions(shard, &req).await,
        ApiKey::ListTransactions => txn::list_transactions(shard, &req).await,
        ApiKey::JoinGroup => groups::join_group(shard, &req).await,
        ApiKey::SyncGroup => groups::sync_group(shard, &req).await,
        ApiKey::Heartbeat => groups::heartbeat(shard, &req).await,
        ApiKey::LeaveGroup => groups::leave_group(shard, &req).await,
        ApiKey::OffsetCommit => groups::offset_commit(shard, &req).await,
        ApiKey::OffsetFetch => groups::offset_fetch(shard, &req).await,
        ApiKey::DescribeGroups => groups::describe_groups(shard, &req).await,
        ApiKey::ListGroups => groups::list_groups(shard, &req).await,
        ApiKey::DeleteGroups => groups::delete_groups(shard, &req).await,
        ApiKey::OffsetDelete => groups::offset_delete(shard, &req).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_groups::heartbeat(shard, &req).await,
        ApiKey::ConsumerGroupDescribe => consumer_groups::describe(shard, &req).await,
        ApiKey::GetTelemetrySubscriptions => telemetry::get_subscriptions(shard, &req).await,
        ApiKey::PushTelemetry => telemetry::push(shard, &req).await,
        other => Outcome::Close(format!("{other:?} is not served")),
    }
}
