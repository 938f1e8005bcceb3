//! Offset checkpoint files in Kafka's text format (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`):
//!
//! ```text
//! 0
//! <entry count>
//! <topic> <partition> <offset>
//! ```
//!
//! Written to a temporary file, synced, renamed over the old one and the directory synced, so
//! a crash leaves either the old or the new checkpoint, never a torn one.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Each partition's high watermark (Kafka's name and format).
pub const REPLICATION_OFFSET_CHECKPOINT: &str = "replication-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Where each compacted log's dirty section starts (Kafka's cleaner-offset-checkpoint).
pub const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Written after a clean shutdown; its absence at startup means recovery must scan.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".runnel_cleanshutdown";

const VERSION: u32 = 0;

/// (topic, partition) -> offset.
pub type Offsets = BTreeMap<(String, i32), i64>;

pub fn encode(offsets: &Offsets) -> String {
    let mut s = format!("{VERSION}\n{}\n", offsets.len());
    for ((topic, partition), offset) in offsets {
        s.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    s
}

pub fn decode(text: &str) -> Result<Offsets, String> {
    let mut lines = text.lines();
    let version = lines.next().ok_or("empty checkpoint")?;
    if version.trim() != VERSION.to_string() {
        return Err(format!("unsupported checkpoint version {version:?}"));
    }
    let count: usize = lines
        .next()
        .ok_or("missing entry count")?
        .trim()
        .parse()
        .map_err(|e| format!("bad entry count: {e}"))?;
    let mut offsets = Offsets::new();
    for i in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| format!("expected {count} entries, found {i}"))?;
        let mut parts = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed entry {line:?}"));
        };
        let partition = partition
            .parse()
            .map_err(|e| format!("bad partition in {line:?}: {e}"))?;
        let offset = offset
            .parse()
            .map_err(|e| format!("bad offset in {line:?}: {e}"))?;
        offsets.insert((topic.to_string(), partition), offset);
    }
    Ok(offsets)
}

/// Reads a checkpoint; a missing file is an empty checkpoint.
pub fn read(path: &Path) -> io::Result<Offsets> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Offsets::new()),
        Err(e) => Err(e),
    }
}

/// Atomically replaces the checkpoint at `path`. Syncs go through the companion ring so the
/// executor thread never blocks on the disk.
pub async fn write(path: &Path, offsets: &Offsets) -> io::Result<()> {
    write_atomic(path, encode(offsets).into()).await
}

/// Atomically replaces the file at `path` with `contents`: a temporary file is written and
/// synced, renamed over `path`, and the directory synced, so a crash leaves the old or the new
/// file, never a torn one.
pub async fn write_atomic(path: &Path, contents: bytes::Bytes) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file: Arc<OwnedFd> = Arc::new(std::fs::File::create(&tmp)?.into());
    let ring = runnel_runtime::ring();
    ring.write_all_at(&file, 0, vec![contents])
        .await
        .map_err(|(e, _)| e)?;
    ring.fdatasync(&file).await?;
    std::fs::rename(&tmp, path)?;
    sync_dir(parent_dir(path)).await
}

/// [`write_atomic`] for the file `name` in the directory `dir`, by name relative to the
/// descriptor (see `Log`'s `dir_id`): a log whose directory was removed and created again
/// under the same path never writes into the new one.
pub async fn write_atomic_at(
    dir: &Arc<OwnedFd>,
    name: &str,
    contents: bytes::Bytes,
) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let ring = runnel_runtime::ring();
    let file: Arc<OwnedFd> = Arc::new(crate::segment::create_at(dir, &tmp)?);
    ring.write_all_at(&file, 0, vec![contents])
        .await
        .map_err(|(e, _)| e)?;
    ring.fdatasync(&file).await?;
    rustix::fs::renameat(&**dir, &tmp, &**dir, name)?;
    ring.fdatasync(dir).await
}

/// Blocking twin of [`write`], for threads that are not executors (the broker's main thread
/// writes the checkpoints at shutdown, after the shards are gone).
pub fn write_blocking(path: &Path, offsets: &Offsets) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(encode(offsets).as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(parent_dir(path))?.sync_all()
}

/// The directory holding `path`: "." for a bare file name, whose `parent()` is "" (which
/// cannot be opened).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync of a directory, so a created, renamed or deleted entry survives a crash.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let fd: Arc<OwnedFd> = Arc::new(std::fs::File::open(dir)?.into());
    runnel_runtime::ring().fdatasync(&fd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_text_round_trips_topics_with_dashes_and_spaces_in_order() {
        let mut o = Offsets::new();
        o.insert(("orders-eu".into(), 3), 42);
        o.insert(("a".into(), 0), 0);
        let text = encode(&o);
        assert_eq!(text, "0\n2\na 0 0\norders-eu 3 42\n");
        assert_eq!(decode(&text).unwrap(), o);
        assert!(decode("1\n0\n").is_err());
        assert!(decode("0\n2\na 0 0\n").is_err());
        assert!(decode("0\n1\na x 0\n").is_err());
    }

    #[test]
    fn parent_of_a_bare_file_name_is_the_current_directory() {
        assert_eq!(
            parent_dir(Path::new("recovery-point-offset-checkpoint")),
            Path::new(".")
        );
        assert_eq!(parent_dir(Path::new("data/t-0")), Path::new("data"));
        assert_eq!(parent_dir(Path::new("/t-0")), Path::new("/"));
    }
}
