//! The metadata log on disk: `<data-dir>/__cluster_metadata-0/raft.log`, an append-only
//! file of frames, each `[u32 length][u32 crc32c][u8 kind][payload]` (big-endian):
//! kind 1 is a Raft entry (protobuf), kind 2 the hard state (term, vote, commit).
//!
//! Raft may replace the tail of the log (a new leader's entries win over uncommitted ones):
//! the replacing entries are appended, and replay lets an entry of index i drop every
//! entry at or after i read before it. The last hard state read wins. Every write is
//! fdatasynced before Raft learns it is persisted, so a frame torn by a crash was never
//! acknowledged to anyone: replay stops there and cuts the file.
//!
//! Blocking I/O, on the controller's own thread (never a shard's).

use protobuf::Message as _;
use raft::prelude::{Entry, HardState, Snapshot};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
pub const LOG_FILE: &str = "raft.log";
/// The voters this log was formed with; a restart with other voters is refused.
pub const QUORUM_FILE: &str = "quorum";
/// The latest snapshot: the state the entries up to its index built (one CRC'd frame of a
/// protobuf raft Snapshot whose data is `runnel_metadata::cluster::encode_state`).
pub const SNAPSHOT_FILE: &str = "snapshot";

pub struct DiskLog {
    file: File,
    path: PathBuf,
}

/// What replay found.
pub struct Replayed {
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
}

impl DiskLog {
    pub fn open(dir: &Path) -> Result<(DiskLog, Replayed), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut replayed = Replayed {
            entries: Vec::new(),
            hard_state: HardState::default(),
        };
        let mut pos = 0;
        while let Some((kind, payload, next)) = frame_at(&bytes, pos) {
            match kind {
                ENTRY => {
                    let e = Entry::parse_from_bytes(payload)
                        .map_err(|e| format!("{}: bad entry at byte {pos}: {e}", path.display()))?;
                    let first = replayed.entries.first().map_or(e.index, |f| f.index);
                    if e.index < first || e.index > first + replayed.entries.len() as u64 {
                        return Err(format!(
                            "{}: entry {} at byte {pos} does not follow entries {first}..{}",
                            path.display(),
                            e.index,
                            first + replayed.entries.len() as u64
                        ));
                    }
                    replayed.entries.truncate((e.index - first) as usize);
                    replayed.entries.push(e);
                }
                HARD_STATE => {
                    replayed.hard_state = HardState::parse_from_bytes(payload).map_err(|e| {
                        format!("{}: bad hard state at byte {pos}: {e}", path.display())
                    })?;
                }
                k => {
                    return Err(format!(
                        "{}: unknown frame kind {k} at byte {pos}",
                        path.display()
                    ))
                }
            }
            pos = next;
        }
        if pos < bytes.len() {
            tracing::warn!(
                "{}: cutting {} bytes of a torn write at byte {pos}",
                path.display(),
                bytes.len() - pos
            );
            file.set_len(pos as u64)
                .and_then(|_| file.sync_data())
                .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
        }
        Ok((DiskLog { file, path }, replayed))
    }

    /// Appends entries and/or the hard state and makes them durable.
    pub fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), String> {
        let buf = frames(entries, hard_state)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Replaces the log with `entries` and `hard_state` (after a snapshot made the earlier
    /// entries unnecessary): written aside, synced, renamed over.
    pub fn rewrite(&mut self, entries: &[Entry], hard_state: &HardState) -> Result<(), String> {
        write_atomically(&self.path, &frames(entries, Some(hard_state))?)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        Ok(())
    }
}

/// The frames of `entries`, then of `hard_state`.
fn frames(entries: &[Entry], hard_state: Option<&HardState>) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    for e in entries {
        push_frame(
            &mut buf,
            ENTRY,
            &e.write_to_bytes().map_err(|e| e.to_string())?,
        );
    }
    if let Some(hs) = hard_state {
        push_frame(
            &mut buf,
            HARD_STATE,
            &hs.write_to_bytes().map_err(|e| e.to_string())?,
        );
    }
    Ok(buf)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_data()
        })
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Persists `snap` as the latest snapshot.
pub fn write_snapshot(dir: &Path, snap: &Snapshot) -> Result<(), String> {
    let mut buf = Vec::new();
    push_frame(
        &mut buf,
        ENTRY,
        &snap.write_to_bytes().map_err(|e| e.to_string())?,
    );
    write_atomically(&dir.join(SNAPSHOT_FILE), &buf)
}

