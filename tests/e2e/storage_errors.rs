//! An I/O error on one partition, end to end: the broker's data dir is mounted through
//! faultfs (tests/faultfs, a loopback FUSE file system that fails one partition's reads,
//! writes and syncs with EIO on demand), so the broker gets real errors from the kernel.
//! That partition alone goes offline (KAFKA_STORAGE_ERROR, listed offline in Metadata and
//! the metrics), the others are served, its leadership moves to another in-sync replica,
//! nothing acknowledged is lost, and a restart recovers it.
//!
//! Mounting needs root and /dev/fuse (CI runs as root): without them the tests fail and
//! say so.

use crate::cluster::{create_with_replicas, metadata, Cluster};
use crate::common::*;
use crate::protocol::{
    answer_or_close, call, connect, create_via_metadata, encode_request, fetch_request, produce_to,
    send_raw,
};
use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_record::Batches;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const KAFKA_STORAGE_ERROR: i16 = 56;
const LEADER_NOT_AVAILABLE: i16 = 5;

/// faultfs mounted over a directory (its files kept in a backing directory); unmounted
/// when dropped.
struct FaultFs {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    mountpoint: PathBuf,
}

impl FaultFs {
    /// Mounts `backing` at `mountpoint` (both existing directories).
    fn mount(backing: &Path, mountpoint: &Path) -> FaultFs {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let bin = root.join("target/faultfs");
        assert!(
            bin.exists(),
            "{} is missing: scripts/install-test-deps builds it",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args([backing, mountpoint])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "mounted",
            "faultfs could not mount at {} (this test needs root and /dev/fuse)",
            mountpoint.display()
        );
        FaultFs {
            child,
            stdin,
            stdout,
            mountpoint: mountpoint.to_path_buf(),
        }
    }

