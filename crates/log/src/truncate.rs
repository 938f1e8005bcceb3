//! Truncating a follower's log to where its leader's log agrees with it (KIP-101): the
//! batches from the one holding the target offset on are cut, and the log is opened again
//! through recovery, which rebuilds the indexes, the producer state and the leader epoch
//! cache of what is left. Rare (a broker becoming a follower with a divergent tail), so it
//! reuses the recovery path rather than undoing each in-memory structure.

use crate::log::{delete_segment_files, Log, OpenOptions};
use crate::LogError;
use std::rc::Rc;

impl Log {
    /// Cuts every batch at or after the one holding `offset` and returns the log opened
    /// again (this handle is closed). The new log end offset is the first cut batch's base
    /// offset (`offset` itself when it is a batch boundary, as leaders' epoch end offsets
    /// are). A target at or past the log end changes nothing.
    pub async fn truncate_to(&self, offset: i64) -> Result<Log, LogError> {
        if offset >= self.log_end_offset() {
            return Ok(self.clone());
        }
        let inner = &self.inner;
        let (dir, topic, partition) = (inner.dir.clone(), inner.topic.clone(), inner.partition);
        let (lso, rp, hw) = (
            self.log_start_offset(),
            self.recovery_point(),
            self.high_watermark(),
        );
        // Not while the cleaner swaps segments in.
        let _layout = inner.layout.acquire_permit(1).await;
        // Written and synced as it stands first: what survives the cut must be durable
        // before the recovery point is trusted again.
        self.close().await?;
        let segments: Vec<Rc<crate::segment::Segment>> = inner.segments.borrow().clone();
        let keep = segments
            .iter()
            .rposition(|s| s.base_offset <= offset)
            .unwrap_or(0);
        let seg = &segments[keep];
        let from = seg
            .index
            .borrow()
            .lookup(seg.relative(offset.max(seg.base_offset)))
            .map_or(0, |e| u64::from(e.position));
        let mut cut = seg.size.get();
        let mut new_end = seg.next_offset.get();
        seg.for_each_header(from, seg.size.get(), |pos, h| {
            if h.last_offset() >= offset {
                cut = pos;
                new_end = h.base_offset;
                false
            } else {
                true
            }
        })
        .await?;
        let dir_fd = inner.open_dir()?;
        let ring = runnel_runtime::ring();
        for later in &segments[keep + 1..] {
            delete_segment_files(&dir_fd, later).await?;
        }
        ring.ftruncate(&seg.file, cut)
            .await
            .map_err(|e| LogError::io("truncate segment", &seg.log_path, e))?;
        ring.fdatasync(&seg.file)
            .await
            .map_err(|e| LogError::io("fdatasync", &seg.log_path, e))?;
        ring.fdatasync(&dir_fd)
            .await
            .map_err(|e| LogError::io("fsync directory", &dir, e))?;
        tracing::warn!(
            topic = %topic, partition,
            "truncated the log to offset {new_end} (asked for {offset}) to agree with the leader"
        );
        self.reopen(OpenOptions {
            recovery_point: Some(rp.min(new_end).min(seg.base_offset)),
            log_start_offset: Some(lso),
            clean_shutdown: false,
            high_watermark: Some(hw.min(new_end)),
        })
        .await
    }

    /// Empties the log and starts it again at `offset` (a follower whose leader's log
    /// starts past this log's end: retention removed what it lacks). Returns the log opened
    /// again; this handle is closed.
    pub async fn reset_to(&self, offset: i64) -> Result<Log, LogError> {
        let inner = &self.inner;
        let (dir, topic, partition) = (inner.dir.clone(), inner.topic.clone(), inner.partition);
        let _layout = inner.layout.acquire_permit(1).await;
        self.close().await?;
        let segments: Vec<Rc<crate::segment::Segment>> = inner.segments.borrow().clone();
        let dir_fd = inner.open_dir()?;
        for seg in &segments {
            delete_segment_files(&dir_fd, seg).await?;
        }
        // The epochs and producers of the old log describe nothing that is left.
        let ring = runnel_runtime::ring();
        let _ = ring.unlink_at(&dir_fd, crate::epochs::FILE).await;
        let dir_fd_ref: &std::os::fd::OwnedFd = &dir_fd;
        for o in crate::log::list_snapshots(&dir, dir_fd_ref)? {
            let name = crate::file_name(o, crate::producer_state::SNAPSHOT_SUFFIX);
            let _ = ring.unlink_at(&dir_fd, &name).await;
        }
        runnel_runtime::ring()
            .fdatasync(&dir_fd)
            .await
            .map_err(|e| LogError::io("fsync directory", &dir, e))?;
        tracing::warn!(topic = %topic, partition, "emptied the log to start over at offset {offset}");
        self.reopen(OpenOptions {
            recovery_point: Some(offset),
            log_start_offset: Some(offset),
            clean_shutdown: false,
            high_watermark: Some(offset),
        })
        .await
    }

    /// Opens this (closed) log's directory again, with its topic, partition and config.
    async fn reopen(&self, opts: OpenOptions) -> Result<Log, LogError> {
        let inner = &self.inner;
        Log::open(
            &inner.dir,
            &inner.topic,
            inner.partition,
            self.config(),
            opts,
        )
        .await
    }
}