/// The latest snapshot, if one was taken.
pub fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, String> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let (_, payload, _) =
        frame_at(&bytes, 0).ok_or_else(|| format!("{}: damaged", path.display()))?;
    Snapshot::parse_from_bytes(payload)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn push_frame(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(kind);
    body.extend_from_slice(payload);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    buf.extend_from_slice(&body);
}

/// The frame at `pos`: (kind, payload, next position), or None if it is incomplete or its
/// checksum fails.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let head = bytes.get(pos..pos + 8)?;
    let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(head[4..].try_into().ok()?);
    let body = bytes.get(pos + 8..pos + 8 + len)?;
    if len == 0 || crc32c::crc32c(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], pos + 8 + len))
}

/// Records the quorum's voters on first start; afterwards checks they are unchanged.
pub fn check_quorum(dir: &Path, voters: &str) -> Result<(), String> {
    let path = dir.join(QUORUM_FILE);
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim() == voters => Ok(()),
        Ok(stored) => Err(format!(
            "--controller-quorum-voters is {voters} but this data dir's metadata log was \
             formed by the quorum {} ({}); a quorum cannot be changed by restarting with \
             other voters",
            stored.trim(),
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{voters}\n"))
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| File::open(dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn replay_keeps_the_last_word_on_each_index_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, r) = DiskLog::open(dir.path()).unwrap();
            assert!(r.entries.is_empty());
            log.write(
                &[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
                None,
            )
            .unwrap();
            let hs = HardState {
                term: 2,
                commit: 1,
                ..Default::default()
            };
            // A new leader replaces 2 and 3.
            log.write(&[entry(2, 2, "B")], Some(&hs)).unwrap();
        }
        // A torn frame at the end.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let (_, r) = DiskLog::open(dir.path()).unwrap();
        let got: Vec<(u64, u64, Vec<u8>)> = r
            .entries
            .iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect();
        assert_eq!(got, vec![(1, 1, b"a".to_vec()), (2, 2, b"B".to_vec())]);
        assert_eq!((r.hard_state.term, r.hard_state.commit), (2, 1));
        let len = std::fs::metadata(&path).unwrap().len();
        let (_, r2) = DiskLog::open(dir.path()).unwrap();
        assert_eq!(r2.entries.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    }

    #[test]
    fn a_snapshot_and_a_rewritten_log_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = DiskLog::open(dir.path()).unwrap();
        log.write(
            &[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
            None,
        )
        .unwrap();
        let mut snap = Snapshot {
            data: b"state".to_vec().into(),
            ..Default::default()
        };
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        write_snapshot(dir.path(), &snap).unwrap();
        let hs = HardState {
            term: 1,
            commit: 3,
            ..Default::default()
        };
        log.rewrite(&[entry(2, 1, "b"), entry(3, 1, "c")], &hs)
            .unwrap();
        log.write(&[entry(4, 1, "d")], None).unwrap();
        let back = read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(
            (back.get_metadata().index, &back.data[..]),
            (2, &b"state"[..])
        );
        let (_, r) = DiskLog::open(dir.path()).unwrap();
        let idx: Vec<u64> = r.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![2, 3, 4]);
        assert_eq!(r.hard_state.commit, 3);
    }

    #[test]
    fn the_quorum_cannot_change_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        check_quorum(dir.path(), "1@a:1,2@b:2").unwrap();
        check_quorum(dir.path(), "1@a:1,2@b:2").unwrap();
        let e = check_quorum(dir.path(), "1@a:1,3@c:3").unwrap_err();
        assert!(
            e.contains("1@a:1,3@c:3") && e.contains("1@a:1,2@b:2"),
            "{e}"
        );
    }
}
