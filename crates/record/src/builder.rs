//! Builds RecordBatch v2 bytes the way a producer does (uncompressed). Used by the load
//! generator and by tests, and by the broker for what it writes itself (committed offsets,
//! transaction state and markers); it never rebuilds a producer's batches.

use crate::{HEADER_LEN, LOG_OVERHEAD, MAGIC_V2, NO_PRODUCER_ID};

/// Accumulates records, then [`BatchBuilder::build`]s one batch with a valid CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
}

/// A record header for [`BatchBuilder::append`].
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

impl BatchBuilder {
    /// A batch whose timestamps are deltas from `base_timestamp` (the first record's).
    pub fn new(base_timestamp: i64) -> Self {
        BatchBuilder {
            records: Vec::new(),
            count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
        }
    }

    /// Marks the batch as part of its producer's transaction.
    pub fn transactional(mut self) -> Self {
        self.attributes |= crate::header::ATTR_TRANSACTIONAL;
        self
    }

    /// Marks the batch as a control batch (a transaction marker).
    pub fn control(mut self) -> Self {
        self.attributes |= crate::header::ATTR_CONTROL;
        self
    }

    /// Marks the batch as an idempotent producer's.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the built batch will take.
    pub fn size(&self) -> usize {
        HEADER_LEN + self.records.len()
    }

    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes: unused
        put_varlong(&mut body, timestamp - self.base_timestamp);
        put_varlong(&mut body, i64::from(self.count));
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(&mut body, Some(k));
            put_bytes(&mut body, *v);
        }
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The batch, baseOffset 0 and partitionLeaderEpoch -1, as a producer sends it.
    pub fn build(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.size());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((self.size() - LOG_OVERHEAD) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&self.attributes.to_be_bytes()); // uncompressed, CreateTime
        b.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&b[crate::OFF_ATTRIBUTES..]);
        b[crate::OFF_CRC..crate::OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_validate_and_read_back() {
        let mut b = BatchBuilder::new(1000).producer(7, 1, 40);
        b.append(1000, Some(b"k"), Some(b"v1"), &[(b"h", Some(b"x"))]);
        b.append(998, None, None, &[]);
        b.append(1005, Some(b""), Some(&[9; 300]), &[]);
        let bytes = b.build();
        assert_eq!(bytes.len(), b.size());
        let h = crate::validate(&bytes).unwrap();
        assert_eq!(
            (h.record_count, h.base_timestamp, h.max_timestamp),
            (3, 1000, 1005)
        );
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 40)
        );
        let recs: Vec<_> = crate::Records::new(&bytes[HEADER_LEN..])
            .map(Result::unwrap)
            .collect();
        assert_eq!(recs[0].headers[0].value, Some(&b"x"[..]));
        assert_eq!(recs[1].timestamp_delta, -2);
        assert_eq!(recs[2].value.unwrap().len(), 300);
    }
}
