//! Producer ids for idempotent producers (InitProducerId), unique across restarts.
//!
//! Shard 0 hands them out from blocks: before the first id of a block is given, the block's
//! end is persisted in `<data-dir>/producer-id-block`; at start the next id is that end, so
//! an id handed out before a crash is never handed out again (at most a block is skipped).

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
