//! Batches produced by a real encoder (kafka-protocol's) for every codec: `validate` accepts
//! them, the header reads back what was encoded, `Records` yields the encoded records, and the
//! in-place rewrites leave batches that an independent decoder (which checks the CRC) accepts.

mod common;

use common::*;
use kafka_protocol::records::{Compression as KCompression, TimestampType as KTimestampType};
use runnel_record::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, validate, verify_stored,
    BatchHeader, Compression, Records, TimestampType, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};

fn expected_header(specs: &[Spec], batch: &[u8], codec: KCompression, producer: Producer) {
    let header = validate(batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
    let min_ts = specs.iter().map(|s| s.timestamp).min().unwrap();
    let max_ts = specs.iter().map(|s| s.timestamp).max().unwrap();
    let n = specs.len() as i32;
    assert_eq!(
        header,
        BatchHeader {
            base_offset: 0,
            batch_length: (batch.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: -1,
            magic: MAGIC_V2,
            crc: crc_of(batch),
            attributes: codec as i16 | if producer.transactional { 0x10 } else { 0 },
            last_offset_delta: n - 1,
            base_timestamp: min_ts,
            max_timestamp: max_ts,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            base_sequence: producer.base_sequence,
            record_count: n,
        },
        "{codec:?}"
    );
    assert_eq!(header.compression(), Ok(runnel_codec(codec)));
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert_eq!(header.is_transactional(), producer.transactional);
    assert!(!header.is_control());
    assert_eq!(header.has_producer_id(), producer.id != -1);
    assert_eq!(header.total_len(), batch.len());
    assert_eq!(header.last_offset(), i64::from(n - 1));
    assert_eq!(header.next_offset(), i64::from(n));
    assert_eq!(verify_stored(batch), Ok(header));
}

#[test]
fn encoder_batches_of_every_codec_validate_with_the_encoded_header() {
    let specs = sample_specs();
    for codec in CODECS {
        let batch = encode(&specs, codec);
        expected_header(&specs, &batch, codec, IDEMPOTENT);
    }
}

#[test]
fn encoder_batches_without_producer_id_validate() {
    let specs = sample_specs();
    for codec in CODECS {
        let batch = encode_with(&specs, codec, PLAIN);
        expected_header(&specs, &batch, codec, PLAIN);
    }
}

#[test]
fn transactional_bit_is_read_from_attributes() {
    let specs = sample_specs();
    let producer = Producer {
        transactional: true,
        ..IDEMPOTENT
    };
    for codec in CODECS {
        let batch = encode_with(&specs, codec, producer);
        expected_header(&specs, &batch, codec, producer);
    }
}

#[test]
fn single_record_batches_of_every_codec_validate() {
    let specs = vec![Spec::new(None, None, T0)];
    for codec in CODECS {
        let batch = encode(&specs, codec);
        expected_header(&specs, &batch, codec, IDEMPOTENT);
    }
}

#[test]
fn compressed_fixtures_really_are_compressed() {
    // Guards the fixtures themselves: a compressed batch of the sample is smaller than the
    // uncompressed one (the 300-byte value compresses), so the codec really ran.
    let plain = sample_batch();
    for codec in &CODECS[1..] {
        let batch = encode(&sample_specs(), *codec);
        assert!(
            batch.len() < plain.len(),
            "{codec:?}: {} >= {}",
            batch.len(),
            plain.len()
        );
    }
}

#[test]
fn records_yields_exactly_the_encoded_keys_values_and_headers() {
    let specs = sample_specs();
    let batch = sample_batch();
    let min_ts = specs.iter().map(|s| s.timestamp).min().unwrap();
    let records: Vec<_> = Records::new(&batch[HEADER_LEN..])
        .collect::<Result<_, _>>()
        .expect("records parse");
    assert_eq!(records.len(), specs.len());
    for (i, (record, spec)) in records.iter().zip(&specs).enumerate() {
        assert_eq!(record.attributes, 0, "record {i}");
        assert_eq!(record.offset_delta, i as i32, "record {i}");
        assert_eq!(
            record.timestamp_delta,
            spec.timestamp - min_ts,
            "record {i}"
        );
        assert_eq!(record.key, spec.key.as_deref(), "record {i}");
        assert_eq!(record.value, spec.value.as_deref(), "record {i}");
        let headers: Vec<(&[u8], Option<&[u8]>)> =
            record.headers.iter().map(|h| (h.key, h.value)).collect();
        let expected: Vec<(&[u8], Option<&[u8]>)> = spec
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
            .collect();
        assert_eq!(headers, expected, "record {i}");
    }
}

#[test]
fn records_borrow_from_the_batch_bytes() {
    let batch = sample_batch();
    let range = batch.as_ptr_range();
    for record in Records::new(&batch[HEADER_LEN..]) {
        let record = record.unwrap();
        for part in [record.key, record.value].into_iter().flatten() {
            assert!(range.contains(&part.as_ptr()) || part.is_empty());
        }
    }
}

#[test]
fn kafka_protocol_decoder_checks_the_crc() {
    // The round-trip tests below lean on kafka-protocol's decoder rejecting a bad CRC; make
    // sure it does, for every codec, whichever covered byte is damaged.
    for codec in CODECS {
        let batch = encode(&sample_specs(), codec);
        assert!(kdecode(&batch).is_ok(), "{codec:?}");
        for at in [
            AT_CRC,
            AT_ATTRIBUTES + 1,
            AT_PRODUCER_ID + 3,
            batch.len() - 1,
        ] {
            let mut damaged = batch.clone();
            damaged[at] ^= 0x01;
            let err = kdecode(&damaged).expect_err("damaged batch decodes");
            assert!(
                err.contains("Cyclic redundancy check failed"),
                "{codec:?} @{at}: {err}"
            );
        }
    }
}

#[test]
fn kafka_protocol_decodes_fixtures_to_the_encoded_records() {
    let specs = sample_specs();
    for codec in CODECS {
        let batch = encode(&specs, codec);
        let set = kdecode(&batch).unwrap();
        assert_eq!(set.compression, codec);
        assert_eq!(set.records, krecords(&specs, IDEMPOTENT), "{codec:?}");
    }
}

#[test]
fn assigned_offsets_and_epoch_keep_the_crc_valid_for_every_codec() {
    let specs = sample_specs();
    let base = 1_000_000_007i64;
    let epoch = 42;
    for codec in CODECS {
        let original = encode(&specs, codec);
        let mut batch = original.clone();
        set_base_offset(&mut batch, base);
        set_partition_leader_epoch(&mut batch, epoch);

        // Only bytes 0..8 and 12..16 changed; nothing under the CRC moved.
        assert_eq!(batch[AT_BATCH_LENGTH..AT_LEADER_EPOCH], original[8..12]);
        assert_eq!(batch[AT_MAGIC..], original[AT_MAGIC..]);
        assert_eq!(get_i64(&batch, AT_BASE_OFFSET), base);
        assert_eq!(get_i32(&batch, AT_LEADER_EPOCH), epoch);

        let header = validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(header.base_offset, base);
        assert_eq!(header.partition_leader_epoch, epoch);
        assert_eq!(header.last_offset(), base + specs.len() as i64 - 1);
        assert_eq!(header.next_offset(), base + specs.len() as i64);
        assert_eq!(verify_stored(&batch), Ok(header));

        let set = kdecode(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        let expected: Vec<_> = krecords(&specs, IDEMPOTENT)
            .into_iter()
            .map(|mut r| {
                r.offset += base;
                r.partition_leader_epoch = epoch;
                r
            })
            .collect();
        assert_eq!(set.records, expected, "{codec:?}");
    }
}

#[test]
fn log_append_time_recomputes_the_crc_for_every_codec() {
    let specs = sample_specs();
    let stamp = T0 + 60_000;
    for codec in CODECS {
        let original = encode(&specs, codec);
        let before = validate(&original).unwrap();
        let mut batch = original.clone();
        set_log_append_time(&mut batch, stamp);

        assert_ne!(
            get_u32(&batch, AT_CRC),
            before.crc,
            "{codec:?}: CRC not rewritten"
        );
        assert_eq!(get_u32(&batch, AT_CRC), crc_of(&batch), "{codec:?}");
        // Only the timestamp-type bit, maxTimestamp and the CRC changed.
        assert_eq!(batch[..AT_CRC], original[..AT_CRC]);
        assert_eq!(
            batch[AT_LAST_OFFSET_DELTA..AT_MAX_TIMESTAMP],
            original[AT_LAST_OFFSET_DELTA..AT_MAX_TIMESTAMP]
        );
        assert_eq!(batch[AT_PRODUCER_ID..], original[AT_PRODUCER_ID..]);

        let header = validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, stamp);
        assert_eq!(header.base_timestamp, before.base_timestamp);
        assert_eq!(header.attributes, before.attributes | 0x08);
        assert_eq!(header.compression(), Ok(runnel_codec(codec)));
        assert_eq!(verify_stored(&batch), Ok(header));

        let set = kdecode(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(set.records.len(), specs.len());
        for (record, expected) in set.records.iter().zip(krecords(&specs, IDEMPOTENT)) {
            assert_eq!(record.timestamp_type, KTimestampType::LogAppend);
            assert_eq!(record.key, expected.key);
            assert_eq!(record.value, expected.value);
            assert_eq!(record.headers, expected.headers);
        }
    }
}

#[test]
fn log_append_time_keeps_transactional_bit_and_is_idempotent() {
    let producer = Producer {
        transactional: true,
        ..IDEMPOTENT
    };
    let mut batch = encode_with(&sample_specs(), KCompression::Lz4, producer);
    set_log_append_time(&mut batch, T0 + 1);
    let once = batch.clone();
    set_log_append_time(&mut batch, T0 + 1);
    assert_eq!(batch, once);
    let header = validate(&batch).unwrap();
    assert!(header.is_transactional());
    assert_eq!(header.compression(), Ok(Compression::Lz4));
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    kdecode(&batch).unwrap();
}

#[test]
fn offsets_then_log_append_time_in_either_order_give_the_same_bytes() {
    for codec in CODECS {
        let mut a = encode(&sample_specs(), codec);
        let mut b = a.clone();
        set_base_offset(&mut a, 77);
        set_partition_leader_epoch(&mut a, 3);
        set_log_append_time(&mut a, T0 + 5);
        set_log_append_time(&mut b, T0 + 5);
        set_partition_leader_epoch(&mut b, 3);
        set_base_offset(&mut b, 77);
        assert_eq!(a, b, "{codec:?}");
        validate(&a).unwrap();
        let set = kdecode(&a).unwrap();
        assert_eq!(set.records[0].offset, 77);
    }
}

#[test]
fn batches_without_timestamps_validate() {
    // NO_TIMESTAMP (-1) everywhere is how a client without timestamps encodes a batch.
    let specs = vec![
        Spec::new(Some(b"a"), Some(b"1"), -1),
        Spec::new(Some(b"b"), Some(b"2"), -1),
    ];
    for codec in CODECS {
        let batch = encode(&specs, codec);
        let header = validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(header.base_timestamp, -1);
        assert_eq!(header.max_timestamp, -1);
    }
}

#[test]
fn log_append_time_earlier_than_a_skewed_producers_timestamps_still_validates() {
    // A producer whose clock runs ahead writes baseTimestamp later than the broker's append
    // time; the stamped batch is still what Kafka stores and serves, so it must stay valid.
    let specs = sample_specs();
    for codec in CODECS {
        let mut batch = encode(&specs, codec);
        set_log_append_time(&mut batch, T0);
        let header = validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert!(header.max_timestamp < header.base_timestamp);
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        kdecode(&batch).unwrap();
    }
}

#[test]
fn log_append_time_on_a_batch_without_timestamps_validates() {
    let specs = vec![Spec::new(Some(b"a"), Some(b"1"), -1)];
    let mut batch = encode(&specs, KCompression::None);
    set_log_append_time(&mut batch, T0);
    let header = validate(&batch).unwrap();
    assert_eq!((header.base_timestamp, header.max_timestamp), (-1, T0));
}

#[test]
fn base_offset_at_the_top_of_the_range_does_not_overflow_offset_arithmetic() {
    // baseOffset is outside the CRC, so any value validates; last/next offset wrap like
    // Kafka's Java longs instead of panicking.
    let mut batch = sample_batch();
    set_base_offset(&mut batch, i64::MAX);
    let header = validate(&batch).unwrap();
    assert_eq!(header.base_offset, i64::MAX);
    assert_eq!(header.last_offset(), i64::MAX.wrapping_add(4));
    assert_eq!(header.next_offset(), i64::MAX.wrapping_add(5));
    set_base_offset(&mut batch, i64::MAX - 4);
    let header = validate(&batch).unwrap();
    assert_eq!(header.last_offset(), i64::MAX);
    assert_eq!(header.next_offset(), i64::MIN);
}
