//! The leader epoch cache: for each leader epoch of a partition, the first offset written in
//! it, in Kafka's `leader-epoch-checkpoint` file. Followers ask the leader where their
//! latest epoch ended (OffsetForLeaderEpoch) and truncate there, so replicas never diverge
//! (KIP-101, KIP-279).
//!
//! ```text
//! 0            version
//! 2            entries
//! 0 0          epoch start-offset
//! 3 1200
//! ```

/// The file's name in the partition directory (Kafka's).
pub const FILE: &str = "leader-epoch-checkpoint";

/// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// (epoch, start offset) pairs, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `offset`, if it is newer than every epoch known.
    /// Returns whether the cache changed (and so the file must be written).
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|e| e >= epoch) {
            return false;
        }
        // An epoch with no records ends where the next one starts: a newer epoch starting at
        // the same offset replaces it (Kafka keeps start offsets increasing too).
        while self.entries.last().is_some_and(|&(_, o)| o >= offset) {
            self.entries.pop();
        }
        self.entries.push((epoch, offset));
        true
    }

    /// Drops the epochs that start at or after `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < end);
        before != self.entries.len()
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` this log knows, and
    /// where it ended (the start of the next epoch, or the log end offset for the latest).
    /// (UNDEFINED, UNDEFINED_OFFSET) when `requested` is newer than every epoch here, or
    /// undefined.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested < 0 {
            return (UNDEFINED, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|&&(e, _)| e > requested) else {
            // Newer than everything here (a leader always holds the newest epoch), or the
            // cache is empty.
            return (UNDEFINED, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= requested) {
            Some(&(floor, _)) => (floor, higher.1),
            None => (requested, higher.1),
        }
    }

    pub fn encode(&self) -> String {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        s
    }

    pub fn decode(text: &str) -> Result<EpochCache, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("0") {
            return Err("unknown version".into());
        }
        let n: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("bad entry count")?;
        let mut cache = EpochCache::default();
        for _ in 0..n {
            let line = lines.next().ok_or("missing entry")?;
            let mut w = line.split_whitespace();
            let epoch: i32 = w.next().and_then(|x| x.parse().ok()).ok_or("bad epoch")?;
            let offset: i64 = w.next().and_then(|x| x.parse().ok()).ok_or("bad offset")?;
            if !cache.assign(epoch, offset) {
                return Err(format!("entry {line:?} is not newer than the one before"));
            }
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(e: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(ep, o) in e {
            assert!(c.assign(ep, o));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(0, 0), (2, 100), (5, 250)]);
        assert_eq!(c.end_offset_for(5, 300), (5, 300));
        assert_eq!(c.end_offset_for(2, 300), (2, 250));
        assert_eq!(c.end_offset_for(3, 300), (2, 250)); // unknown epoch: the one below it
        assert_eq!(c.end_offset_for(0, 300), (0, 100));
        assert_eq!(c.end_offset_for(7, 300), (UNDEFINED, UNDEFINED_OFFSET)); // newer than all
        assert_eq!(c.end_offset_for(-1, 300), (UNDEFINED, UNDEFINED_OFFSET));
        let later = cache(&[(3, 10)]);
        assert_eq!(later.end_offset_for(1, 20), (1, 10)); // older than all: before the first
        assert_eq!(
            EpochCache::default().end_offset_for(1, 0),
            (UNDEFINED, UNDEFINED_OFFSET)
        );
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_increasing() {
        let mut c = cache(&[(0, 0), (1, 50)]);
        assert!(!c.assign(1, 60));
        assert!(!c.assign(0, 70));
        assert!(c.assign(4, 50)); // epoch 1 never wrote anything: replaced
        assert_eq!(c.entries(), &[(0, 0), (4, 50)]);
        assert!(c.truncate_from_end(50));
        assert_eq!(c.entries(), &[(0, 0)]);
    }

    #[test]
    fn file_round_trips_and_refuses_damage() {
        let c = cache(&[(0, 0), (3, 1200)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n3 1200\n");
        assert_eq!(EpochCache::decode(&c.encode()).unwrap(), c);
        assert!(EpochCache::decode("1\n0\n").is_err());
        assert!(EpochCache::decode("0\n2\n0 0\n").is_err());
        assert!(EpochCache::decode("0\n2\n3 10\n2 20\n").is_err());
    }
}
