//! Every `BatchError` variant, produced by damaging a real (kafka-protocol encoded) batch, and
//! the Kafka error code a produce response would carry for it. Where the damage sits under the
//! CRC and a later check is the target, the batch is re-framed (CRC, and batchLength when the
//! size changed) so that exactly the intended damage remains.

mod common;

use common::*;
use kafka_protocol::records::Compression as KCompression;
use runnel_record::{validate, verify_stored, BatchError, Batches, HEADER_LEN, NO_TIMESTAMP};

// Kafka's error codes, restated from the protocol rather than taken from the crate.
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_TIMESTAMP: i16 = 32;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

const SAMPLE_COUNT: i32 = 5;

#[track_caller]
fn rejected(batch: &[u8]) -> BatchError {
    match validate(batch) {
        Ok(header) => panic!("validate accepted a damaged batch: {header:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn bad_record_reason(batch: &[u8]) -> &'static str {
    match rejected(batch) {
        e @ BatchError::BadRecord { reason } => {
            assert_eq!(e.kafka_error_code(), INVALID_RECORD);
            reason
        }
        e => panic!("expected BadRecord, got {e:?}"),
    }
}

/// The sample batch, uncompressed, and its record layout.
fn sample() -> (Vec<u8>, Vec<Layout>) {
    let batch = sample_batch();
    let layout = layouts(&batch);
    assert_eq!(layout.len(), SAMPLE_COUNT as usize);
    validate(&batch).expect("fixture is valid");
    (batch, layout)
}

// ---- magic ----------------------------------------------------------------------------------

#[test]
fn magic_zero_or_one_is_unsupported_magic_invalid_record() {
    for magic in [0i8, 1] {
        let mut batch = sample_batch();
        batch[AT_MAGIC] = magic as u8; // not under the CRC: nothing to re-frame
        let err = rejected(&batch);
        assert_eq!(err, BatchError::UnsupportedMagic { magic });
        assert_eq!(err.kafka_error_code(), INVALID_RECORD);
        assert_eq!(verify_stored(&batch), Err(err.clone()));
        let mut batches = Batches::new(&batch);
        assert_eq!(batches.next(), Some(Err(err)));
        assert_eq!(batches.next(), None);
        assert_eq!(batches.position(), 0);
    }
}

#[test]
fn magic_above_two_or_negative_is_unsupported_magic() {
    for magic in [3i8, 127, -1, i8::MIN] {
        let mut batch = encode(&sample_specs(), KCompression::Gzip);
        batch[AT_MAGIC] = magic as u8;
        let err = rejected(&batch);
        assert_eq!(err, BatchError::UnsupportedMagic { magic });
        assert_eq!(err.kafka_error_code(), INVALID_RECORD);
    }
}

/// A legacy message set entry (offset, size, crc, magic, attributes, [timestamp], key, value).
fn legacy_message(magic: i8, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    let mut body = vec![magic as u8, 0];
    if magic == 1 {
        body.extend_from_slice(&T0.to_be_bytes());
    }
    match key {
        Some(k) => {
            body.extend_from_slice(&(k.len() as i32).to_be_bytes());
            body.extend_from_slice(k);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
    body.extend_from_slice(value);
    let crc = kafka_protocol::records::IEEE.checksum(&body);
    let mut out = 0i64.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn legacy_v0_and_v1_messages_shorter_than_a_v2_header_are_unsupported_magic_not_short_header() {
    // An old client's whole message set can be shorter than 61 bytes: the magic byte at 16 is
    // what must decide the error, so the client hears "unsupported", not "corrupt".
    for magic in [0i8, 1] {
        let message = legacy_message(magic, None, b"v");
        assert!(message.len() < HEADER_LEN, "{}", message.len());
        assert_eq!(message[AT_MAGIC] as i8, magic);
        let err = rejected(&message);
        assert_eq!(err, BatchError::UnsupportedMagic { magic });
        assert_eq!(err.kafka_error_code(), INVALID_RECORD);
        assert_eq!(Batches::new(&message).next(), Some(Err(err)));
    }
}

// ---- framing: short header, truncation, batchLength ----------------------------------------

#[test]
fn buffer_shorter_than_the_header_is_short_header_corrupt_message() {
    let batch = sample_batch();
    for len in 0..HEADER_LEN {
        let err = rejected(&batch[..len]);
        assert_eq!(
            err,
            BatchError::ShortHeader {
                needed: HEADER_LEN,
                available: len
            }
        );
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
        assert_eq!(verify_stored(&batch[..len]), Err(err));
    }
}

#[test]
fn batch_cut_short_after_the_header_is_length_mismatch_corrupt_message() {
    for codec in CODECS {
        let batch = encode(&sample_specs(), codec);
        let batch_length = get_i32(&batch, AT_BATCH_LENGTH);
        for len in HEADER_LEN..batch.len() {
            let err = rejected(&batch[..len]);
            assert_eq!(
                err,
                BatchError::LengthMismatch {
                    batch_length,
                    available: len
                }
            );
            assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
            assert_eq!(verify_stored(&batch[..len]), Err(err));
        }
    }
}

#[test]
fn trailing_partial_batch_is_truncated_corrupt_message() {
    let batch = sample_batch();
    let mut buf = batch.clone();
    buf.extend_from_slice(&batch[..batch.len() - 1]);
    let mut batches = Batches::new(&buf);
    assert!(matches!(batches.next(), Some(Ok((0, _)))));
    let err = batches.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        BatchError::Truncated {
            needed: batch.len(),
            available: batch.len() - 1
        }
    );
    assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
    assert_eq!(batches.next(), None);
    assert_eq!(batches.position(), batch.len());
}

#[test]
fn batch_length_below_the_minimum_is_bad_batch_length_corrupt_message() {
    for batch_length in [48, 12, 0, -1, -49, i32::MIN] {
        let mut batch = sample_batch();
        put_i32(&mut batch, AT_BATCH_LENGTH, batch_length); // not under the CRC
        let err = rejected(&batch);
        assert_eq!(err, BatchError::BadBatchLength { batch_length });
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
        assert_eq!(verify_stored(&batch), Err(err.clone()));
        assert_eq!(Batches::new(&batch).next(), Some(Err(err)));
    }
}

#[test]
fn minimum_batch_length_frames_a_header_only_batch() {
    // 49 is the smallest legal batchLength: a bare header. Framed, CRC-checked, and accepted by
    // verify_stored (an empty batch compaction could leave), but not by validate.
    let mut batch = sample_batch()[..HEADER_LEN].to_vec();
    set_count(&mut batch, 0);
    reframe(&mut batch);
    assert_eq!(get_i32(&batch, AT_BATCH_LENGTH), 49);
    let header = verify_stored(&batch).expect("empty batch is a well-framed stored batch");
    assert_eq!(header.record_count, 0);
    assert_eq!(header.total_len(), HEADER_LEN);
    assert_eq!(
        Batches::new(&batch).collect::<Vec<_>>(),
        vec![Ok((0, header))]
    );
    assert_eq!(rejected(&batch), BatchError::NoRecords { record_count: 0 });
}

#[test]
fn batch_length_disagreeing_with_the_buffer_is_length_mismatch_corrupt_message() {
    let batch = sample_batch();
    let actual = get_i32(&batch, AT_BATCH_LENGTH);
    for batch_length in [actual + 1, actual - 1, 49, i32::MAX] {
        let mut damaged = batch.clone();
        put_i32(&mut damaged, AT_BATCH_LENGTH, batch_length);
        let err = rejected(&damaged);
        assert_eq!(
            err,
            BatchError::LengthMismatch {
                batch_length,
                available: batch.len()
            }
        );
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
        assert_eq!(verify_stored(&damaged), Err(err));
    }
}

#[test]
fn bytes_after_the_batch_are_length_mismatch() {
    // validate takes exactly one batch; a second one (or a stray byte) after it is not ignored.
    let batch = sample_batch();
    for extra in [vec![0u8], batch.clone()] {
        let mut buf = batch.clone();
        buf.extend_from_slice(&extra);
        let err = rejected(&buf);
        assert_eq!(
            err,
            BatchError::LengthMismatch {
                batch_length: get_i32(&batch, AT_BATCH_LENGTH),
                available: buf.len()
            }
        );
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
    }
}

// ---- CRC ------------------------------------------------------------------------------------

#[test]
fn crc_flip_in_records_is_corrupt_message() {
    for codec in CODECS {
        let batch = encode(&sample_specs(), codec);
        let stored = get_u32(&batch, AT_CRC);
        for at in [HEADER_LEN, (HEADER_LEN + batch.len()) / 2, batch.len() - 1] {
            let mut damaged = batch.clone();
            damaged[at] ^= 0x20;
            let err = rejected(&damaged);
            assert_eq!(
                err,
                BatchError::CrcMismatch {
                    stored,
                    computed: crc_of(&damaged)
                },
                "{codec:?} @{at}"
            );
            assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
            assert_eq!(verify_stored(&damaged), Err(err));
            // Splitting does not read CRCs: the batch is still framed where it was.
            assert!(matches!(Batches::new(&damaged).next(), Some(Ok((0, _)))));
        }
    }
}

#[test]
fn crc_flip_in_any_covered_header_byte_is_corrupt_message() {
    let batch = sample_batch();
    let stored = get_u32(&batch, AT_CRC);
    for at in AT_ATTRIBUTES..HEADER_LEN {
        let mut damaged = batch.clone();
        damaged[at] ^= 0x80;
        let err = rejected(&damaged);
        assert_eq!(
            err,
            BatchError::CrcMismatch {
                stored,
                computed: crc_of(&damaged)
            },
            "byte {at}"
        );
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
    }
}

#[test]
fn damaged_stored_crc_is_corrupt_message() {
    let batch = sample_batch();
    for at in AT_CRC..AT_CRC + 4 {
        let mut damaged = batch.clone();
        damaged[at] ^= 0x01;
        let err = rejected(&damaged);
        assert_eq!(
            err,
            BatchError::CrcMismatch {
                stored: get_u32(&damaged, AT_CRC),
                computed: crc_of(&batch)
            }
        );
        assert_eq!(err.kafka_error_code(), CORRUPT_MESSAGE);
    }
}

// ---- codec ----------------------------------------------------------------------------------

#[test]
fn codec_5_6_7_is_unsupported_compression_type() {
    for codec in [KCompression::None, KCompression::Zstd] {
        for unknown in [5i16, 6, 7] {
            let mut batch = encode(&sample_specs(), codec);
            let attributes = get_i16(&batch, AT_ATTRIBUTES);
            put_i16(&mut batch, AT_ATTRIBUTES, (attributes & !0x07) | unknown);

            // Without a fresh CRC the damage is caught as corruption first.
            assert!(matches!(rejected(&batch), BatchError::CrcMismatch { .. }));

            fix_crc(&mut batch);
            let err = rejected(&batch);
            assert_eq!(
                err,
                BatchError::UnsupportedCompression {
                    codec: unknown as u8
                }
            );
            assert_eq!(err.kafka_error_code(), UNSUPPORTED_COMPRESSION_TYPE);
            // verify_stored checks framing and CRC only.
            let header = verify_stored(&batch).unwrap();
            assert_eq!(header.compression(), Err(err));
        }
    }
}

#[test]
fn attribute_bits_above_the_codec_do_not_change_the_codec() {
    // Bits 3 (timestamp type), 4 (transactional), 5 (control) and 6 (delete horizon) are not
    // part of the codec.
    let mut batch = encode(&sample_specs(), KCompression::Snappy);
    put_i16(&mut batch, AT_ATTRIBUTES, 0x70 | 2);
    fix_crc(&mut batch);
    let header = validate(&batch).unwrap();
    assert_eq!(header.compression(), Ok(runnel_record::Compression::Snappy));
    assert!(header.is_transactional());
    assert!(header.is_control());
}

// ---- record count ---------------------------------------------------------------------------

#[test]
fn record_count_zero_is_no_records_invalid_record() {
    for codec in [KCompression::None, KCompression::Gzip] {
        for count in [0, -1, i32::MIN] {
            let mut batch = encode(&sample_specs(), codec);
            put_i32(&mut batch, AT_RECORD_COUNT, count);
            fix_crc(&mut batch);
            let err = rejected(&batch);
            assert_eq!(
                err,
                BatchError::NoRecords {
                    record_count: count
                },
                "{codec:?}"
            );
            assert_eq!(err.kafka_error_code(), INVALID_RECORD);
        }
    }
}

#[test]
fn compressed_record_counts_beyond_what_the_bytes_could_hold_are_invalid_record() {
    for codec in [
        KCompression::Gzip,
        KCompression::Snappy,
        KCompression::Lz4,
        KCompression::Zstd,
    ] {
        let batch = encode(&sample_specs(), codec);
        let compressed = batch.len() - runnel_record::HEADER_LEN;
        let max = runnel_record::max_records(runnel_codec(codec), compressed);
        for (count, ok) in [
            (SAMPLE_COUNT, true),
            (max as i32, true),
            (max as i32 + 1, false),
        ] {
            let mut batch = batch.clone();
            put_i32(&mut batch, AT_RECORD_COUNT, count);
            put_i32(&mut batch, AT_LAST_OFFSET_DELTA, count - 1);
            fix_crc(&mut batch);
            match validate(&batch) {
                Ok(_) => assert!(ok, "{codec:?} {count}: accepted"),
                Err(e) => {
                    assert!(!ok, "{codec:?} {count}: {e}");
                    assert_eq!(
                        e,
                        BatchError::ImplausibleRecordCount {
                            record_count: count,
                            compressed,
                            max
                        }
                    );
                    assert_eq!(e.kafka_error_code(), INVALID_RECORD);
                }
            }
        }
    }
    // Uncompressed: the records are walked, so the bound is never what refuses.
    assert_eq!(
        runnel_record::max_records(runnel_record::Compression::None, 61),
        9
    );
}

#[test]
fn empty_batch_with_last_offset_delta_minus_one_is_no_records() {
    let mut batch = sample_batch();
    set_count(&mut batch, 0);
    fix_crc(&mut batch);
    let err = rejected(&batch);
    assert_eq!(err, BatchError::NoRecords { record_count: 0 });
    assert_eq!(err.kafka_error_code(), INVALID_RECORD);
}

#[test]
fn last_offset_delta_not_record_count_minus_one_is_record_count_mismatch() {
    for codec in [KCompression::None, KCompression::Lz4] {
        for last_offset_delta in [SAMPLE_COUNT, SAMPLE_COUNT - 2, 0, -1, i32::MAX, i32::MIN] {
            let mut batch = encode(&sample_specs(), codec);
            put_i32(&mut batch, AT_LAST_OFFSET_DELTA, last_offset_delta);
            fix_crc(&mut batch);
            let err = rejected(&batch);
            assert_eq!(
                err,
                BatchError::RecordCountMismatch {
                    last_offset_delta,
                    record_count: SAMPLE_COUNT
                },
                "{codec:?}"
            );
            assert_eq!(err.kafka_error_code(), INVALID_RECORD);
        }
    }
}

#[test]
fn record_count_above_the_records_present_is_bad_record() {
    let mut batch = sample_batch();
    set_count(&mut batch, SAMPLE_COUNT + 1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "fewer records than recordCount");
}

#[test]
fn record_count_below_the_records_present_is_bad_record() {
    let mut batch = sample_batch();
    set_count(&mut batch, SAMPLE_COUNT - 1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "more records than recordCount");
}

#[test]
fn record_cut_out_without_updating_the_count_is_bad_record() {
    let (mut batch, layout) = sample();
    let last = layout[4];
    splice(&mut batch, last.start..last.end, &[]);
    assert_eq!(bad_record_reason(&batch), "fewer records than recordCount");
}

#[test]
fn extra_well_formed_record_past_the_count_is_bad_record() {
    let (mut batch, _) = sample();
    let end = batch.len();
    let extra = raw_record(&record_body(0, 5, Some(b"k"), Some(b"v"), &[]), None);
    splice(&mut batch, end..end, &extra);
    assert_eq!(bad_record_reason(&batch), "more records than recordCount");
}

// ---- offset deltas --------------------------------------------------------------------------

#[test]
fn offset_delta_out_of_sequence_is_bad_offset_delta_invalid_record() {
    for (index, offset_delta) in [(1usize, 3i32), (0, -1), (0, 1), (4, 5), (2, 1)] {
        let (mut batch, layout) = sample();
        overwrite_varint(
            &mut batch,
            layout[index].offset_delta_at,
            offset_delta.into(),
        );
        fix_crc(&mut batch);
        let err = rejected(&batch);
        assert_eq!(
            err,
            BatchError::BadOffsetDelta {
                index: index as i32,
                offset_delta
            }
        );
        assert_eq!(err.kafka_error_code(), INVALID_RECORD);
    }
}

#[test]
fn swapped_records_are_bad_offset_delta() {
    let (batch, layout) = sample();
    let (a, b) = (layout[2], layout[3]);
    let mut swapped = batch[..a.start].to_vec();
    swapped.extend_from_slice(&batch[b.start..b.end]);
    swapped.extend_from_slice(&batch[a.start..a.end]);
    swapped.extend_from_slice(&batch[b.end..]);
    reframe(&mut swapped);
    assert_eq!(
        rejected(&swapped),
        BatchError::BadOffsetDelta {
            index: 2,
            offset_delta: 3
        }
    );
}

// ---- record framing -------------------------------------------------------------------------

#[test]
fn record_length_running_past_the_batch_is_bad_record() {
    let (mut batch, layout) = sample();
    let last = layout[4];
    overwrite_varint(&mut batch, last.start, last.length + 1);
    fix_crc(&mut batch);
    assert_eq!(
        bad_record_reason(&batch),
        "record length runs past the batch"
    );
}

#[test]
fn record_length_longer_than_its_fields_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[0].start, layout[0].length + 1);
    fix_crc(&mut batch);
    assert_eq!(
        bad_record_reason(&batch),
        "record length does not match its fields"
    );
}

#[test]
fn record_length_shorter_than_its_fields_is_bad_record() {
    // Record 0 ends with a null header value (varint -1): one byte short, it runs out.
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[0].start, layout[0].length - 1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "varint runs past the record");
}

#[test]
fn negative_record_length_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[2].start, -1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "negative record length");
}

