//! The Fetch response writer (written by hand around file ranges, for zero copy) round
//! tripped through kafka-protocol's decoder: for a response described by the input, at any
//! version 4-16, the frame size is right, nothing is left over, and every field decodes to
//! what was written (the record bytes are read from a real file, as splice would send them).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use runnel_protocol::fetch_response::{
    encode, FileRange, NodeEndpoint, PartitionOut, TopicOut, MAX_VERSION, MIN_VERSION,
};
use runnel_protocol::Part;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Size of the file the record ranges come from.
const FILE_LEN: usize = 1 << 16;

thread_local! {
    static FILE: Arc<OwnedFd> = {
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"fuzz-segment".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let content: Vec<u8> = (0..FILE_LEN).map(|i| (i * 7 + i / 256) as u8).collect();
        std::fs::File::from(fd.try_clone().expect("dup"))
            .write_all_at(&content, 0)
            .expect("memfd write");
        Arc::new(fd)
    };
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn i16(&mut self) -> i16 {
        i16::from_le_bytes([self.u8(), self.u8()])
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn i64(&mut self) -> i64 {
        (i64::from(self.i32()) << 32) | i64::from(self.i32() as u32)
    }
    fn name(&mut self) -> String {
        let n = 1 + usize::from(self.u8() % 12);
        (0..n).map(|_| (b'a' + self.u8() % 26) as char).collect()
    }
}

pub fn run(data: &[u8]) {
    let mut r = Input(data);
    let version = MIN_VERSION + (r.u8() as i16 % (MAX_VERSION - MIN_VERSION + 1));
    let (throttle, error_code, session_id, correlation) = (r.i32(), r.i16(), r.i32(), r.i32());
    let file = FILE.with(Arc::clone);
    let topics: Vec<TopicOut> = (0..r.u8() % 4)
        .map(|_| {
            let name = r.name();
            let mut id = [0u8; 16];
            id.iter_mut().for_each(|b| *b = r.u8());
            let partitions = (0..r.u8() % 4)
                .map(|_| {
                    let flags = r.u8();
                    let records = (flags & 1 != 0).then(|| {
                        let offset = u64::from(r.i16() as u16) % FILE_LEN as u64;
                        let len = u64::from(r.i16() as u16) % (FILE_LEN as u64 - offset + 1);
                        FileRange {
                            file: file.clone(),
                            offset,
                            len,
                            source: None,
                        }
                    });
                    PartitionOut {
                        index: r.i32(),
                        error_code: r.i16(),
                        high_watermark: r.i64(),
                        last_stable_offset: r.i64(),
                        log_start_offset: r.i64(),
                        records,
                        current_leader: (flags & 2 != 0).then(|| (r.i32(), r.i32())),
                        preferred_read_replica: r.i32(),
                        aborted: (flags & 4 != 0)
                            .then(|| (0..r.u8() % 4).map(|_| (r.i64(), r.i64())).collect()),
                    }
                })
                .collect();
            TopicOut {
                name: name.into(),
                id,
                partitions,
            }
        })
        .collect();
    let endpoints: Vec<NodeEndpoint> = (0..r.u8() % 3)
        .map(|_| NodeEndpoint {
            id: r.i32(),
            host: r.name(),
            port: r.i32(),
            rack: (r.u8() & 1 == 1).then(|| r.name()),
        })
        .collect();

    let resp = encode(
        correlation,
        version,
        throttle,
        error_code,
        session_id,
        &topics,
        &endpoints,
    );
    let mut frame = Vec::new();
    for part in &resp.parts {
        match part {
            Part::Bytes(b) => frame.extend_from_slice(b),
            Part::File {
                file, offset, len, ..
            } => {
                let mut buf = vec![0u8; *len as usize];
                std::fs::File::from(file.try_clone().expect("dup"))
                    .read_exact_at(&mut buf, *offset)
                    .expect("the range is inside the file");
                frame.extend_from_slice(&buf);
            }
        }
    }
    assert_eq!(resp.len() as usize, frame.len());
    let mut buf = Bytes::from(frame);
    let size = buf.get_i32();
    assert_eq!(size as usize, buf.len(), "frame size");
    let header = ResponseHeader::decode(&mut buf, if version >= 12 { 1 } else { 0 })
        .expect("the header decodes");
    assert_eq!(header.correlation_id, correlation);
    let got = FetchResponse::decode(&mut buf, version).expect("the body decodes");
    assert!(!buf.has_remaining(), "{} bytes left over", buf.remaining());
    assert_eq!(got.throttle_time_ms, throttle);
    if version >= 7 {
        assert_eq!((got.error_code, got.session_id), (error_code, session_id));
    }
    assert_eq!(got.responses.len(), topics.len());
    let content = |r: &FileRange| {
        let mut b = vec![0u8; r.len as usize];
        std::fs::File::from(r.file.try_clone().expect("dup"))
            .read_exact_at(&mut b, r.offset)
            .expect("range");
        b
    };
    for (t, gt) in topics.iter().zip(&got.responses) {
        if version >= 13 {
            assert_eq!(gt.topic_id.as_bytes(), &t.id);
        } else {
            assert_eq!(&*gt.topic.0, &*t.name);
        }
        assert_eq!(gt.partitions.len(), t.partitions.len());
        for (p, gp) in t.partitions.iter().zip(&gt.partitions) {
            assert_eq!(gp.partition_index, p.index);
            assert_eq!(gp.error_code, p.error_code);
            assert_eq!(gp.high_watermark, p.high_watermark);
            assert_eq!(gp.last_stable_offset, p.last_stable_offset);
            if version >= 5 {
                assert_eq!(gp.log_start_offset, p.log_start_offset);
            }
            if version >= 11 {
                assert_eq!(gp.preferred_read_replica.0, p.preferred_read_replica);
            }
            let aborted = gp.aborted_transactions.as_ref().map(|l| {
                l.iter()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect::<Vec<_>>()
            });
            assert_eq!(aborted, p.aborted);
            let records = gp.records.as_ref().map(|b| b.to_vec()).unwrap_or_default();
            assert_eq!(records, p.records.as_ref().map(content).unwrap_or_default());
            if version >= 12 {
                let (l, e) = p.current_leader.unwrap_or((-1, -1));
                assert_eq!(
                    (
                        gp.current_leader.leader_id.0,
                        gp.current_leader.leader_epoch
                    ),
                    (l, e)
                );
            }
        }
    }
    if version >= 16 {
        let got: Vec<_> = got
            .node_endpoints
            .iter()
            .map(|n| {
                (
                    n.node_id.0,
                    n.host.to_string(),
                    n.port,
                    n.rack.as_ref().map(|r| r.to_string()),
                )
            })
            .collect();
        let want: Vec<_> = endpoints
            .iter()
            .map(|n| (n.id, n.host.clone(), n.port, n.rack.clone()))
            .collect();
        assert_eq!(got, want);
    }
}

/// Seeds: every version with a few topics and partitions, records, leaders, aborts.
pub fn seeds() -> Vec<Vec<u8>> {
    (0..13u8)
        .map(|v| {
            let mut s = vec![v, 0, 0, 0, 0, 3, 0, 9, 0, 0, 0, 7, 0, 0, 0, 2];
            s.extend((0..200u8).map(|i| i.wrapping_mul(37).wrapping_add(v)));
            s
        })
        .collect()
}