    fn command(&mut self, c: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{c}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "faultfs {c}");
    }

    /// From now on every I/O on files under `prefix` (relative to the mount) fails.
    fn fail(&mut self, prefix: &str) {
        self.command(&format!("fail {prefix}"));
    }

    /// [`FaultFs::fail`], except that files there still open: reads and writes fail.
    fn fail_io(&mut self, prefix: &str) {
        self.command(&format!("fail-io {prefix}"));
    }

    fn heal(&mut self) {
        self.command("heal");
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // EOF unmounts (detached if a process still holds files there).
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let target = std::ffi::CString::new(self.mountpoint.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Drops the cached pages of `len` bytes from `offset` (0: to the end) of every file in
/// `dir` (through the mount: FUSE drops its own cache), so the next read of them goes to
/// the file system.
fn evict_page_cache(dir: &Path, offset: i64, len: i64) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).unwrap() {
        let f = std::fs::File::open(e.unwrap().path()).unwrap();
        // SAFETY: advice on a descriptor this function owns.
        let r =
            unsafe { libc::posix_fadvise(f.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "posix_fadvise");
    }
}

/// [`crate::protocol::tagged_batch`] of 100-byte records.
fn tagged(tag: u32, n: u32) -> (Bytes, Vec<Vec<u8>>) {
    crate::protocol::tagged_batch(tag, n, 100)
}

/// A fetch of one partition from `offset`: its error code and record values.
fn fetch_values(
    s: &mut TcpStream,
    topic: &'static str,
    partition: i32,
    offset: i64,
) -> (i16, Vec<Vec<u8>>) {
    let f: FetchResponse = call(
        s,
        ApiKey::Fetch,
        12,
        &fetch_request(topic, &[(partition, offset, 4 << 20)], 0, 0, 4 << 20),
    );
    let p = &f.responses[0].partitions[0];
    let records = p.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for b in Batches::new(&records) {
        let (pos, h) = b.unwrap();
        let batch = &records[pos..pos + h.total_len()];
        for r in runnel_record::Records::new(&batch[runnel_record::HEADER_LEN..]) {
            let r = r.unwrap();
            if h.base_offset + i64::from(r.offset_delta) >= offset {
                out.push(r.value.unwrap().to_vec());
            }
        }
    }
    (p.error_code, out)
}

/// Every record value of a partition, read through `addr` until its high watermark.
fn read_all(addr: &str, topic: &'static str, partition: i32) -> Vec<Vec<u8>> {
    let mut s = connect(addr);
    let mut out = Vec::new();
    loop {
        let (code, values) = fetch_values(&mut s, topic, partition, out.len() as i64);
        assert_eq!(code, 0, "fetch of {topic}-{partition}");
        if values.is_empty() {
            return out;
        }
        out.extend(values);
    }
}

/// Per partition: (error, leader, ISR, offline replicas) in `addr`'s Metadata.
fn offline_view(addr: &str, topic: &'static str) -> Vec<(i16, i32, Vec<i32>, Vec<i32>)> {
    let mut s = connect(addr);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(topic))))]))
        .with_allow_auto_topic_creation(false);
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut parts: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                (
                    p.error_code,
                    p.leader_id.0,
                    ids(&p.isr_nodes),
                    ids(&p.offline_replicas),
                ),
            )
        })
        .collect();
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn an_io_error_takes_only_its_partition_offline_and_a_restart_recovers_it() {
    with_timeout(180, || {
        let tmp = tempfile::tempdir().unwrap();
        let (backing, data) = (tmp.path().join("backing"), tmp.path().join("data"));
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&data).unwrap();
        let mut fs = FaultFs::mount(&backing, &data);
        let mut b = Broker::start_in(
            &data,
            &[
                "--default-partitions",
                "4",
                "--offsets-topic-partitions",
                "1",
            ],
        );
        let mut s = connect(&b.addr);
        create_via_metadata(&mut s, "disk");
        let mut acked: [Vec<Vec<u8>>; 4] = Default::default();
        for tag in 0..5 {
            for p in 0..4 {
                let (records, values) = tagged(tag * 4 + p as u32, 500);
                let r = produce_to(&mut s, 9, vec![("disk", p, records)]);
                assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
                acked[p as usize].extend(values);
            }
        }

        // The device under disk-0 fails: its next write fails, and the partition with it.
        fs.fail("disk-0/");
        let (records, _) = tagged(100, 50);
        let r = produce_to(&mut s, 9, vec![("disk", 0, records)]);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, KAFKA_STORAGE_ERROR,
            "a produce whose write fails with EIO"
        );
        // The other partition is served as before.
        let (records, values) = tagged(101, 50);
        let r = produce_to(&mut s, 9, vec![("disk", 1, records)]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        acked[1].extend(values);
        // Offline in Metadata (no leader: its only replica is offline) and in the metrics.
        let mut view = Vec::new();
        wait_until(
            "disk-0 listed offline in Metadata",
            Duration::from_secs(20),
            || {
                view = offline_view(&b.addr, "disk");
                view[0].3 == vec![0]
            },
        );
        assert_eq!(view[0], (LEADER_NOT_AVAILABLE, -1, vec![0], vec![0]));
        assert_eq!(view[1], (0, 0, vec![0], vec![]));
        assert_eq!(view[2], (0, 0, vec![0], vec![]));
        assert_eq!(view[3], (0, 0, vec![0], vec![]));
        assert_eq!(b.metric_sum("offline_partitions"), 1);
        // Its produce and fetch answer KAFKA_STORAGE_ERROR; the other's fetch is whole.
        let (records, _) = tagged(102, 50);
        let r = produce_to(&mut s, 9, vec![("disk", 0, records)]);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            KAFKA_STORAGE_ERROR
        );
        assert_eq!(fetch_values(&mut s, "disk", 0, 0).0, KAFKA_STORAGE_ERROR);
        assert_eq!(read_all(&b.addr, "disk", 1), acked[1]);
        assert!(b
            .logs()
            .contains("the partition is offline until the broker restarts"));

        // Read errors. disk-2: a page inside its first batch leaves the page cache and the
        // device fails; the fetch plan (which reads batch headers only) succeeds and the
        // error comes while the answer is sent: the answer is cut (the connection closes).
        // disk-3: all of its pages go; the plan's header read fails: KAFKA_STORAGE_ERROR.
        // Either way the partition goes offline like disk-0.
        // (Read in full first, so every page is cached: FUSE does not keep the pages that
        // writes filled only in part.)
        fs.heal();
        for p in [2, 3] {
            assert_eq!(read_all(&b.addr, "disk", p), acked[p as usize]);
        }
        evict_page_cache(&data.join("disk-2"), 16384, 4096);
        evict_page_cache(&data.join("disk-3"), 0, 0);
        fs.fail("disk-2/");
        fs.fail("disk-3/");
        let fetch_raw = |partition: i32| {
            let mut reader = connect(&b.addr);
            let request = fetch_request("disk", &[(partition, 0, 4 << 20)], 0, 0, 4 << 20);
            send_raw(&mut reader, &encode_request(ApiKey::Fetch, 12, 7, &request));
            answer_or_close(&mut reader).map(|mut answer| {
                use kafka_protocol::protocol::{Decodable, HeaderVersion};
                ResponseHeader::decode(&mut answer, FetchResponse::header_version(12)).unwrap();
                let f = FetchResponse::decode(&mut answer, 12).unwrap();
                f.responses[0].partitions[0].error_code
            })
        };
        assert_eq!(fetch_raw(2), None, "a fetch whose send failed was not cut");
        assert_eq!(fetch_raw(3), Some(KAFKA_STORAGE_ERROR));
        wait_until(
            "disk-2 and disk-3 listed offline in Metadata",
            Duration::from_secs(20),
            || {
                let v = offline_view(&b.addr, "disk");
                v[2].3 == vec![0] && v[3].3 == vec![0]
            },
        );
        for p in [2, 3] {
            assert_eq!(fetch_values(&mut s, "disk", p, 0).0, KAFKA_STORAGE_ERROR);
        }
        assert_eq!(read_all(&b.addr, "disk", 1), acked[1]);
        assert_eq!(b.metric_sum("offline_partitions"), 3);

        // Restarted while the device still fails (for disk-0 only its segment files'
        // reads and writes, so that its recovery meets the errors): the broker starts,
        // serves disk-1, and the partitions it cannot open are offline. No data is cut: a
        // read error in recovery is no corruption.
        fs.fail_io("disk-0/0");
        b.stop();
        b.restart();
        wait_until(
            "the failing partitions offline after the restart",
            Duration::from_secs(20),
            || {
                let v = offline_view(&b.addr, "disk");
                [0, 2, 3].iter().all(|p| v[*p].3 == vec![0]) && v[1] == (0, 0, vec![0], vec![])
            },
        );
        assert_eq!(read_all(&b.addr, "disk", 1), acked[1]);
        assert_eq!(b.metric_sum("offline_partitions"), 3);

        // The device is back; a restart recovers the partitions with every acknowledged
        // record, once each, in order, and they take writes again.
        fs.heal();
        b.stop();
        b.restart();
        wait_until("disk-0 led again", Duration::from_secs(20), || {
            offline_view(&b.addr, "disk")[0] == (0, 0, vec![0], vec![])
        });
        wait_until(
            "disk-2 and disk-3 led again",
            Duration::from_secs(20),
            || {
                let v = offline_view(&b.addr, "disk");
                v[2] == (0, 0, vec![0], vec![]) && v[3] == v[2]
            },
        );
        for p in 0..4 {
            assert_eq!(
                read_all(&b.addr, "disk", p),
                acked[p as usize],
                "after the restart"
            );
        }
        let mut s = connect(&b.addr);
        let (records, values) = tagged(103, 50);
        let r = produce_to(&mut s, 9, vec![("disk", 0, records)]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        acked[0].extend(values);
        assert_eq!(read_all(&b.addr, "disk", 0), acked[0]);
        assert_eq!(b.metric_sum("offline_partitions"), 0);
        drop(b);
        drop(fs);
    });
}