#[test]
fn key_length_past_the_record_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[0].key_len_at, 60);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "field runs past the record");
}

#[test]
fn key_length_below_minus_one_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[0].key_len_at, -2);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "negative length");
}

#[test]
fn value_length_past_the_record_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[3].value_len_at, 50);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "field runs past the record");
}

#[test]
fn null_header_key_is_bad_record() {
    let (mut batch, layout) = sample();
    let at = layout[0]
        .first_header_key_len_at
        .expect("record 0 has headers");
    overwrite_varint(&mut batch, at, -1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "null header key");
}

#[test]
fn negative_header_count_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[1].header_count_at, -1);
    fix_crc(&mut batch);
    assert_eq!(bad_record_reason(&batch), "negative header count");
}

#[test]
fn header_count_larger_than_the_record_can_hold_is_bad_record() {
    let (mut batch, layout) = sample();
    overwrite_varint(&mut batch, layout[1].header_count_at, 63);
    fix_crc(&mut batch);
    assert_eq!(
        bad_record_reason(&batch),
        "header count runs past the record"
    );
}

#[test]
fn huge_header_count_is_bad_record_without_allocating_for_it() {
    let (mut batch, layout) = sample();
    let r = layout[1];
    let mut body = batch[r.attributes_at..r.header_count_at].to_vec();
    body.extend(varint(i64::from(i32::MAX)));
    splice(&mut batch, r.start..r.end, &raw_record(&body, None));
    assert_eq!(
        bad_record_reason(&batch),
        "header count runs past the record"
    );
}

