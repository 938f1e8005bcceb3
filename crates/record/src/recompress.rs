//! Recompression for a topic's `compression.type`: the one place the broker inflates a batch.
//!
//! When a topic names a codec (not `producer`) and a producer's batch uses another, Kafka's
//! broker rewrites the batch with the topic's codec, and so does this: the records are
//! inflated (bounded, so a small batch cannot expand into gigabytes), their framing checked
//! against the header, and deflated again under a copy of the original header (offsets,
//! timestamps, producer id, epoch and sequence kept) with the codec bits and the CRC
//! changed. Everything else in the broker carries batches as they came.

use crate::{set_crc, BatchError, BatchHeader, Compression, HEADER_LEN, LOG_OVERHEAD};
use crate::{OFF_ATTRIBUTES, OFF_BATCH_LENGTH};
use std::borrow::Cow;
use std::io::{Read, Write};

/// The codec a topic asks for, with its level (Kafka's compression.<codec>.level; None:
/// Kafka's default for the codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub level: Option<i32>,
}

/// Rewrites `batch` (validated already) with `to`'s codec; None when it already uses it.
/// `max_inflated` bounds the uncompressed records.
pub fn recompress(
    batch: &[u8],
    header: &BatchHeader,
    to: Codec,
    max_inflated: usize,
) -> Result<Option<Vec<u8>>, BatchError> {
    let from = header.compression()?;
    if from == to.compression {
        return Ok(None);
    }
    let records = inflate(from, &batch[HEADER_LEN..], max_inflated)?;
    crate::check_records(&records, header.record_count)?;
    // The codec writes after a copy of the header, into the batch it returns.
    let mut out = deflate(to, &records, batch[..HEADER_LEN].to_vec())?;
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::Inflate {
            reason: "recompressed batch is too large".into(),
        })?;
    out[OFF_BATCH_LENGTH..OFF_BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[OFF_ATTRIBUTES], out[OFF_ATTRIBUTES + 1]]);
    let attributes = (attributes & !0x07) | to.compression as i16;
    out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    set_crc(&mut out);
    Ok(Some(out))
}

fn bad(what: &str, e: impl std::fmt::Display) -> BatchError {
    BatchError::Inflate {
        reason: format!("{what}: {e}"),
    }
}

/// xerial's snappy framing (snappy-java's SnappyOutputStream, what the Java client writes):
/// this header, then blocks of (u32 compressed length, raw snappy block).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size.
const SNAPPY_BLOCK: usize = 32 * 1024;

/// Reads at most `max` bytes from `r`; more is an error.
fn read_bounded(r: impl Read, max: usize, what: &str) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(what, e))?;
    if out.len() > max {
        return Err(BatchError::InflatedTooLarge { max });
    }
    Ok(out)
}

fn inflate(from: Compression, data: &[u8], max: usize) -> Result<Cow<'_, [u8]>, BatchError> {
    inflate_owned(from, data, max).map(|v| v.map_or(Cow::Borrowed(data), Cow::Owned))
}

/// The inflated records; None for uncompressed ones (the caller uses them in place).
pub(crate) fn inflate_owned(
    from: Compression,
    data: &[u8],
    max: usize,
) -> Result<Option<Vec<u8>>, BatchError> {
    let inflated = match from {
        Compression::None => return Ok(None),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), max, "gzip"),
        Compression::Lz4 => {
            let d = lz4::Decoder::new(data).map_err(|e| bad("lz4", e))?;
            read_bounded(d, max, "lz4")
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(data).map_err(|e| bad("zstd", e))?;
            // A frame may ask for a window of up to 128 MiB (zstd's default limit), which the
            // decoder allocates before producing a byte: no more than the inflation bound.
            d.window_log_max(26).map_err(|e| bad("zstd", e))?;
            read_bounded(d, max, "zstd")
        }
        Compression::Snappy => {
            let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), BatchError> {
                let n = snap::raw::decompress_len(block).map_err(|e| bad("snappy", e))?;
                if out.len() + n > max {
                    return Err(BatchError::InflatedTooLarge { max });
                }
                let start = out.len();
                out.resize(start + n, 0);
                snap::raw::Decoder::new()
                    .decompress(block, &mut out[start..])
                    .map_err(|e| bad("snappy", e))?;
                Ok(())
            };
            let mut out = Vec::new();
            if data.starts_with(XERIAL_MAGIC) {
                let mut rest = data
                    .get(16..)
                    .ok_or_else(|| bad("snappy", "short xerial header"))?;
                while !rest.is_empty() {
                    let len = rest
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .ok_or_else(|| bad("snappy", "truncated xerial block length"))?;
                    let block = rest
                        .get(4..4 + len)
                        .ok_or_else(|| bad("snappy", "truncated xerial block"))?;
                    raw(block, &mut out)?;
                    rest = &rest[4 + len..];
                }
            } else {
                raw(data, &mut out)?;
            }
            Ok(out)
        }
    };
    inflated.map(Some)
}

/// Appends `records` compressed with `to` to `out` (which holds the batch header).
pub(crate) fn deflate(to: Codec, records: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>, BatchError> {
    let fail = |e: std::io::Error| bad("compress", e);
    match to.compression {
        Compression::None => {
            out.extend_from_slice(records);
            Ok(out)
        }
        Compression::Gzip => {
            // Kafka's default gzip level (-1) is deflate's default, 6.
            let level = to.level.filter(|l| (1..=9).contains(l)).unwrap_or(6) as u32;
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            e.write_all(records).map_err(fail)?;
            e.finish().map_err(fail)
        }
        Compression::Lz4 => {
            // Kafka's default compression.lz4.level is 9; its framing, independent blocks.
            let level = to.level.unwrap_or(9).clamp(1, 17) as u32;
            let mut e = lz4::EncoderBuilder::new()
                .level(level)
                .block_mode(lz4::BlockMode::Independent)
                .build(out)
                .map_err(fail)?;
            e.write_all(records).map_err(fail)?;
            let (out, r) = e.finish();
            r.map_err(fail)?;
            Ok(out)
        }
        Compression::Zstd => {
            zstd::stream::copy_encode(records, &mut out, to.level.unwrap_or(3)).map_err(fail)?;
            Ok(out)
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for block in records.chunks(SNAPPY_BLOCK) {
                let c = enc.compress_vec(block).map_err(|e| bad("snappy", e))?;
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
    }
}
