//! The owner side of the shard: the work a [`ShardMsg`] asks of this shard (from another
//! shard over the mesh, or from this one), each kind handed to the module that owns it.

use crate::shard::{log_error, PartitionError, Shard, ShardMsg};
use runnel_log::{Log, TimestampOffset, Upto};
use runnel_protocol::code;
use std::rc::Rc;

/// Does the work of one message on this (the owner) shard: each kind of message goes to the
/// module that owns that work.
pub async fn handle(shard: Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Produce {
            key,
            records,
            acks,
            timeout_ms,
            txn,
            reply,
        } => {
            let r = crate::replication::produce(&shard, &key, records, acks, timeout_ms, txn).await;
            let _ = reply.send(r);
        }
        ShardMsg::Read {
            key,
            offset,
            max_bytes,
            min_one_batch,
            replica,
            committed,
            reply,
        } => {
            let r = match shard.log(&key) {
                Ok(log) => match replica {
                    None if committed => {
                        let plan = log
                            .read_upto(offset, max_bytes, min_one_batch, Upto::Stable)
                            .await
                            .map_err(log_error);
                        plan.map(|mut p| {
                            if p.len > 0 {
                                p.aborted = log.aborted_txns(offset, p.last_stable_offset);
                            }
                            p
                        })
                    }
                    None => log
                        .read(offset, max_bytes, min_one_batch)
                        .await
                        .map_err(log_error),
                    Some((r, epoch)) => {
                        match crate::replication::check_follower(&shard, &key, r, epoch) {
                            Ok(()) => {
                                let plan = log
                                    .read_upto(offset, max_bytes, min_one_batch, Upto::LogEnd)
                                    .await
                                    .map_err(log_error);
                                if plan.is_ok() {
                                    crate::replication::on_follower_fetch(
                                        &shard, &key, r, offset, &log,
                                    );
                                }
                                plan
                            }
                            Err(e) => Err(e),
                        }
                    }
                },
                Err(e) => Err(e),
            };
            let _ = reply.send(r);
        }
        ShardMsg::EpochEnd { key, epoch, reply } => {
            let r = shard.log(&key).map(|log| log.end_offset_for_epoch(epoch));
            let _ = reply.send(r);
        }
        ShardMsg::WaitForData {
            key,
            offset,
            upto,
            mut reply,
        } => {
            let Ok(log) = shard.log(&key) else {
                let _ = reply.send(());
                return;
            };
            // Closing the log (shutdown, topic deletion) also ends the wait.
            let wait = log.wait_for(offset, upto);
            let cancelled = reply.cancellation();
            futures_lite::future::or(wait, cancelled).await;
            let _ = reply.send(());
        }
        ShardMsg::ListOffset {
            key,
            timestamp,
            committed,
            reply,
        } => {
            let r = match shard.log(&key) {
                Ok(log) => list_offset(&log, timestamp, committed).await,
                Err(e) => Err(e),
            };
            let _ = reply.send(r);
        }
        ShardMsg::DeleteRecords { key, offset, reply } => {
            let r = match shard.log(&key) {
                Ok(log) => log.delete_records(offset).await.map_err(log_error),
                Err(e) => Err(e),
            };
            let _ = reply.send(r);
        }
        ShardMsg::ReadFailed {
            key,
            file,
            errno,
            reply,
        } => {
            if let Ok(log) = shard.log(&key) {
                log.read_failed(&file, std::io::Error::from_raw_os_error(errno));
            }
            let _ = reply.send(());
        }
        ShardMsg::Offsets { key, reply } => {
            let r = shard
                .log(&key)
                .map(|log| (log.log_start_offset(), log.high_watermark()));
            let _ = reply.send(r);
        }
        ShardMsg::Producers { key, reply } => {
            let r = shard
                .check_leader(&key.0, key.1, -1)
                .map_err(|c| {
                    (
                        c,
                        format!(
                            "broker {} does not lead {}-{}",
                            shard.node_id(),
                            key.0,
                            key.1
                        ),
                    )
                })
                .and_then(|()| shard.log(&key))
                .map(|log| log.active_producers());
            let _ = reply.send(r);
        }
        ShardMsg::LogDirs { reply } => {
            let parts = shard
                .partitions
                .borrow()
                .iter()
                .map(|(k, log)| {
                    let lag = (log.high_watermark() - log.log_end_offset()).max(0);
                    (k.clone(), log.size_bytes(), lag)
                })
                .collect();
            let _ = reply.send(parts);
        }
        ShardMsg::Checkpoint { reply } => {
            let points = shard
                .partitions
                .borrow()
                .iter()
                .map(|(k, log)| {
                    (
                        k.clone(),
                        log.recovery_point(),
                        log.log_start_offset(),
                        log.high_watermark(),
                        log.config().compact.then(|| log.cleaner_checkpoint()),
                    )
                })
                .collect();
            let _ = reply.send(points);
        }
        ShardMsg::ApplyMetadata { snapshot, reply } => {
            let r = crate::partitions::apply_metadata(&shard, snapshot, false).await;
            let _ = reply.send(r);
        }
        ShardMsg::InitProducerId {
            producer_id,
            epoch,
            reply,
        } => {
            let r = crate::producer_ids::init(&shard, producer_id, epoch).await;
            let _ = reply.send(r);
        }
        ShardMsg::Group { op, done } => {
            // Checked again here, with the coordinator shard's own snapshot: it takes a
            // leadership only once the partition's groups are loaded.
            if let Some(group) = op.group_id() {
                let (_, p) = crate::groups::coordinator_of(&shard, group);
                if shard
                    .check_leader(runnel_group::offsets::TOPIC, p, -1)
                    .is_err()
                {
                    runnel_group::reply_error(op, code::NOT_COORDINATOR);
                    let _ = done.send(());
                    return;
                }
            }
            crate::groups::run(&shard, op).await;
            let _ = done.send(());
        }
        // The coordinator checks it serves the id (its partition loaded and led here).
        ShardMsg::Txn(op) => crate::txns::run(&shard, op).await,
        ShardMsg::WriteMarker {
            key,
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            reply,
        } => {
            let r = crate::txns::write_marker(
                &shard,
                &key,
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
            )
            .await;
            let _ = reply.send(r);
        }
    }
}

async fn list_offset(
    log: &Log,
    timestamp: i64,
    committed: bool,
) -> Result<Option<TimestampOffset>, PartitionError> {
    const LATEST: i64 = -1;
    const EARLIEST: i64 = -2;
    const MAX_TIMESTAMP: i64 = -3;
    const EARLIEST_LOCAL: i64 = -4;
    const LATEST_TIERED: i64 = -5;
    let at = |offset| {
        Ok(Some(TimestampOffset {
            timestamp: -1,
            offset,
        }))
    };
    let fetchable = if committed {
        log.last_stable_offset()
    } else {
        log.high_watermark()
    };
    match timestamp {
        LATEST | LATEST_TIERED => at(fetchable),
        EARLIEST | EARLIEST_LOCAL => at(log.log_start_offset()),
        MAX_TIMESTAMP => log.max_timestamp_offset().map_err(log_error),
        t if t >= 0 => log
            .offset_for_timestamp(t)
            .await
            .map(|found| found.filter(|f| !committed || f.offset < fetchable))
            .map_err(log_error),
        t => Err((
            code::INVALID_REQUEST,
            format!("timestamp {t} is not a ListOffsets target"),
        )),
    }
}