#[test]
fn varint_longer_than_ten_bytes_is_bad_record() {
    let (mut batch, layout) = sample();
    let r = layout[4];
    let mut body = vec![0u8];
    body.extend_from_slice(&[0xff; 10]); // timestamp delta that never ends
    body.extend_from_slice(&[0x00; 8]);
    splice(&mut batch, r.start..r.end, &raw_record(&body, None));
    assert_eq!(bad_record_reason(&batch), "varint too long");
}

#[test]
fn offset_delta_varint_overflowing_32_bits_is_bad_record() {
    let (mut batch, layout) = sample();
    let r = layout[4];
    let mut body = vec![0u8, 0x00];
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
    body.extend_from_slice(&[0x01, 0x01, 0x00]);
    splice(&mut batch, r.start..r.end, &raw_record(&body, None));
    assert_eq!(bad_record_reason(&batch), "varint overflows 32 bits");
}

#[test]
fn offset_delta_varint_of_six_bytes_is_bad_record() {
    let (mut batch, layout) = sample();
    let r = layout[4];
    let mut body = vec![0u8, 0x00];
    body.extend_from_slice(&[0x88, 0x80, 0x80, 0x80, 0x80, 0x00]);
    body.extend_from_slice(&[0x01, 0x01, 0x00]);
    splice(&mut batch, r.start..r.end, &raw_record(&body, None));
    assert_eq!(bad_record_reason(&batch), "varint too long");
}

