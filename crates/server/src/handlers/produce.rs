//! Produce: the records of each partition stay slices of the received frame all the way to
//! the log's vectored write.
//!
//! kafka-protocol decodes the request with each partition's records as a `Bytes` slice of
//! the frame. The log assigns offsets by rewriting each batch's baseOffset in place, so it
//! takes `BytesMut`: once the decoded request is dropped the frame has a single owner again,
//! becomes a `BytesMut` without a copy, and is cut into one piece per partition.

use crate::shard::{PartitionError, ProduceError, Shard, ShardMsg};
use bytes::{Buf, BytesMut};
use futures_channel::oneshot;
use glommio::task::JoinHandle;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest};
use runnel_log::AppendInfo;
use runnel_metadata as metadata;
use runnel_protocol::code;
use runnel_protocol::{encode_or_close, sb, topic_name, Outcome, Request};
use std::rc::Rc;
use std::sync::Arc;

enum Slot {
    /// Answered before dispatch (unknown partition, too large, ...).
    Done(PartitionError),
    /// Sent to the owner; the bytes count once appended.
    Pending(oneshot::Receiver<Result<AppendInfo, ProduceError>>, u64),
}

struct PartitionSlot {
    index: i32,
    slot: Slot,
}

struct TopicSlot {
    name: Arc<str>,
    partitions: Vec<PartitionSlot>,
}

/// Decodes the request and sends each partition's batches to its owner shard, in request
/// order; returns the task that gathers the answers.
pub async fn dispatch(shard: &Rc<Shard>, req: Request) -> JoinHandle<Outcome> {
    let version = req.version;
    let correlation_id = req.correlation_id;
    let body: ProduceRequest = match req.decode_body() {
        Ok(b) => b,
        Err(e) => return glommio::spawn_local(async move { Outcome::Close(e) }).detach(),
    };
    let acks = body.acks;
    let timeout_ms = body.timeout_ms;
    // Copied out: the request is dropped before the frame is cut into partitions.
    let txn: Option<(Arc<str>, i16)> = body
        .transactional_id
        .as_ref()
        .map(|t| (Arc::from(t.0.as_str()), version));
    let snapshot = shard.snapshot();
    let frame_start = req.frame.as_ptr() as usize;

    // Pass 1: check each partition and note where its records sit in the frame.
    struct Plan {
        topic: usize,
        part: usize,
        start: usize,
        len: usize,
        max_message_bytes: u32,
    }
    let mut topics: Vec<TopicSlot> = Vec::with_capacity(body.topic_data.len());
    let mut plans: Vec<Plan> = Vec::new();
    for (ti, t) in body.topic_data.iter().enumerate() {
        let name: Arc<str> = t.name.0.as_str().into();
        let meta = snapshot.topic(&name);
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for (pi, p) in t.partition_data.iter().enumerate() {
            let err = |c: i16, m: String| PartitionSlot {
                index: p.index,
                slot: Slot::Done((c, m)),
            };
            let slot = if !matches!(acks, -1..=1) {
                err(
                    code::INVALID_REQUIRED_ACKS,
                    format!("acks={acks} is not 0, 1 or -1"),
                )
            } else if &*name == runnel_group::offsets::TOPIC {
                err(
                    code::INVALID_TOPIC_EXCEPTION,
                    "__consumer_offsets is written by the broker only".into(),
                )
            } else if &*name == runnel_group::txn::TOPIC {
                err(
                    code::INVALID_TOPIC_EXCEPTION,
                    "__transaction_state is written by the broker only".into(),
                )
            } else {
                let not_served = meta
                    .and_then(|m| m.partition(p.index))
                    .and_then(|pm| shard.check_leads(pm, -1).err());
                match meta {
                    Some(_) if not_served == Some(code::KAFKA_STORAGE_ERROR) => err(
                        code::KAFKA_STORAGE_ERROR,
                        format!(
                            "the replica of {name}-{} on broker {} is offline after a storage \
                             error",
                            p.index,
                            shard.node_id()
                        ),
                    ),
                    Some(_) if not_served.is_some() => err(
                        code::NOT_LEADER_OR_FOLLOWER,
                        format!(
                            "broker {} does not lead {name}-{}",
                            shard.node_id(),
                            p.index
                        ),
                    ),
                    Some(m) if (0..m.partitions).contains(&p.index) => {
                        match p.records.as_ref().filter(|r| !r.is_empty()) {
                            None => err(
                                code::INVALID_RECORD,
                                "the request has no records for this partition".into(),
                            ),
                            // Kafka refuses zstd below v7 (KIP-110: older clients could not
                            // read it back).
                            Some(r) if version < 7 && has_zstd_batch(r) => err(
                                code::UNSUPPORTED_COMPRESSION_TYPE,
                                "zstd needs Produce v7 or later".into(),
                            ),
                            Some(r) => {
                                plans.push(Plan {
                                    topic: ti,
                                    part: pi,
                                    start: r.as_ptr() as usize - frame_start,
                                    len: r.len(),
                                    max_message_bytes: metadata::max_message_bytes(
                                        shard.config().max_message_bytes,
                                        &m.overrides,
                                    ),
                                });
                                // Replaced when the records are dispatched below; an error
                                // if that never happens, never a success.
                                err(
                                    code::CORRUPT_MESSAGE,
                                    "records overlap another partition's in the request".into(),
                                )
                            }
                        }
                    }
                    _ => err(
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("{name}-{} does not exist", p.index),
                    ),
                }
            };
            partitions.push(slot);
        }
        topics.push(TopicSlot { name, partitions });
    }
    drop(body);

    // Pass 2: own the frame again and cut it into the partitions' records.
    let frame_len = req.frame.len();
    let mut frame = match req.frame.try_into_mut() {
        Ok(m) => m,
        Err(shared) => {
            // Never expected (nothing else holds the frame); stay correct, and count it.
            shard
                .counters()
                .produce_bytes_copied
                .add(shared.len() as u64);
            BytesMut::from(&shared[..])
        }
    };
    debug_assert_eq!(frame.len(), frame_len);
    plans.sort_by_key(|p| p.start);
    let mut cursor = 0;
    for p in plans {
        if p.start < cursor {
            continue; // overlapping slices cannot come from a well-formed decode
        }
        frame.advance(p.start - cursor);
        let records = frame.split_to(p.len);
        cursor = p.start + p.len;
        let name = topics[p.topic].name.clone();
        let index = topics[p.topic].partitions[p.part].index;
        let slot = &mut topics[p.topic].partitions[p.part].slot;
        if let Some(size) = oversized_batch(&records, p.max_message_bytes) {
            *slot = Slot::Done((
                code::MESSAGE_TOO_LARGE,
                format!(
                    "a batch of {size} bytes is larger than max.message.bytes={}",
                    p.max_message_bytes
                ),
            ));
            continue;
        }
        let owner = shard.owner(&name, index);
        let bytes = records.len() as u64;
        let rx = shard
            .send(owner, |reply| ShardMsg::Produce {
                key: (name, index),
                records,
                acks,
                timeout_ms,
                txn: txn.clone(),
                reply,
            })
            .await;
        *slot = Slot::Pending(rx, bytes);
    }

    glommio::spawn_local(gather(shard.clone(), topics, acks, version, correlation_id)).detach()
}

