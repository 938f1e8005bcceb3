//! Producer ids for idempotent producers (InitProducerId), unique across restarts.
//!
//! Shard 0 hands them out from blocks: before the first id of a block is given, the block's
//! end is persisted in `<data-dir>/producer-id-block`; at start the next id is that end, so
//! an id handed out before a crash is never handed out again (at most a block is skipped).

use crate::shard::{PartitionError, Shard};
use runnel_protocol::code;
use std::path::{Path, PathBuf};

pub const FILE: &str = "producer-id-block";
const BLOCK: i64 = 1000;

#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

impl ProducerIds {
    pub fn load(data_dir: &Path) -> Result<ProducerIds, String> {
        let path = data_dir.join(FILE);
        let end = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(ProducerIds {
            path,
            next: end,
            block_end: end,
        })
    }

    /// Whether `id` was handed out by this broker (in this or an earlier run).
    pub fn issued(&self, id: i64) -> bool {
        (0..self.next).contains(&id)
    }

    /// The next id; persists a new block first when the current one is used up.
    pub async fn allocate(&mut self) -> Result<i64, String> {
        if self.next >= self.block_end {
            let end = self.next + BLOCK;
            runnel_log::checkpoint::write_atomic(&self.path, format!("{end}\n").into())
                .await
                .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
            self.block_end = end;
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
    // Taken out for the await (the allocator persists a block) and put back after.
    let mut ids = shard.producer_ids.borrow_mut().take().ok_or((
        code::NOT_COORDINATOR,
        "producer ids are allocated by shard 0".to_string(),
    ))?;
    let result = async {
        if producer_id >= 0 {
            if !ids.issued(producer_id) {
                return Err((
                    code::INVALID_PRODUCER_ID_MAPPING,
                    format!("producer id {producer_id} was not issued by this broker"),
                ));
            }
            if (0..i16::MAX - 1).contains(&epoch) {
                return Ok((producer_id, epoch + 1));
            }
        }
        ids.allocate()
            .await
            .map(|id| (id, 0))
            .map_err(|e| (code::KAFKA_STORAGE_ERROR, e))
    }
    .await;
    *shard.producer_ids.borrow_mut() = Some(ids);
    result
}
