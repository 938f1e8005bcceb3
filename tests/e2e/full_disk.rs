//! A full disk, end to end: the broker's data dir on a small tmpfs that a ballast file
//! fills. Producers get KAFKA_STORAGE_ERROR, consumers keep reading what is there, group
//! commits fail with a retriable error, nothing acknowledged is lost, and once space
//! returns, writes go on without a restart.
//!
//! Mounting needs root (CI runs as root): without it the test fails and says so.

use crate::common::*;
use crate::protocol::{call, connect, create_via_metadata, fetch_request, produce_to};
use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_record::Batches;
use std::ffi::CString;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const KAFKA_STORAGE_ERROR: i16 = 56;
/// What Kafka answers a commit whose append failed for lack of space (a retriable error:
/// the client finds the coordinator again and retries).
const NOT_COORDINATOR: i16 = 16;

/// A tmpfs mounted over a directory, unmounted (lazily, if busy) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let (source, target) = (c(b"tmpfs"), c(path.as_os_str().as_bytes()));
        let data = c(format!("size={size},mode=0700").as_bytes());
        // SAFETY: NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "cannot mount a tmpfs at {} ({}): this test needs root",
            path.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the filesystem holding `path` with a file there, leaving `free` bytes.
fn fill_leaving(path: &Path, free: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 1 << 16];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
}

/// [`crate::protocol::tagged_batch`] of 1024-byte records.
fn tagged(tag: u32, n: u32) -> (Bytes, Vec<Vec<u8>>) {
    crate::protocol::tagged_batch(tag, n, 1024)
}

/// Every record value of `topic`-0 from offset 0 to the high watermark.
fn read_all(s: &mut TcpStream, topic: &'static str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = 0i64;
    loop {
        let f: FetchResponse = call(
            s,
            ApiKey::Fetch,
            12,
            &fetch_request(topic, &[(0, next, 4 << 20)], 0, 0, 4 << 20),
        );
        let p = &f.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "a fetch on a full disk failed");
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            assert_eq!(next, p.high_watermark);
            return out;
        }
        for b in Batches::new(&records) {
            let (pos, h) = b.unwrap();
            let batch = &records[pos..pos + h.total_len()];
            for r in runnel_record::Records::new(&batch[runnel_record::HEADER_LEN..]) {
                let r = r.unwrap();
                if h.base_offset + i64::from(r.offset_delta) >= next {
                    out.push(r.value.unwrap().to_vec());
                }
            }
            next = h.next_offset();
        }
    }
}

fn commit(s: &mut TcpStream, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("full-disk-group")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("full")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &req);
    r.topics[0].partitions[0].error_code
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_recovers_without_a_restart() {
    with_timeout(180, || {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        let _mount = Tmpfs::mount(&disk, "40m");
        let mut b = Broker::start_in(
            &disk.join("data"),
            &[
                "--segment-bytes",
                "1048576",
                "--offsets-topic-partitions",
                "1",
            ],
        );
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "full");
        assert_eq!(commit(&mut s, 0), 0);

        // Room for a few MiB more, then none.
        let ballast = disk.join("ballast");
        fill_leaving(&ballast, 3 << 20);
        let mut acked: Vec<Vec<u8>> = Vec::new();
        let mut refused = None;
        for tag in 0..200 {
            let (records, values) = tagged(tag, 100);
            let r = produce_to(&mut s, 9, vec![("full", 0, records)]);
            let p = &r.responses[0].partition_responses[0];
            if p.error_code == 0 {
                acked.extend(values);
            } else {
                refused = Some(p.error_code);
                break;
            }
        }
        assert_eq!(
            refused,
            Some(KAFKA_STORAGE_ERROR),
            "the full disk did not refuse the produce with KAFKA_STORAGE_ERROR"
        );
        assert!(!acked.is_empty());
        // Still refused, and still no panic.
        let (records, _) = tagged(1000, 100);
        let r = produce_to(&mut s, 9, vec![("full", 0, records)]);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            KAFKA_STORAGE_ERROR
        );
        // Consumers read every acknowledged record.
        assert_eq!(read_all(&mut s, "full"), acked, "reads on a full disk");
        // Group commits: the last page of the offsets log may still have room for a few
        // (tmpfs allocates pages), then they cannot be written: a retriable error, not a
        // close.
        fill_leaving(&disk.join("ballast-2"), 0);
        let mut code = 0;
        for n in 0..500 {
            code = commit(&mut s, n);
            if code != 0 {
                println!("commit {n} on a full disk: error {code}");
                break;
            }
        }
        assert_eq!(code, NOT_COORDINATOR, "a commit on a full disk");
        std::fs::remove_file(disk.join("ballast-2")).unwrap();

        // Space returns: writes go on, no restart.
        std::fs::remove_file(&ballast).unwrap();
        let (records, values) = tagged(2000, 100);
        let mut resumed = None;
        wait_until("produce resumes", Duration::from_secs(20), || {
            let r = produce_to(&mut s, 9, vec![("full", 0, records.clone())]);
            let p = &r.responses[0].partition_responses[0];
            resumed = Some(p.error_code);
            p.error_code == 0
        });
        acked.extend(values);
        wait_until("commits resume", Duration::from_secs(20), || {
            commit(&mut s, acked.len() as i64) == 0
        });
        assert_eq!(b.metric_sum("offline_partitions"), 0);
        assert_eq!(read_all(&mut s, "full"), acked);

        // And all of it survives a restart, once each, in order.
        assert!(b.stop().success());
        b.restart();
        let mut s = connect(&b.addr);
        assert_eq!(read_all(&mut s, "full"), acked, "after a restart");
        assert!(!b.logs().contains("panicked"));
    });
}
