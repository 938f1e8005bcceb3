//! The records inside an uncompressed batch. Compressed batches are never inflated by the
//! broker; this walk exists to validate uncompressed producer batches and to find a record by
//! timestamp for ListOffsets.

use crate::builder::put_varlong;
use crate::BatchError;

/// One record, borrowing from the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<RecordHeader<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterator over the records section (bytes after the 61-byte header) of an uncompressed
/// batch. Ends after the first framing error.
pub struct Records<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(records: &'a [u8]) -> Self {
        Records {
            buf: records,
            failed: false,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let result = parse_record(self.buf);
        match result {
            Ok((record, used)) => {
                self.buf = &self.buf[used..];
                Some(Ok(record))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn bad(reason: &'static str) -> BatchError {
    BatchError::BadRecord { reason }
}

/// Like [`Records`], also giving each record's whole encoding (length prefix included), so
/// a rewriter can copy the records it keeps as they are.
pub struct RawRecords<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> RawRecords<'a> {
    pub fn new(records: &'a [u8]) -> Self {
        RawRecords {
            buf: records,
            failed: false,
        }
    }
}

impl<'a> Iterator for RawRecords<'a> {
    type Item = Result<(Record<'a>, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        match parse_record(self.buf) {
            Ok((record, used)) => {
                let raw = &self.buf[..used];
                self.buf = &self.buf[used..];
                Some(Ok((record, raw)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// `raw` (one record's encoding) with its timestamp delta replaced by `timestamp_delta`.
pub(crate) fn with_timestamp_delta(
    raw: &[u8],
    timestamp_delta: i64,
) -> Result<Vec<u8>, BatchError> {
    let mut cur = Cursor { buf: raw, pos: 0 };
    cur.varint()?; // length
    let attributes = cur.bytes(1)?[0];
    cur.varlong()?;
    let rest = &raw[cur.pos..];
    let mut body = Vec::with_capacity(rest.len() + 11);
    body.push(attributes);
    put_varlong(&mut body, timestamp_delta);
    body.extend_from_slice(rest);
    let mut out = Vec::with_capacity(body.len() + 5);
    put_varlong(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    Ok(out)
}

fn parse_record(buf: &[u8]) -> Result<(Record<'_>, usize), BatchError> {
    let mut cur = Cursor { buf, pos: 0 };
    let length = cur.varint()?;
    if length < 0 {
        return Err(bad("negative record length"));
    }
    let start = cur.pos;
    let end = start
        .checked_add(length as usize)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| bad("record length runs past the batch"))?;
    let mut body = Cursor {
        buf: &buf[..end],
        pos: start,
    };
    let attributes = body.bytes(1)?[0] as i8;
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let header_count = body.varint()?;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    // Each header takes at least two bytes, so a count larger than that bound is garbage and
    // must not drive an allocation.
    if header_count as usize > (end - body.pos) / 2 {
        return Err(bad("header count runs past the record"));
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let key = body
            .nullable_bytes()?
            .ok_or_else(|| bad("null header key"))?;
        let value = body.nullable_bytes()?;
        headers.push(RecordHeader { key, value });
    }
    if body.pos != end {
        return Err(bad("record length does not match its fields"));
    }
    Ok((
        Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        },
        end,
    ))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad("field runs past the record"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes.
    fn uvarint(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("varint runs past the record"))?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let v = self.uvarint(5)?;
        if v > u64::from(u32::MAX) {
            return Err(bad("varint overflows 32 bits"));
        }
        let v = v as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let v = self.uvarint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(bad("negative length")),
            n => self.bytes(n as usize).map(Some),
        }
    }
}