#[test]
fn record_length_varint_cut_by_the_batch_end_is_bad_record() {
    let (mut batch, _) = sample();
    let end = batch.len();
    splice(&mut batch, end..end, &[0x80]);
    assert_eq!(bad_record_reason(&batch), "varint runs past the record");
}

#[test]
fn garbage_after_the_last_record_is_bad_record() {
    for (garbage, reason) in [
        (&[0x00][..], "field runs past the record"),
        (&[0x02, 0x00][..], "varint runs past the record"),
        (&[0x01][..], "negative record length"),
        (&[0x7e][..], "record length runs past the batch"),
    ] {
        let (mut batch, _) = sample();
        let end = batch.len();
        splice(&mut batch, end..end, garbage);
        assert_eq!(bad_record_reason(&batch), reason, "{garbage:?}");
    }
}

#[test]
fn compressed_records_are_not_walked() {
    // The broker never inflates: garbage in place of compressed records passes validate as
    // long as the CRC covers it (the producer's codec library is the judge of that payload).
    let mut batch = encode(&sample_specs(), KCompression::Zstd);
    let end = batch.len();
    batch[HEADER_LEN..end].fill(0xff);
    fix_crc(&mut batch);
    assert!(validate(&batch).is_ok());
}

// ---- timestamps -----------------------------------------------------------------------------

