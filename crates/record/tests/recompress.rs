//! Recompression (a topic's compression.type) from every codec to every codec: the result
//! decodes with kafka-protocol's decoder (an independent implementation) to the same
//! records, with the header's producer fields and timestamps kept.

mod common;

use common::*;
use runnel_record::recompress::{recompress, Codec};
use runnel_record::{validate, BatchError, Compression};

fn codec(c: Compression) -> Codec {
    Codec {
        compression: c,
        level: None,
    }
}

#[test]
fn every_codec_to_every_codec_keeps_the_records_and_the_header() {
    let specs = sample_specs();
    for from in CODECS {
        let batch = encode(&specs, from);
        let header = validate(&batch).unwrap();
        let original = kdecode(&batch).unwrap();
        for to in CODECS {
            let target = codec(runnel_codec(to));
            let out = recompress(&batch, &header, target, 1 << 20).unwrap();
            let Some(out) = out else {
                assert_eq!(from, to, "only the same codec is left alone");
                continue;
            };
            let h = validate(&out).unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
            assert_eq!(h.compression().unwrap(), runnel_codec(to));
            assert_eq!(
                (
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.record_count
                ),
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.record_count
                )
            );
            assert_eq!(
                (h.base_timestamp, h.max_timestamp),
                (header.base_timestamp, header.max_timestamp)
            );
            let decoded = kdecode(&out).unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
            assert_eq!(decoded.records.len(), original.records.len());
            for (a, b) in decoded.records.iter().zip(&original.records) {
                assert_eq!(
                    (
                        &a.key,
                        &a.value,
                        &a.headers,
                        a.timestamp,
                        a.offset,
                        a.sequence
                    ),
                    (
                        &b.key,
                        &b.value,
                        &b.headers,
                        b.timestamp,
                        b.offset,
                        b.sequence
                    )
                );
            }
        }
    }
}

#[test]
fn levels_apply_and_inflation_is_bounded() {
    let specs: Vec<Spec> = (0..50)
        .map(|i| Spec::new(Some(b"k"), Some(&[b'x'; 4000]), T0 + i))
        .collect();
    let batch = encode(&specs, kafka_protocol::records::Compression::None);
    let header = validate(&batch).unwrap();
    let fast = recompress(
        &batch,
        &header,
        Codec {
            compression: Compression::Zstd,
            level: Some(1),
        },
        1 << 20,
    )
    .unwrap()
    .unwrap();
    assert!(
        fast.len() < batch.len() / 10,
        "zstd shrinks repetitive records"
    );
    // The other way, with a bound below what the records inflate to: refused.
    let h = validate(&fast).unwrap();
    let err = recompress(&fast, &h, codec(Compression::None), 100_000).unwrap_err();
    assert_eq!(err, BatchError::InflatedTooLarge { max: 100_000 });
    assert_eq!(err.kafka_error_code(), 10, "MESSAGE_TOO_LARGE");
    // Garbage where compressed records should be: CORRUPT_MESSAGE.
    let mut broken = fast.clone();
    for b in &mut broken[61..] {
        *b ^= 0x5a;
    }
    runnel_record::set_crc(&mut broken);
    let h = validate(&broken).unwrap();
    let err = recompress(&broken, &h, codec(Compression::Gzip), 1 << 20).unwrap_err();
    assert_eq!(err.kafka_error_code(), 2, "{err}");
}