fn has_zstd_batch(records: &[u8]) -> bool {
    runnel_record::Batches::new(records)
        .map_while(Result::ok)
        .any(|(_, h)| matches!(h.compression(), Ok(runnel_record::Compression::Zstd)))
}

/// The size of the first batch larger than `max`, if any (Kafka checks each batch).
/// Framing errors are left to the log's validation, which reports them properly.
fn oversized_batch(records: &[u8], max: u32) -> Option<u64> {
    runnel_record::Batches::new(records)
        .map_while(Result::ok)
        .map(|(_, h)| h.total_len() as u64)
        .find(|&len| len > u64::from(max))
}

async fn gather(
    shard: Rc<Shard>,
    topics: Vec<TopicSlot>,
    acks: i16,
    version: i16,
    correlation_id: i32,
) -> Outcome {
    let mut responses = Vec::with_capacity(topics.len());
    let mut failed = None;
    let snapshot = shard.snapshot();
    let mut leaders = std::collections::BTreeSet::new();
    for t in topics {
        let mut partition_responses = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut bytes = 0;
            let result = match p.slot {
                Slot::Done(e) => Err(e.into()),
                Slot::Pending(rx, b) => {
                    bytes = b;
                    rx.await.unwrap_or_else(|_| {
                        Err((
                            code::NOT_LEADER_OR_FOLLOWER,
                            "the partition's shard is shutting down".to_string(),
                        )
                            .into())
                    })
                }
            };
            let mut r = PartitionProduceResponse::default().with_index(p.index);
            match result {
                Ok(info) => {
                    shard.counters().produce_records.add(info.record_count);
                    shard.counters().produce_bytes.add(bytes);
                    r = r
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time_ms);
                    if version >= 5 {
                        r = r.with_log_start_offset(info.log_start_offset);
                    }
                }
                Err(ProduceError {
                    error: (c, msg),
                    records,
                }) => {
                    if c == code::KAFKA_STORAGE_ERROR || c == code::CORRUPT_MESSAGE {
                        tracing::warn!(topic = %t.name, partition = p.index, "produce failed: {msg}");
                    }
                    failed.get_or_insert_with(|| msg.clone());
                    r = r
                        .with_error_code(c)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1);
                    // Kafka sends no message with the producer-state errors (fenced, not in
                    // the transaction, unknown producer id): the code says it all.
                    let silent = matches!(
                        c,
                        code::INVALID_PRODUCER_EPOCH
                            | code::INVALID_TXN_STATE
                            | code::INVALID_PRODUCER_ID_MAPPING
                            | code::TRANSACTION_ABORTABLE
                    );
                    if version >= 8 && !silent {
                        r = r.with_error_message(Some(sb(&msg)));
                    }
                    // KIP-467: the records refused one by one (the rest of the batch is
                    // refused with them).
                    if version >= 8 && !records.is_empty() {
                        r = r.with_record_errors(
                            records
                                .iter()
                                .map(|(i, why)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(*i)
                                        .with_batch_index_error_message(Some(sb(why)))
                                })
                                .collect(),
                        );
                    }
                    // KIP-951: name the current leader, so the client need not ask.
                    if version >= 10 && c == code::NOT_LEADER_OR_FOLLOWER {
                        if let Some(pm) = snapshot.partition(&t.name, p.index) {
                            r = r.with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(BrokerId(pm.leader))
                                    .with_leader_epoch(pm.leader_epoch),
                            );
                            if pm.leader >= 0 {
                                leaders.insert(pm.leader);
                            }
                        }
                    }
                }
            }
            partition_responses.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&t.name))
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        // No answer is expected; Kafka closes the connection on an error so the client
        // notices (it refreshes metadata and reconnects).
        return match failed {
            Some(msg) => Outcome::Close(format!("acks=0 produce failed: {msg}")),
            None => Outcome::NoReply,
        };
    }
    let node_endpoints = leaders
        .into_iter()
        .filter_map(|id| snapshot.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(sb(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(sb))
        })
        .collect();
    encode_or_close(
        correlation_id,
        version,
        &ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
    )
}
