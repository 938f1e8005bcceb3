//! KIP-714 client telemetry: answered as Kafka answers with no client-metrics
//! subscriptions configured. The subscription requests no metrics, so clients push
//! nothing and ask again after the push interval; a push that comes anyway is dropped.

use crate::shard::Shard;
use kafka_protocol::messages::*;
use runnel_protocol::{encode_or_close, Outcome, Request};
use std::rc::Rc;

/// Kafka's interval.ms default for a subscription: how long a client waits before asking
/// again.
const PUSH_INTERVAL_MS: i32 = 300_000;
/// Kafka's telemetry.max.bytes default.
const TELEMETRY_MAX_BYTES: i32 = 1_048_576;
const UNKNOWN_SUBSCRIPTION_ID: i16 = 117;
const TELEMETRY_TOO_LARGE: i16 = 118;

/// The subscription id given to a client instance: stable for the instance, so a push with
/// it is recognised, and different when the (empty) subscription changes, as Kafka's is.
fn subscription_id(instance: &uuid::Uuid) -> i32 {
    crc32c::crc32c_append(crc32c::crc32c(b"[]300000"), instance.as_bytes()) as i32
}

pub async fn get_subscriptions(_shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: GetTelemetrySubscriptionsRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    // A client without an instance id yet gets one.
    let instance = if body.client_instance_id.is_nil() {
        uuid::Uuid::from_bytes(runnel_metadata::random_id())
    } else {
        body.client_instance_id
    };
    let resp = GetTelemetrySubscriptionsResponse::default()
        .with_client_instance_id(instance)
        .with_subscription_id(subscription_id(&instance))
        // zstd, lz4, gzip, snappy (Kafka's order of preference).
        .with_accepted_compression_types(vec![4, 3, 1, 2])
        .with_push_interval_ms(PUSH_INTERVAL_MS)
        .with_telemetry_max_bytes(TELEMETRY_MAX_BYTES)
        .with_delta_temporality(true)
        .with_requested_metrics(Vec::new());
    encode_or_close(req.correlation_id, req.version, &resp)
}

pub async fn push(_shard: &Rc<Shard>, req: &Request) -> Outcome {
    let body: PushTelemetryRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return Outcome::Close(e),
    };
    let error = if body.client_instance_id.is_nil() {
        runnel_protocol::code::INVALID_REQUEST
    } else if body.subscription_id != subscription_id(&body.client_instance_id) {
        UNKNOWN_SUBSCRIPTION_ID
    } else if body.metrics.len() > TELEMETRY_MAX_BYTES as usize {
        TELEMETRY_TOO_LARGE
    } else {
        runnel_protocol::code::NONE
    };
    encode_or_close(
        req.correlation_id,
        req.version,
        &PushTelemetryResponse::default().with_error_code(error),
    )
}
