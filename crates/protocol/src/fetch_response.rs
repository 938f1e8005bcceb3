//! The Fetch response, written by hand around spliced file ranges.
//!
//! kafka-protocol would need the record bytes in memory; here each partition's records field
//! is only a length prefix followed by a [`Part::File`], so the segment bytes go from the page
//! cache to the socket without passing through user space. Every size (the frame size, the
//! compact lengths of flexible versions) is known before the first byte is sent. The layout
//! follows Kafka's FetchResponse.json for versions 4-16; tests check every version byte for
//! byte against kafka-protocol's encoder.

use crate::wire::{put_uvarint, Part, Response};
use crate::TopicId;
use bytes::{BufMut, BytesMut};
use std::os::fd::OwnedFd;
use std::sync::Arc;

pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 16;

/// A range of a segment file holding whole batches.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<OwnedFd>,
    pub offset: u64,
    pub len: u64,
    /// The topic and partition the bytes belong to: a failed read of them takes that
    /// partition offline.
    pub source: Option<(Arc<str>, i32)>,
}

#[derive(Debug, Clone)]
pub struct PartitionOut {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Option<FileRange>,
    /// With NOT_LEADER_OR_FOLLOWER or a leader epoch error: the current (leader, epoch),
    /// sent from v12 as the CurrentLeader tagged field (KIP-951).
    pub current_leader: Option<(i32, i32)>,
    /// The replica the consumer should fetch from instead (KIP-392, v11+), or -1.
    pub preferred_read_replica: i32,
    /// A read_committed fetch answered without error: its aborted transactions (producer
    /// id, first offset), a list even when empty, as Kafka sends; None is sent as null, as
    /// Kafka does for read_uncommitted and for errors.
    pub aborted: Option<Vec<(i64, i64)>>,
}

/// A broker a client is pointed to (v16's NodeEndpoints, KIP-951).
#[derive(Debug, Clone)]
pub struct NodeEndpoint {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TopicOut {
    pub name: Arc<str>,
    pub id: TopicId,
    pub partitions: Vec<PartitionOut>,
}

/// Builds the parts of a whole Fetch response frame (size prefix, header, body), with the
/// endpoints of the leaders its partitions' CurrentLeader fields name (sent from v16).
pub fn encode(
    correlation_id: i32,
    version: i16,
    throttle_time_ms: i32,
    error_code: i16,
    session_id: i32,
    topics: &[TopicOut],
    endpoints: &[NodeEndpoint],
) -> Response {
    debug_assert!((MIN_VERSION..=MAX_VERSION).contains(&version));
    let flexible = version >= 12;
    let mut w = Writer::default();
    let b = &mut w.buf;
    b.put_i32(0); // frame size, patched below
    b.put_i32(correlation_id);
    if flexible {
        b.put_u8(0); // response header v1: no tagged fields
    }
    b.put_i32(throttle_time_ms);
    if version >= 7 {
        b.put_i16(error_code);
        b.put_i32(session_id);
    }
    w.array_len(topics.len(), flexible);
    for t in topics {
        if version >= 13 {
            w.buf.put_slice(&t.id);
        } else {
            w.string(&t.name, flexible);
        }
        w.array_len(t.partitions.len(), flexible);
        for p in &t.partitions {
            let b = &mut w.buf;
            b.put_i32(p.index);
            b.put_i16(p.error_code);
            b.put_i64(p.high_watermark);
            b.put_i64(p.last_stable_offset);
            if version >= 5 {
                b.put_i64(p.log_start_offset);
            }
            // AbortedTransactions: a list for read_committed, else null (as Kafka).
            match (&p.aborted, flexible) {
                (Some(list), true) => put_uvarint(b, list.len() as u64 + 1),
                (Some(list), false) => b.put_i32(list.len() as i32),
                (None, true) => put_uvarint(b, 0),
                (None, false) => b.put_i32(-1),
            }
            for &(producer_id, first_offset) in p.aborted.iter().flatten() {
                b.put_i64(producer_id);
                b.put_i64(first_offset);
                if flexible {
                    put_uvarint(b, 0); // no tagged fields
                }
            }
            if version >= 11 {
                b.put_i32(p.preferred_read_replica);
            }
            let len = p.records.as_ref().map_or(0, |r| r.len);
            if flexible {
                put_uvarint(&mut w.buf, len + 1);
            } else {
                w.buf.put_i32(len as i32);
            }
            if let Some(r) = p.records.as_ref().filter(|r| r.len > 0) {
                w.file(r);
            }
            if flexible {
                match p.current_leader {
                    // One tagged field: tag 1, CurrentLeader (leader id, epoch, no tags).
                    Some((leader, epoch)) => {
                        let b = &mut w.buf;
                        b.put_u8(1);
                        b.put_u8(1);
                        b.put_u8(9);
                        b.put_i32(leader);
                        b.put_i32(epoch);
                        b.put_u8(0);
                    }
                    None => w.buf.put_u8(0),
                }
            }
        }
        if flexible {
            w.buf.put_u8(0); // topic tagged fields
        }
    }
    if version >= 16 && !endpoints.is_empty() {
        // One tagged field: tag 0, NodeEndpoints, its size first.
        let mut e = Writer::default();
        e.array_len(endpoints.len(), true);
        for n in endpoints {
            e.buf.put_i32(n.id);
            e.string(&n.host, true);
            e.buf.put_i32(n.port);
            match &n.rack {
                Some(r) => e.string(r, true),
                None => put_uvarint(&mut e.buf, 0),
            }
            e.buf.put_u8(0);
        }
        w.buf.put_u8(1);
        w.buf.put_u8(0);
        put_uvarint(&mut w.buf, e.buf.len() as u64);
        w.buf.put_slice(&e.buf);
    } else if flexible {
        w.buf.put_u8(0); // top-level tagged fields
    }
    w.finish()
}

#[derive(Default)]
struct Writer {
    done: Vec<PartBuf>,
    buf: BytesMut,
}

enum PartBuf {
    Bytes(BytesMut),
    File(FileRange),
}

impl Writer {
    fn array_len(&mut self, n: usize, flexible: bool) {
        if flexible {
            put_uvarint(&mut self.buf, n as u64 + 1);
        } else {
            self.buf.put_i32(n as i32);
        }
    }

