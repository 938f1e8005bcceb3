//! Producer ids for idempotent producers (InitProducerId), unique across the cluster and
//! across restarts.
//!
//! Shard 0 hands them out from blocks of 1000 the metadata quorum allocates (Kafka's
//! AllocateProducerIds): a block is a command in the metadata log, so no two brokers, and
//! no two runs of one broker, ever get the same ids (a restart skips the rest of its
//! block).

use crate::shard::{PartitionError, Shard};
use runnel_metadata::cluster::{Command, Outcome};
use runnel_protocol::code;
use std::time::Duration;

/// The pre-quorum file of a single broker: the end of its last block, imported once.
pub const FILE: &str = "producer-id-block";
const BLOCK: i64 = 1000;

#[derive(Debug, Default)]
pub struct ProducerIds {
    next: i64,
    block_end: i64,
}

impl ProducerIds {
    /// The next id; asks the quorum for a block first when the current one is used up.
    pub async fn allocate(&mut self, shard: &Shard) -> Result<i64, PartitionError> {
        if self.next >= self.block_end {
            let answer = shard
                .shared
                .controller
                .propose(
                    vec![Command::AllocateProducerIds { count: BLOCK }],
                    Duration::from_secs(30),
                )
                .await;
            match answer {
                Ok(Ok(r)) => match r.into_iter().next() {
                    Some(Ok(Outcome::ProducerIds(first))) => {
                        self.next = first;
                        self.block_end = first.saturating_add(BLOCK);
                    }
                    other => {
                        return Err((
                            code::UNKNOWN_SERVER_ERROR,
                            format!("no producer id block: {other:?}"),
                        ))
                    }
                },
                // Retriable for every client (Kafka answers InitProducerId so while its
                // producer id manager waits for a block).
                Ok(Err((_, why))) => return Err((code::COORDINATOR_LOAD_IN_PROGRESS, why)),
                Err(_) => {
                    return Err((
                        code::COORDINATOR_LOAD_IN_PROGRESS,
                        "the broker is stopping".into(),
                    ))
                }
            }
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

/// Shard 0's side of InitProducerId. A new producer gets a new id with epoch 0. A producer
/// that names its id and epoch (v3+, KIP-360) gets the next epoch of the same id, or a
/// new id when the epoch would overflow.
pub async fn init(
    shard: &Shard,
    producer_id: i64,
    epoch: i16,
) -> Result<(i64, i16), PartitionError> {
    let _permit = shard.producer_ids_lock.acquire_permit(1).await;
    // Taken out for the await (a block is asked for) and put back after.
    let mut ids = shard.producer_ids.borrow_mut().take().ok_or((
        code::NOT_COORDINATOR,
        "producer ids are allocated by shard 0".to_string(),
    ))?;
    let result = async {
        if producer_id >= 0 {
            if producer_id >= shard.snapshot().next_producer_id {
                return Err((
                    code::INVALID_PRODUCER_ID_MAPPING,
                    format!("producer id {producer_id} was not issued by this cluster"),
                ));
            }
            if (0..i16::MAX - 1).contains(&epoch) {
                return Ok((producer_id, epoch + 1));
            }
        }
        ids.allocate(shard).await.map(|id| (id, 0))
    }
    .await;
    *shard.producer_ids.borrow_mut() = Some(ids);
    result
}