#[test]
fn bad_timestamps_are_invalid_timestamp() {
    let base = T0 + 100; // the sample's smallest timestamp
    for codec in [KCompression::None, KCompression::Snappy] {
        for (b, m) in [
            (base, base - 1),     // max before base
            (base, NO_TIMESTAMP), // base without max
            (-2, T0),             // negative base other than "none"
            (-5, -5),             // both negative, not "none"
            (i64::MIN, i64::MAX), // nonsense
            (NO_TIMESTAMP, -2),   // negative max other than "none"
        ] {
            let mut batch = encode(&sample_specs(), codec);
            put_i64(&mut batch, AT_BASE_TIMESTAMP, b);
            put_i64(&mut batch, AT_MAX_TIMESTAMP, m);
            fix_crc(&mut batch);
            let err = rejected(&batch);
            assert_eq!(
                err,
                BatchError::BadTimestamps { base: b, max: m },
                "{codec:?}"
            );
            assert_eq!(err.kafka_error_code(), INVALID_TIMESTAMP);
        }
    }
}

#[test]
fn equal_and_zero_timestamps_are_fine() {
    // A first record without a timestamp bounds nothing: librdkafka writes (-1, 0) for a
    // batch without timestamps and (-1, max) when later records have one.
    for (b, m) in [
        (0, 0),
        (T0, T0),
        (0, T0),
        (NO_TIMESTAMP, NO_TIMESTAMP),
        (NO_TIMESTAMP, 0),
        (NO_TIMESTAMP, T0),
    ] {
        let mut batch = sample_batch();
        put_i64(&mut batch, AT_BASE_TIMESTAMP, b);
        put_i64(&mut batch, AT_MAX_TIMESTAMP, m);
        fix_crc(&mut batch);
        validate(&batch).unwrap_or_else(|e| panic!("({b}, {m}): {e}"));
    }
}

