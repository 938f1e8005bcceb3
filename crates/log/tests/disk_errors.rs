//! Disk errors come back as errors (KAFKA_STORAGE_ERROR), never as panics, and leave the log
//! as it was: the high watermark, the size and the indexes do not move, earlier data stays
//! readable, and once space is back the log goes on at the next offset.
//!
//! Needs to mount a small tmpfs (root, or CAP_SYS_ADMIN); skipped with a message otherwise.

mod common;

use common::{batch, run};
use runnel_log::{Log, LogConfig, LogError, OpenOptions};
use runnel_record::{Batches, Records, HEADER_LEN};
use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A tmpfs mounted over a directory, unmounted on drop (also when the test panics).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> io::Result<Tmpfs> {
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let (source, target, fstype) = (c(b"tmpfs"), c(path.as_os_str().as_bytes()), c(b"tmpfs"));
        let data = c(format!("size={size},mode=0700").as_bytes());
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `target` is a NUL-terminated path that outlives the calls.
        unsafe {
            if libc::umount(target.as_ptr()) != 0 {
                // Something still holds a file open (a failed test's leftovers): detach it so
                // the mount goes away when they do.
                let busy = io::Error::last_os_error();
                if libc::umount2(target.as_ptr(), libc::MNT_DETACH) != 0 {
                    eprintln!(
                        "cannot unmount the test tmpfs at {}: {busy}, then {}",
                        self.path.display(),
                        io::Error::last_os_error()
                    );
                }
            }
        }
    }
}

/// Mounts a 256 KiB tmpfs over `dir`, or says why the test is skipped.
fn small_tmpfs(dir: &Path, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, "256k") {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: cannot mount a tmpfs to fill ({e}); run the tests as root \
                 (or with CAP_SYS_ADMIN) to check disk-full handling"
            );
            None
        }
    }
}

/// Fills the filesystem holding `path` with a file there, then shrinks it so that `free`
/// bytes are left.
fn fill_leaving(path: &Path, free: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    assert!(len > free, "the filesystem is smaller than expected");
    f.set_len(len - free).unwrap();
}

/// Every record from the log start offset to the high watermark as (offset, value), read
/// through read plans.
async fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let plan = log.read(next, 16 << 10, true).await.unwrap();
        assert!(plan.len > 0, "no progress at offset {next}");
        let file = std::fs::File::from(plan.file.try_clone().unwrap());
        let mut bytes = vec![0u8; plan.len as usize];
        file.read_exact_at(&mut bytes, plan.position).unwrap();
        let mut batches = Batches::new(&bytes);
        for b in &mut batches {
            let (pos, h) = b.expect("plans hold whole batches");
            runnel_record::verify_stored(&bytes[pos..pos + h.total_len()]).unwrap();
            for r in Records::new(&bytes[pos + HEADER_LEN..pos + h.total_len()]) {
                let r = r.unwrap();
                out.push((
                    h.base_offset + i64::from(r.offset_delta),
                    r.value.unwrap().to_vec(),
                ));
            }
            next = h.next_offset();
        }
        assert_eq!(
            batches.position(),
            bytes.len(),
            "plan ends on a batch boundary"
        );
    }
    out
}

fn values_of(records: &bytes::BytesMut) -> Vec<Vec<u8>> {
    let (_, h) = Batches::new(records).next().unwrap().unwrap();
    Records::new(&records[HEADER_LEN..h.total_len()])
        .map(|r| r.unwrap().value.unwrap().to_vec())
        .collect()
}

async fn fill_until_enospc_then_recover(dir: PathBuf, ballast: PathBuf, preallocate: bool) {
    let config = LogConfig {
        segment_bytes: 32 << 10,
        index_interval_bytes: 1024,
        preallocate,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, "t", 0, config.clone(), OpenOptions::default())
        .await
        .unwrap();
    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut failure = None;
    for i in 0..200u8 {
        let records = batch(2, 1500, i, 1_000 + i64::from(i));
        let values = values_of(&records);
        let (hw, size) = (log.high_watermark(), log.size_bytes());
        match log.append(records, i % 3 == 0).await {
            Ok(info) => {
                assert_eq!(info.base_offset, hw);
                acked.extend((hw..).zip(values));
            }
            Err(e) => {
                failure = Some((e, hw, size));
                break;
            }
        }
    }
    let (err, hw, size) = failure.expect("the filesystem filled up");
    assert!(
        !acked.is_empty(),
        "some appends fitted before the disk filled"
    );
    assert_eq!(err.kafka_error_code(), 56, "KAFKA_STORAGE_ERROR: {err}");
    match &err {
        LogError::Io { source, path, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}");
            assert!(path.starts_with(&dir), "the error names the file: {err}");
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert_eq!(
        log.high_watermark(),
        hw,
        "a failed append moved the high watermark"
    );
    assert_eq!(log.size_bytes(), size, "a failed append moved the size");
    assert_eq!(
        read_all(&log).await,
        acked,
        "earlier data is still readable"
    );
    // The directory's files hold exactly what was acknowledged.
    let on_disk: u64 = log
        .segment_base_offsets()
        .iter()
        .map(|&b| {
            std::fs::metadata(dir.join(runnel_log::file_name(b, "log")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        on_disk, size,
        "a failed write left bytes past the committed end"
    );
    // Still full: another try fails the same way and changes nothing either.
    let again = log.append(batch(2, 1500, 7, 1), false).await.unwrap_err();
    assert_eq!(again.kafka_error_code(), 56, "{again}");
    assert_eq!((log.high_watermark(), log.size_bytes()), (hw, size));

    // Space comes back: the log goes on at the next offset.
    std::fs::remove_file(&ballast).unwrap();
    let records = batch(2, 1500, 99, 5_000);
    let values = values_of(&records);
    let info = log.append(records, true).await.unwrap();
    assert_eq!(info.base_offset, hw, "the next offset after the failures");
    acked.extend((hw..).zip(values));
    assert_eq!(read_all(&log).await, acked);

    // And what is on disk is a valid log, after a clean restart and after a crash.
    log.close().await.unwrap();
    drop(log);
    let clean = OpenOptions {
        clean_shutdown: true,
        ..OpenOptions::default()
    };
    let log = Log::open(&dir, "t", 0, config.clone(), clean)
        .await
        .unwrap();
    assert_eq!(read_all(&log).await, acked, "after a clean restart");
    drop(log);
    let unclean = OpenOptions {
        recovery_point: Some(0),
        ..OpenOptions::default()
    };
    let log = Log::open(&dir, "t", 0, config, unclean).await.unwrap();
    assert_eq!(log.high_watermark(), hw + 2);
    assert_eq!(read_all(&log).await, acked, "after recovery");
}

fn disk_full_case(preallocate: bool) {
    let test = format!("disk full with preallocate={preallocate}");
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = small_tmpfs(tmp.path(), &test) else {
        return;
    };
    let ballast = tmp.path().join("ballast");
    // Room for a few 32 KiB segments, so some appends fit and then one does not.
    fill_leaving(&ballast, 100 << 10);
    let dir = tmp.path().join("t-0");
    run(move || fill_until_enospc_then_recover(dir, ballast, preallocate));
    drop(mount);
}

#[test]
fn full_disk_fails_appends_with_storage_error_and_keeps_the_log_intact() {
    disk_full_case(false);
}

#[test]
fn full_disk_with_preallocated_segments_fails_appends_with_storage_error() {
    disk_full_case(true);
}
