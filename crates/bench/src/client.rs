//! A minimal blocking Kafka client: one connection per thread, kafka-protocol's message
//! structs, and partition leaders from Metadata (so any Kafka-compatible cluster works).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub type Error = String;

pub struct Conn {
    stream: TcpStream,
    pub addr: String,
    corr: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn, Error> {
        let mut last = None;
        for a in std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    return Ok(Conn {
                        stream: s,
                        addr: addr.to_string(),
                        corr: 0,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(format!(
            "cannot connect to {addr}: {}",
            last.map_or("no address".into(), |e| e.to_string())
        ))
    }

    /// Encodes a request frame without sending it (for pipelining and resending).
    pub fn frame<T: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<Bytes, Error> {
        self.corr = self.corr.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("runnel-bench")));
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .and_then(|_| body.encode(&mut buf, version))
            .map_err(|e| format!("cannot encode {key:?}: {e}"))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }

    pub fn send_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(frame)
            .map_err(|e| format!("{}: {e}", self.addr))
    }

    fn read_size(&mut self) -> Result<usize, Error> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("{}: connection lost: {e}", self.addr))?;
        let n = i32::from_be_bytes(size);
        usize::try_from(n).map_err(|_| format!("{}: bad response size {n}", self.addr))
    }

    /// Reads one response frame (size prefix removed) into `buf`.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let n = self.read_size()?;
        buf.resize(n, 0);
        self.stream
            .read_exact(buf)
            .map_err(|e| format!("{}: connection lost: {e}", self.addr))
    }

    /// Reads one response frame as `Bytes` (no copy: fetched records stay slices of it).
    pub fn recv_bytes(&mut self) -> Result<Bytes, Error> {
        let n = self.read_size()?;
        let mut buf = BytesMut::zeroed(n);
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| format!("{}: connection lost: {e}", self.addr))?;
        Ok(buf.freeze())
    }

    pub fn decode_bytes<T: Decodable + HeaderVersion>(
        mut b: Bytes,
        version: i16,
    ) -> Result<T, Error> {
        ResponseHeader::decode(&mut b, T::header_version(version))
            .and_then(|_| T::decode(&mut b, version))
            .map_err(|e| format!("cannot decode response: {e}"))
    }

    pub fn decode<T: Decodable + HeaderVersion>(buf: &[u8], version: i16) -> Result<T, Error> {
        let mut b = Bytes::copy_from_slice(buf);
        ResponseHeader::decode(&mut b, T::header_version(version))
            .and_then(|_| T::decode(&mut b, version))
            .map_err(|e| format!("cannot decode response: {e}"))
    }

    pub fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, body: &Req) -> Result<Resp, Error>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let f = self.frame(key, version, body)?;
        self.send_frame(&f)?;
        let mut buf = Vec::new();
        self.recv_into(&mut buf)?;
        Conn::decode(&buf, version)
    }
}

/// Where each partition of a topic is led, and the brokers' addresses.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub partitions: Vec<i32>,
    pub leaders: HashMap<i32, String>,
}

/// Creates `topic` with `partitions` partitions (CreateTopics; an existing topic is fine).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), Error> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut c = Conn::connect(bootstrap)?;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req)?;
    match r.topics.first().map(|t| t.error_code) {
        Some(0) | Some(36) => Ok(()), // created, or already there
        Some(e) => Err(format!("cannot create topic {topic}: error {e}")),
        None => Err(format!("cannot create topic {topic}: empty answer")),
    }
}

/// Metadata for `topic`. With `just_created`, waits (10 s at most) for the topic to be known
/// with its leaders: Kafka's brokers learn of a new topic a little after CreateTopics answers.
pub fn topic_layout(
    bootstrap: &str,
    topic: &str,
    just_created: bool,
) -> Result<TopicLayout, Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match topic_layout_once(bootstrap, topic) {
            Err(_) if just_created && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn topic_layout_once(bootstrap: &str, topic: &str) -> Result<TopicLayout, Error> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut c = Conn::connect(bootstrap)?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let r: MetadataResponse = c.call(ApiKey::Metadata, 9, &req)?;
    let brokers: HashMap<i32, String> = r
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let t = r
        .topics
        .first()
        .ok_or_else(|| format!("no metadata for topic {topic}"))?;
    if t.error_code != 0 {
        return Err(format!(
            "topic {topic}: error {} (does it exist? create it, or pass --create)",
            t.error_code
        ));
    }
    let mut partitions = Vec::new();
    let mut leaders = HashMap::new();
    for p in &t.partitions {
        partitions.push(p.partition_index);
        let addr = brokers
            .get(&p.leader_id.0)
            .cloned()
            .ok_or_else(|| format!("partition {} has no leader", p.partition_index))?;
        leaders.insert(p.partition_index, addr);
    }
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(format!("topic {topic} has no partitions"));
    }
    Ok(TopicLayout {
        partitions,
        leaders,
    })
}

/// (log start, high watermark) of each partition (ListOffsets earliest and latest).
pub fn watermarks(layout: &TopicLayout, topic: &str) -> Result<HashMap<i32, (i64, i64)>, Error> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut out = HashMap::new();
    for &p in &layout.partitions {
        let mut c = Conn::connect(&layout.leaders[&p])?;
        let mut pair = [0i64; 2];
        for (i, ts) in [-2i64, -1].into_iter().enumerate() {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_timestamp(ts)])]);
            // A partition just created may not have its leader ready yet (Kafka elects it
            // after CreateTopics answers): retriable errors are retried for a while.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let offset = loop {
                let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 4, &req)?;
                let part = &r.topics[0].partitions[0];
                match part.error_code {
                    0 => break part.offset,
                    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER
                    3 | 5 | 6 if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(100))
                    }
                    e => return Err(format!("ListOffsets {topic}-{p}: error {e}")),
                }
            };
            pair[i] = offset;
        }
        out.insert(p, (pair[0], pair[1]));
    }
    Ok(out)
}
