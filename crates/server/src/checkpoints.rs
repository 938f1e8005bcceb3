//! The data dir's checkpoints (recovery points, log start offsets, high watermarks), gathered from every
//! shard by one of them and written atomically.

use crate::shard::{Shard, ShardMsg};
use runnel_log::checkpoint::{self, Offsets};
use std::rc::Rc;

/// Gathers every shard's recovery points and log start offsets and writes both checkpoint
/// files (shard 0; serialised, so an older gather never overwrites a newer one). False when
/// a shard is gone.
pub async fn write(shard: &Rc<Shard>) -> bool {
    let _permit = shard.checkpoint_lock.acquire_permit(1).await;
    let mut recovery_points = Offsets::new();
    let mut log_start_offsets = Offsets::new();
    let mut high_watermarks = Offsets::new();
    let mut cleaner_offsets = Offsets::new();
    for i in 0..shard.shared.nr_shards {
        let Some(points) = shard.call(i, |reply| ShardMsg::Checkpoint { reply }).await else {
            return false;
        };
        for ((topic, partition), rp, lso, hw, cleaned) in points {
            if let Some(c) = cleaned {
                cleaner_offsets.insert((topic.to_string(), partition), c);
            }
            recovery_points.insert((topic.to_string(), partition), rp);
            log_start_offsets.insert((topic.to_string(), partition), lso);
            high_watermarks.insert((topic.to_string(), partition), hw);
        }
    }
    let dir = &shard.shared.data_dir;
    for (name, offsets) in [
        (checkpoint::RECOVERY_POINT_CHECKPOINT, &recovery_points),
        (checkpoint::LOG_START_OFFSET_CHECKPOINT, &log_start_offsets),
        (checkpoint::REPLICATION_OFFSET_CHECKPOINT, &high_watermarks),
        (checkpoint::CLEANER_OFFSET_CHECKPOINT, &cleaner_offsets),
    ] {
        if let Err(e) = checkpoint::write(&dir.join(name), offsets).await {
            tracing::error!("cannot write {name}: {e}");
        }
    }
    true
}