/// A raw acks=all Produce of one batch to partition 0: (error code, base offset).
fn produce_all(addr: &str, topic: &'static str, records: Bytes) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut s = connect(addr);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn an_io_error_on_a_leaders_partition_moves_its_leadership_and_loses_nothing_acknowledged() {
    with_timeout(240, || {
        // (Declared first, dropped last: the brokers stop before the mount goes.)
        let mut fs: Option<FaultFs> = None;
        let mut c = Cluster::start(3, &["--broker-session-timeout-ms", "3000"]);
        // Broker 1's data dir goes through faultfs: stopped, its files moved to a backing
        // dir, mounted, started again.
        let dir = c.node(1).dir.clone();
        let backing = dir.with_file_name("node1-backing");
        assert!(c.node(1).stop().success());
        std::fs::rename(&dir, &backing).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let fs = fs.insert(FaultFs::mount(&backing, &dir));
        c.node(1).restart();
        let first = c.brokers[0].addr.clone();
        assert_eq!(create_with_replicas(&first, "moved", &[1, 2, 3]), 0);
        wait_until("the full ISR", Duration::from_secs(30), || {
            metadata(&first, Some("moved"))
                .partitions
                .get(&0)
                .is_some_and(|p| p.1 == 1 && p.4.len() == 3)
        });
        let mut acked = Vec::new();
        for tag in 0..10 {
            let (records, values) = tagged(tag, 20);
            assert_eq!(produce_all(&first, "moved", records).0, 0);
            acked.extend(values);
        }

        // The leader's disk fails under the partition: the produce fails, the leadership
        // moves to a follower that has every acknowledged record.
        fs.fail("moved-0/");
        let failed = std::time::Instant::now();
        let (records, _) = tagged(100, 20);
        assert_eq!(produce_all(&first, "moved", records).0, KAFKA_STORAGE_ERROR);
        let second = c.brokers[1].addr.clone();
        let mut view = Vec::new();
        wait_until("a new leader", Duration::from_secs(30), || {
            view = offline_view(&second, "moved");
            view[0].1 > 1
        });
        println!(
            "leadership of moved-0 moved to broker {} {:?} after the failed write",
            view[0].1,
            failed.elapsed()
        );
        let (error, leader, isr, offline) = view[0].clone();
        assert_eq!(error, 0);
        assert!(
            !isr.contains(&1),
            "the offline replica left the ISR: {isr:?}"
        );
        assert_eq!(offline, vec![1]);
        let leader_addr = c.node(leader).addr.clone();
        // Broker 1 answers for its offline replica with KAFKA_STORAGE_ERROR (the client
        // refreshes its metadata and goes to the new leader).
        let (records, _) = tagged(101, 20);
        assert_eq!(produce_all(&first, "moved", records).0, KAFKA_STORAGE_ERROR);
        for tag in 200..205 {
            let (records, values) = tagged(tag, 20);
            assert_eq!(produce_all(&leader_addr, "moved", records).0, 0);
            acked.extend(values);
        }
        assert_eq!(read_all(&leader_addr, "moved", 0), acked);
        assert_eq!(c.node(1).metric_sum("offline_partitions"), 1);

        // Healed and restarted, broker 1 recovers, catches up and rejoins the ISR.
        fs.heal();
        assert!(c.node(1).stop().success());
        c.node(1).restart();
        wait_until("broker 1 back in the ISR", Duration::from_secs(60), || {
            let v = offline_view(&second, "moved");
            v[0].2.len() == 3 && v[0].3.is_empty()
        });
        // Every replica holds the same batches: the ten before the failure, the five after.
        assert_eq!(
            crate::replication::await_identical_replicas_of(&c, "moved", &[1, 2, 3]),
            15
        );
        drop(c);
    });
}