    fn string(&mut self, s: &str, flexible: bool) {
        if flexible {
            put_uvarint(&mut self.buf, s.len() as u64 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn file(&mut self, r: &FileRange) {
        let head = std::mem::take(&mut self.buf);
        self.done.push(PartBuf::Bytes(head));
        self.done.push(PartBuf::File(r.clone()));
    }

    fn finish(mut self) -> Response {
        if !self.buf.is_empty() {
            let tail = std::mem::take(&mut self.buf);
            self.done.push(PartBuf::Bytes(tail));
        }
        let total: u64 = self
            .done
            .iter()
            .map(|p| match p {
                PartBuf::Bytes(b) => b.len() as u64,
                PartBuf::File(f) => f.len,
            })
            .sum();
        if let Some(PartBuf::Bytes(first)) = self.done.first_mut() {
            first[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
        }
        Response {
            parts: self
                .done
                .into_iter()
                .map(|p| match p {
                    PartBuf::Bytes(b) => Part::Bytes(b.freeze()),
                    PartBuf::File(f) => Part::File {
                        file: f.file,
                        offset: f.offset,
                        len: f.len,
                        source: f.source,
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch,
        NodeEndpoint as FetchNodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn flatten(resp: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &resp.parts {
            match p {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::File {
                    file, offset, len, ..
                } => {
                    let mut buf = vec![0u8; *len as usize];
                    // SAFETY: pread into a buffer of exactly `len` bytes that we own.
                    let n = unsafe {
                        libc::pread(
                            file.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            *offset as i64,
                        )
                    };
                    assert_eq!(n, *len as isize);
                    out.extend_from_slice(&buf);
                }
            }
        }
        out
    }

    #[test]
    fn every_version_matches_kafka_protocol_byte_for_byte() {
        let mut f = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        f.write_all(&content).unwrap();
        let file: Arc<OwnedFd> = Arc::new(f.into());
        let topics = vec![
            TopicOut {
                name: "orders".into(),
                id: [7; 16],
                partitions: vec![
                    PartitionOut {
                        index: 0,
                        error_code: 0,
                        high_watermark: 100,
                        last_stable_offset: 100,
                        log_start_offset: 3,
                        records: Some(FileRange {
                            file: file.clone(),
                            offset: 10,
                            len: 300,
                            source: None,
                        }),
                        current_leader: None,
                        preferred_read_replica: -1,
                        aborted: None,
                    },
                    PartitionOut {
                        index: 2,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: None,
                        current_leader: Some((3, 5)),
                        preferred_read_replica: 2,
                        aborted: None,
                    },
                ],
            },
            TopicOut {
                name: "x".into(),
                id: [9; 16],
                partitions: vec![PartitionOut {
                    index: 1,
                    error_code: 0,
                    high_watermark: 1 << 40,
                    last_stable_offset: 1 << 40,
                    log_start_offset: 0,
                    records: Some(FileRange {
                        file: file.clone(),
                        offset: 1000,
                        len: 4000,
                        source: None,
                    }),
                    current_leader: None,
                    preferred_read_replica: -1,
                    aborted: Some(vec![(7, 12), (9, 40)]),
                }],
            },
        ];
        let endpoints = [NodeEndpoint {
            id: 3,
            host: "10.0.0.3".into(),
            port: 9092,
            rack: Some("r1".into()),
        }];
        for version in MIN_VERSION..=MAX_VERSION {
            let ours = flatten(&encode(42, version, 0, 0, 0, &topics, &endpoints));
            let expected = FetchResponse::default().with_responses(
                topics
                    .iter()
                    .map(|t| {
                        let mut r = FetchableTopicResponse::default().with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let records = match &p.records {
                                        Some(r) => Bytes::copy_from_slice(
                                            &content
                                                [r.offset as usize..(r.offset + r.len) as usize],
                                        ),
                                        None => Bytes::new(),
                                    };
                                    let mut d = PartitionData::default();
                                    if let (Some((l, e)), true) = (p.current_leader, version >= 12)
                                    {
                                        d = d.with_current_leader(
                                            LeaderIdAndEpoch::default()
                                                .with_leader_id(BrokerId(l))
                                                .with_leader_epoch(e),
                                        );
                                    }
                                    if version >= 11 {
                                        d = d.with_preferred_read_replica(BrokerId(
                                            p.preferred_read_replica,
                                        ));
                                    }
                                    d.with_partition_index(p.index)
                                        .with_error_code(p.error_code)
                                        .with_high_watermark(p.high_watermark)
                                        .with_last_stable_offset(p.last_stable_offset)
                                        .with_log_start_offset(p.log_start_offset)
                                        .with_aborted_transactions(p.aborted.as_ref().map(|l| {
                                            l.iter()
                                                .map(|&(pid, first)| {
                                                    AbortedTransaction::default()
                                                        .with_producer_id(ProducerId(pid))
                                                        .with_first_offset(first)
                                                })
                                                .collect()
                                        }))
                                        .with_records(Some(records))
                                })
                                .collect(),
                        );
                        if version >= 13 {
                            r = r.with_topic_id(uuid::Uuid::from_bytes(t.id));
                        } else {
                            r = r.with_topic(TopicName(StrBytes::from_string(t.name.to_string())));
                        }
                        r
                    })
                    .collect(),
            );
            let expected = if version >= 16 {
                expected.with_node_endpoints(vec![FetchNodeEndpoint::default()
                    .with_node_id(BrokerId(3))
                    .with_host(StrBytes::from_static_str("10.0.0.3"))
                    .with_port(9092)
                    .with_rack(Some(StrBytes::from_static_str("r1")))])
            } else {
                expected
            };
            let hv = FetchResponse::header_version(version);
            let header = ResponseHeader::default().with_correlation_id(42);
            let mut buf = BytesMut::new();
            let size = header.compute_size(hv).unwrap() + expected.compute_size(version).unwrap();
            buf.put_i32(size as i32);
            header.encode(&mut buf, hv).unwrap();
            expected.encode(&mut buf, version).unwrap();
            assert_eq!(ours, buf.to_vec(), "fetch v{version}");
            // And it decodes, with nothing left over, to a response that encodes the same.
            let mut body = Bytes::from(ours.clone()).split_off(4);
            ResponseHeader::decode(&mut body, hv).unwrap();
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "fetch v{version}: trailing bytes");
            let mut again = BytesMut::new();
            decoded.encode(&mut again, version).unwrap();
            assert!(
                ours.ends_with(&again),
                "fetch v{version}: decode/encode round trip"
            );
        }
    }
}
