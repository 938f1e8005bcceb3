//! Sparse offset and time indexes in Kafka's entry formats, held in memory and written to the
//! segment's `.index` / `.timeindex` files when the segment is rolled or the log is closed.
//!
//! Offset index entry (8 bytes, big-endian): relative offset u32 of a batch's last record,
//! position u32 of that batch in the `.log` file. Time index entry (12 bytes): timestamp i64
//! (the largest seen so far in the segment), relative offset u32 of the record that has it.
//! Lookups are binary searches: O(log n) with no I/O.

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// Adds an entry. Offsets and positions only move forward; an entry that would not (which
    /// the writer never produces) is dropped rather than allowed to break the binary searches:
    /// the index is sparse, so a missing entry costs a longer header scan, never a wrong read.
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(last) = self.entries.last() {
            if relative_offset <= last.relative_offset || position <= last.position {
                debug_assert!(
                    false,
                    "offset index must grow: ({relative_offset}, {position}) after {last:?}"
                );
                tracing::error!(
                    "offset index entry ({relative_offset}, {position}) does not follow \
                     {last:?}; not indexed"
                );
                return;
            }
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
    }

    /// The entry with the largest relative offset <= `relative_target`: the batch holding the
    /// target starts at or after its position. None: start at position 0.
    pub fn lookup(&self, relative_target: u32) -> Option<OffsetEntry> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_target);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// The entry with the largest position <= `position`: a batch boundary at or before it.
    pub fn lookup_position(&self, position: u32) -> Option<OffsetEntry> {
        let n = self.entries.partition_point(|e| e.position <= position);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries at or past `position` (recovery truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let n = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(n);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file and checks it as Kafka's sanityCheck does: whole entries,
    /// strictly increasing offsets and positions, every position inside the segment.
    pub fn from_bytes(bytes: &[u8], segment_size: u64) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return Err(format!(
                "offset index length {} is not a multiple of {OFFSET_ENTRY_BYTES}",
                bytes.len()
            ));
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let relative_offset = u32::from_be_bytes(chunk[0..4].try_into().expect("4"));
            let position = u32::from_be_bytes(chunk[4..8].try_into().expect("4"));
            if let Some(last) = index.entries.last() {
                if relative_offset <= last.relative_offset || position <= last.position {
                    return Err(format!(
                        "offset index entry ({relative_offset}, {position}) does not follow {last:?}"
                    ));
                }
            }
            if u64::from(position) >= segment_size {
                return Err(format!(
                    "offset index position {position} is past the segment's {segment_size} bytes"
                ));
            }
            index.entries.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        Ok(index)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Adds an entry only when the timestamp grew (Kafka's maybeAppend): the index maps
    /// ever-larger timestamps to the offsets where they first appear.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(last) if timestamp <= last.timestamp => {}
            Some(last) if relative_offset < last.relative_offset => {}
            _ => self.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            }),
        }
    }

    /// The last entry whose timestamp is below `target`. Every record up to its offset has a
    /// timestamp below the target (the entry holds the largest seen so far), so the first
    /// record at or after `target` lies after it. None: scan from the segment start.
    pub fn lookup(&self, target: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < target);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(n);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8], max_relative_offset: u32) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(format!(
                "time index length {} is not a multiple of {TIME_ENTRY_BYTES}",
                bytes.len()
            ));
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().expect("8"));
            let relative_offset = u32::from_be_bytes(chunk[8..12].try_into().expect("4"));
            if let Some(last) = index.entries.last() {
                if timestamp <= last.timestamp || relative_offset < last.relative_offset {
                    return Err(format!(
                        "time index entry ({timestamp}, {relative_offset}) does not follow {last:?}"
                    ));
                }
            }
            if relative_offset > max_relative_offset {
                return Err(format!(
                    "time index offset {relative_offset} is past the segment's last offset"
                ));
            }
            index.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_largest_entry_not_after_target() {
        let mut idx = OffsetIndex::default();
        idx.append(9, 4100);
        idx.append(19, 8300);
        assert_eq!(idx.lookup(5), None);
        assert_eq!(idx.lookup(9).unwrap().position, 4100);
        assert_eq!(idx.lookup(18).unwrap().position, 4100);
        assert_eq!(idx.lookup(1000).unwrap().position, 8300);
        assert_eq!(idx.lookup_position(8299).unwrap().position, 4100);
    }

    #[test]
    fn offset_index_round_trips_and_rejects_damage() {
        let mut idx = OffsetIndex::default();
        idx.append(3, 100);
        idx.append(7, 5000);
        let bytes = idx.to_bytes();
        assert_eq!(OffsetIndex::from_bytes(&bytes, 6000).unwrap(), idx);
        assert!(OffsetIndex::from_bytes(&bytes[..7], 6000).is_err());
        assert!(
            OffsetIndex::from_bytes(&bytes, 5000).is_err(),
            "position past segment"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert!(OffsetIndex::from_bytes(&swapped, 6000).is_err());
    }

    #[test]
    fn time_index_keeps_only_growing_timestamps() {
        let mut t = TimeIndex::default();
        t.maybe_append(100, 0);
        t.maybe_append(90, 5);
        t.maybe_append(200, 10);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(150).unwrap().relative_offset, 0);
        assert_eq!(t.lookup(100), None);
        assert_eq!(t.lookup(201).unwrap().relative_offset, 10);
        let bytes = t.to_bytes();
        assert_eq!(TimeIndex::from_bytes(&bytes, 10).unwrap(), t);
        assert!(TimeIndex::from_bytes(&bytes, 9).is_err());
    }
}