#[test]
fn log_append_time_batch_without_a_stamp_is_invalid_timestamp() {
    for (b, m) in [(T0, NO_TIMESTAMP), (T0, -7), (-3, T0)] {
        let mut batch = sample_batch();
        let attributes = get_i16(&batch, AT_ATTRIBUTES);
        put_i16(&mut batch, AT_ATTRIBUTES, attributes | 0x08);
        put_i64(&mut batch, AT_BASE_TIMESTAMP, b);
        put_i64(&mut batch, AT_MAX_TIMESTAMP, m);
        fix_crc(&mut batch);
        let err = rejected(&batch);
        assert_eq!(err, BatchError::BadTimestamps { base: b, max: m });
        assert_eq!(err.kafka_error_code(), INVALID_TIMESTAMP);
    }
}

// ---- order of checks and the code table -----------------------------------------------------

#[test]
fn crc_is_checked_before_every_rule_under_it() {
    // Several rule breaks at once, CRC left stale: the batch is corrupt, not invalid.
    let mut batch = sample_batch();
    put_i16(&mut batch, AT_ATTRIBUTES, 7);
    put_i32(&mut batch, AT_RECORD_COUNT, 0);
    put_i64(&mut batch, AT_MAX_TIMESTAMP, -9);
    assert!(matches!(rejected(&batch), BatchError::CrcMismatch { .. }));
    // Re-framed, the codec is the first rule to fail, then the count, then the timestamps.
    fix_crc(&mut batch);
    assert!(matches!(
        rejected(&batch),
        BatchError::UnsupportedCompression { codec: 7 }
    ));
    put_i16(&mut batch, AT_ATTRIBUTES, 0);
    fix_crc(&mut batch);
    assert!(matches!(rejected(&batch), BatchError::NoRecords { .. }));
    set_count(&mut batch, SAMPLE_COUNT);
    fix_crc(&mut batch);
    assert!(matches!(rejected(&batch), BatchError::BadTimestamps { .. }));
}

