//! Record batches built once and patched per send, so the load generator is never the
//! bottleneck: each record's value starts with its sequence number and send time (for
//! verification and end-to-end latency), the header gets the send time, and the CRC-32C is
//! recomputed. Compressed batches cannot be patched in place; they are encoded per send
//! with kafka-protocol's encoder (compression then costs client CPU, as in a real client).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use runnel_record::builder::BatchBuilder;
use runnel_record::Records;

/// The producer fields of an idempotent or transactional producer's batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerFields {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

/// The smallest value: sequence u64 + send time in ns i64.
pub const MIN_RECORD_BYTES: usize = 16;

pub struct BatchTemplate {
    bytes: Vec<u8>,
    value_positions: Vec<usize>,
    records: usize,
    record_bytes: usize,
    keyed: bool,
    compression: Compression,
}

pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => {
            return Err(format!(
                "unknown compression {s:?}: none, gzip, snappy, lz4 or zstd"
            ))
        }
    })
}

fn value(seq: u64, now_ns: i64, len: usize) -> Vec<u8> {
    let mut v = vec![b'x'; len];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..16].copy_from_slice(&now_ns.to_be_bytes());
    v
}

fn key(seq: u64) -> [u8; 8] {
    // 1000 distinct keys, fixed length so the template's layout never changes.
    (seq % 1000).to_be_bytes()
}

/// (sequence, send time in ns since the epoch) from a record value written by this tool.
pub fn parse_value(v: &[u8]) -> Option<(u64, i64)> {
    if v.len() < MIN_RECORD_BYTES {
        return None;
    }
    Some((
        u64::from_be_bytes(v[..8].try_into().ok()?),
        i64::from_be_bytes(v[8..16].try_into().ok()?),
    ))
}

impl BatchTemplate {
    pub fn new(records: usize, record_bytes: usize, keyed: bool, compression: Compression) -> Self {
        let record_bytes = record_bytes.max(MIN_RECORD_BYTES);
        let mut b = BatchBuilder::new(0);
        for i in 0..records {
            let v = value(i as u64, 0, record_bytes);
            let k = key(i as u64);
            b.append(0, keyed.then_some(&k[..]), Some(&v), &[]);
        }
        let bytes = b.build();
        let base = bytes.as_ptr() as usize;
        let value_positions = Records::new(&bytes[runnel_record::HEADER_LEN..])
            .flatten()
            .map(|r| r.value.expect("values are set").as_ptr() as usize - base)
            .collect();
        BatchTemplate {
            bytes,
            value_positions,
            records,
            record_bytes,
            keyed,
            compression,
        }
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// The batch for records `first_seq..first_seq + records`, sent at `now_ns`.
    pub fn fill(&mut self, first_seq: u64, now_ns: i64) -> Bytes {
        self.fill_as(first_seq, now_ns, None)
    }

    /// [`BatchTemplate::fill`] as an idempotent or transactional producer's batch.
    pub fn fill_as(
        &mut self,
        first_seq: u64,
        now_ns: i64,
        producer: Option<ProducerFields>,
    ) -> Bytes {
        let now_ms = now_ns / 1_000_000;
        if self.compression != Compression::None {
            return self.encode_compressed(first_seq, now_ns, now_ms, producer);
        }
        let (pid, epoch, seq, attributes) = match producer {
            Some(p) => (
                p.id,
                p.epoch,
                p.base_sequence,
                if p.transactional { 0x10i16 } else { 0 },
            ),
            None => (-1, -1, -1, 0),
        };
        self.bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        self.bytes[43..51].copy_from_slice(&pid.to_be_bytes());
        self.bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        self.bytes[53..57].copy_from_slice(&seq.to_be_bytes());
        for (i, &pos) in self.value_positions.iter().enumerate() {
            self.bytes[pos..pos + 8].copy_from_slice(&(first_seq + i as u64).to_be_bytes());
            self.bytes[pos + 8..pos + 16].copy_from_slice(&now_ns.to_be_bytes());
        }
        self.bytes[27..35].copy_from_slice(&now_ms.to_be_bytes());
        self.bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
        runnel_record::set_crc(&mut self.bytes);
        Bytes::copy_from_slice(&self.bytes)
    }

    fn encode_compressed(
        &self,
        first_seq: u64,
        now_ns: i64,
        now_ms: i64,
        producer: Option<ProducerFields>,
    ) -> Bytes {
        let records: Vec<Record> = (0..self.records)
            .map(|i| {
                let seq = first_seq + i as u64;
                Record {
                    transactional: producer.is_some_and(|p| p.transactional),
                    control: false,
                    partition_leader_epoch: -1,
                    producer_id: producer.map_or(-1, |p| p.id),
                    producer_epoch: producer.map_or(-1, |p| p.epoch),
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    // kafka-protocol puts records in one batch while offset - sequence stays
                    // constant; without a producer this keeps the batch's base sequence at -1.
                    sequence: producer.map_or(-1, |p| p.base_sequence) + i as i32,
                    timestamp: now_ms,
                    key: self.keyed.then(|| Bytes::copy_from_slice(&key(seq))),
                    value: Some(Bytes::from(value(seq, now_ns, self.record_bytes))),
                    headers: Default::default(),
                    delete_horizon: false,
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            },
        )
        .expect("encoding a record batch");
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_batches_validate_and_carry_their_sequences() {
        for compression in ["none", "gzip", "lz4", "zstd", "snappy"] {
            let mut t = BatchTemplate::new(10, 100, true, parse_compression(compression).unwrap());
            let b = t.fill(500, 1_700_000_000_123_456_789);
            let h = runnel_record::validate(&b).unwrap_or_else(|e| panic!("{compression}: {e}"));
            assert_eq!(h.record_count, 10);
            assert_eq!(h.base_timestamp, 1_700_000_000_123);
            if compression == "none" {
                let seqs: Vec<u64> = Records::new(&b[runnel_record::HEADER_LEN..])
                    .flatten()
                    .map(|r| parse_value(r.value.unwrap()).unwrap().0)
                    .collect();
                assert_eq!(seqs, (500..510).collect::<Vec<_>>());
            }
        }
    }
}
