//! The log cleaner of one shard: compacts the shard's logs whose cleanup.policy has
//! `compact`, one pass at a time, the dirtiest log first (Kafka's LogCleanerManager picks
//! the same way: the highest cleanable ratio above min.cleanable.dirty.ratio, or any log
//! whose oldest dirty record is older than max.compaction.lag.ms).
//!
//! Each shard cleans its own partitions on its own executor, so the cleaner shares the
//! shard's core with its appends and fetches: a pass reads and writes through the shard's
//! io_uring and yields after every chunk (1 MiB), so it delays the shard's other tasks by
//! at most the time to filter one chunk, and `--log-cleaner-io-max-bytes-per-second` caps
//! its I/O. Its key map takes at most `--log-cleaner-dedupe-buffer-size` divided among the
//! shards, allocated for a pass and freed after it.

use crate::shard::Shard;
use runnel_log::clean::{CleanContext, OffsetMap, SwapStep, Throttle};
use runnel_log::Log;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Per partition of this shard: its cleanable dirty ratio as of the cleaner's last look.
pub type Ratios = BTreeMap<(String, i32), f64>;

pub async fn run(shard: Rc<Shard>) {
    let cfg = shard.config().clone();
    let backoff = Duration::from_millis(cfg.log_cleaner_backoff_ms);
    let buffer = (cfg.log_cleaner_dedupe_buffer_size / shard.shared.nr_shards as u64) as usize;
    let rate = cfg
        .log_cleaner_io_max_bytes_per_second
        .map_or(f64::INFINITY, |r| r as f64);
    loop {
        match pass(&shard, buffer, rate).await {
            Ok(true) => glommio::yield_if_needed().await,
            Ok(false) => glommio::timer::sleep(backoff).await,
            Err(e) => {
                tracing::error!("log cleaner: {e}");
                glommio::timer::sleep(backoff).await;
            }
        }
    }
}

/// Looks at every compacted log of the shard and cleans the dirtiest one that needs it.
/// True when it cleaned one (there may be more to do at once).
async fn pass(shard: &Rc<Shard>, buffer: usize, rate: f64) -> Result<bool, String> {
    let now = now_ms();
    let logs: Vec<Log> = shard
        .partitions
        .borrow()
        .values()
        .filter(|l| l.config().compact && l.offline_reason().is_none())
        .cloned()
        .collect();
    let counters = shard.counters();
    let mut ratios = Ratios::new();
    let mut best: Option<(f64, Log, runnel_log::clean::Cleanable)> = None;
    let mut max_delay = 0i64;
    for log in logs {
        let Ok(Some(c)) = log.cleanable(now).await else {
            ratios.insert((log.topic().to_string(), log.partition()), 0.0);
            continue;
        };
        let config = log.config();
        let ratio = c.dirty_ratio();
        ratios.insert((log.topic().to_string(), log.partition()), ratio);
        let overdue = c
            .dirty_since_ms
            .map(|t| {
                now.saturating_sub(t)
                    .saturating_sub(config.max_compaction_lag_ms.min(i64::MAX as u64) as i64)
            })
            .filter(|&d| d > 0 && c.dirty_bytes > 0);
        if let Some(d) = overdue {
            max_delay = max_delay.max(d);
        }
        let due = ratio > config.min_cleanable_dirty_ratio || overdue.is_some() || c.horizon_due;
        // Overdue logs first, then the dirtiest.
        let rank = if overdue.is_some() {
            2.0 + ratio
        } else {
            ratio
        };
        if due && best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
            best = Some((rank, log, c));
        }
    }
    let max_ratio = ratios.values().copied().fold(0.0, f64::max);
    counters
        .cleaner_max_dirty_percent
        .set((max_ratio * 100.0).round() as u64);
    counters
        .cleaner_max_compaction_delay_ms
        .set(max_delay.max(0) as u64);
    if let Ok(mut r) = shard.shared.cleaner_ratios[shard.id].lock() {
        *r = ratios;
    }
    let Some((_, log, range)) = best else {
        return Ok(false);
    };
    let crash_after = match shard.config().test_cleaner_crash_after.as_deref() {
        Some("cleaned") => Some(SwapStep::Cleaned),
        Some("swap") => Some(SwapStep::Swap),
        Some("old-removed") => Some(SwapStep::OldRemoved),
        _ => None,
    };
    let started = Instant::now();
    let mut map = OffsetMap::new(buffer, (range.end - range.first_dirty).max(0) as u64);
    let mut throttle = Throttle::new(rate);
    let mut ctx = CleanContext {
        now_ms: now,
        map: &mut map,
        throttle: &mut throttle,
        crash_after,
    };
    let result = log.clean(range, &mut ctx).await;
    if crash_after.is_some() && result.is_ok() {
        tracing::warn!("--test-cleaner-crash-after: killing this broker mid-swap");
        // SAFETY: kill(2) of this very process; nothing is touched after it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    let took = started.elapsed();
    counters.cleaner_passes.incr();
    counters.cleaner_time_ms.add(took.as_millis() as u64);
    let fill = 100 * map.len() as u64
        / (map.size_bytes() / runnel_log::clean::MAP_ENTRY_BYTES).max(1) as u64;
    counters.cleaner_buffer_utilization_percent.set(fill);
    match result {
        Ok(stats) => {
            counters.cleaner_bytes_read.add(stats.bytes_read);
            counters.cleaner_bytes_written.add(stats.bytes_written);
            counters.cleaner_records_removed.add(stats.records_removed);
            tracing::info!(
                topic = log.topic(),
                partition = log.partition(),
                dirty_ratio = format!("{:.2}", range.dirty_ratio()),
                read = stats.bytes_read,
                written = stats.bytes_written,
                removed = stats.records_removed,
                segments = format!("{} -> {}", stats.segments_before, stats.segments_after),
                ms = took.as_millis() as u64,
                "cleaned offsets {}..{}",
                range.first_dirty,
                stats.end
            );
            Ok(true)
        }
        Err(e) => Err(format!(
            "cleaning {}-{} failed: {e}",
            log.topic(),
            log.partition()
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