#[test]
fn every_variant_maps_to_the_kafka_error_code() {
    let table = [
        (
            BatchError::ShortHeader {
                needed: 61,
                available: 1,
            },
            CORRUPT_MESSAGE,
        ),
        (
            BatchError::Truncated {
                needed: 100,
                available: 99,
            },
            CORRUPT_MESSAGE,
        ),
        (
            BatchError::BadBatchLength { batch_length: 0 },
            CORRUPT_MESSAGE,
        ),
        (
            BatchError::LengthMismatch {
                batch_length: 60,
                available: 70,
            },
            CORRUPT_MESSAGE,
        ),
        (
            BatchError::CrcMismatch {
                stored: 1,
                computed: 2,
            },
            CORRUPT_MESSAGE,
        ),
        (BatchError::UnsupportedMagic { magic: 1 }, INVALID_RECORD),
        (
            BatchError::UnsupportedCompression { codec: 5 },
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        (BatchError::NoRecords { record_count: 0 }, INVALID_RECORD),
        (
            BatchError::RecordCountMismatch {
                last_offset_delta: 3,
                record_count: 3,
            },
            INVALID_RECORD,
        ),
        (
            BatchError::BadOffsetDelta {
                index: 1,
                offset_delta: 3,
            },
            INVALID_RECORD,
        ),
        (BatchError::BadRecord { reason: "x" }, INVALID_RECORD),
        (
            BatchError::BadTimestamps { base: 2, max: 1 },
            INVALID_TIMESTAMP,
        ),
    ];
    for (err, code) in table {
        assert_eq!(err.kafka_error_code(), code, "{err:?}");
        assert!(!err.to_string().is_empty());
    }
}
