//! Property tests: damage is always detected where the CRC covers it and harmless where it
//! does not, no input makes the parsers panic, and no truncation passes as a batch.

mod common;

use std::collections::HashSet;

use common::*;
use kafka_protocol::records::Compression as KCompression;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use runnel_record::{validate, verify_stored, BatchError, Batches, Records, HEADER_LEN};

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        proptest::option::of(vec(any::<u8>(), 0..40)),
        proptest::option::of(vec(any::<u8>(), 0..200)),
        vec(
            (
                "[a-z0-9._-]{0,10}",
                proptest::option::of(vec(any::<u8>(), 0..24)),
            ),
            0..4,
        ),
        prop_oneof![Just(T0), 0i64..(1 << 42)],
    )
        .prop_map(|(key, value, headers, timestamp)| {
            // Header keys are a map in kafka-protocol's record: keep the first of duplicates.
            let mut seen = HashSet::new();
            let headers = headers
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect();
            Spec {
                key,
                value,
                headers,
                timestamp,
            }
        })
}

fn arb_codec() -> impl Strategy<Value = KCompression> {
    prop_oneof![
        Just(KCompression::None),
        Just(KCompression::Gzip),
        Just(KCompression::Snappy),
        Just(KCompression::Lz4),
        Just(KCompression::Zstd),
    ]
}

/// (specs, codec, encoded batch)
fn arb_batch() -> impl Strategy<Value = (Vec<Spec>, KCompression, Vec<u8>)> {
    (vec(arb_spec(), 1..8), arb_codec()).prop_map(|(specs, codec)| {
        let batch = encode(&specs, codec);
        (specs, codec, batch)
    })
}

fn arb_plain_batch() -> impl Strategy<Value = Vec<u8>> {
    vec(arb_spec(), 1..6).prop_map(|specs| encode(&specs, KCompression::None))
}

/// Runs every parser over `bytes`; the point is that none of them panics. Also checks that
/// the entry points agree with each other where they must.
fn exercise(bytes: &[u8]) {
    let validated = validate(bytes);
    let stored = verify_stored(bytes);
    if let Ok(header) = &validated {
        assert_eq!(stored.as_ref(), Ok(header));
    }
    if let Ok(header) = &stored {
        touch(header);
        assert_eq!(header.total_len(), bytes.len());
        let items: Vec<_> = Batches::new(bytes).collect();
        assert_eq!(items, vec![Ok((0, *header))]);
    }
    let mut batches = Batches::new(bytes);
    let mut errors = 0;
    let mut last_end = 0;
    for item in batches.by_ref() {
        match item {
            Ok((at, header)) => {
                assert_eq!(errors, 0, "batch yielded after an error");
                touch(&header);
                assert_eq!(at, last_end);
                last_end = at + header.total_len();
                assert!(last_end <= bytes.len());
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1);
    assert_eq!(batches.position(), last_end);
    walk_records(bytes);
    if bytes.len() > HEADER_LEN {
        walk_records(&bytes[HEADER_LEN..]);
    }
}

/// Calls every header accessor (none may panic, whatever the field values).
fn touch(header: &runnel_record::BatchHeader) {
    let _ = (
        header.total_len(),
        header.last_offset(),
        header.next_offset(),
        header.compression(),
        header.timestamp_type(),
        header.is_transactional(),
        header.is_control(),
        header.has_producer_id(),
    );
}

/// Walks records; an error, if any, is the last item.
fn walk_records(bytes: &[u8]) -> usize {
    let mut ok = 0;
    let mut failed = false;
    for record in Records::new(bytes) {
        assert!(!failed, "record yielded after an error");
        match record {
            Ok(_) => ok += 1,
            Err(BatchError::BadRecord { .. }) => failed = true,
            Err(e) => panic!("Records yields only BadRecord errors, got {e:?}"),
        }
    }
    ok
}

/// If `validate` accepts an uncompressed batch, its records walk cleanly to recordCount with
/// consecutive offset deltas.
fn accepted_means_walkable(batch: &[u8]) {
    if let Ok(header) = validate(batch) {
        if header.compression() == Ok(runnel_record::Compression::None) {
            let deltas: Vec<i32> = Records::new(&batch[HEADER_LEN..])
                .map(|r| r.expect("accepted batch walks").offset_delta)
                .collect();
            assert_eq!(deltas, (0..header.record_count).collect::<Vec<_>>());
        }
    }
}

proptest! {
    #[test]
    fn encoded_batches_validate_and_uncompressed_records_round_trip(
        (specs, codec, batch) in arb_batch()
    ) {
        let header = validate(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(header.record_count as usize, specs.len());
        prop_assert_eq!(header.compression(), Ok(runnel_codec(codec)));
        prop_assert_eq!(header.base_timestamp, specs.iter().map(|s| s.timestamp).min().unwrap());
        prop_assert_eq!(header.max_timestamp, specs.iter().map(|s| s.timestamp).max().unwrap());
        if codec == KCompression::None {
            let records: Vec<_> = Records::new(&batch[HEADER_LEN..])
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(records.len(), specs.len());
            for (record, spec) in records.iter().zip(&specs) {
                prop_assert_eq!(record.key, spec.key.as_deref());
                prop_assert_eq!(record.value, spec.value.as_deref());
                prop_assert_eq!(record.timestamp_delta, spec.timestamp - header.base_timestamp);
                let headers: Vec<(&[u8], Option<&[u8]>)> =
                    record.headers.iter().map(|h| (h.key, h.value)).collect();
                let expected: Vec<(&[u8], Option<&[u8]>)> = spec
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                    .collect();
                prop_assert_eq!(headers, expected);
            }
        }
    }

    // (a) Any single-byte change under the CRC is caught, as a CRC mismatch.
    #[test]
    fn flipping_any_crc_covered_byte_fails_validation(
        (_specs, _codec, batch) in arb_batch(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let at = AT_ATTRIBUTES + at.index(batch.len() - AT_ATTRIBUTES);
        let mut damaged = batch.clone();
        damaged[at] ^= xor;
        let err = validate(&damaged).expect_err("damaged batch accepted");
        prop_assert!(matches!(err, BatchError::CrcMismatch { .. }), "{:?}", err);
        prop_assert_eq!(err.kafka_error_code(), 2);
        prop_assert!(verify_stored(&damaged).is_err());
    }

    // (a) Any single-byte change outside baseOffset and partitionLeaderEpoch (batchLength,
    // magic, the CRC itself, covered bytes) is caught.
    #[test]
    fn flipping_any_byte_but_offset_or_epoch_fails_validation(
        (_specs, _codec, batch) in arb_batch(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let candidates: Vec<usize> =
            (AT_BATCH_LENGTH..AT_LEADER_EPOCH).chain(AT_MAGIC..batch.len()).collect();
        let at = candidates[at.index(candidates.len())];
        let mut damaged = batch.clone();
        damaged[at] ^= xor;
        prop_assert!(validate(&damaged).is_err(), "byte {} ^ {:#x} accepted", at, xor);
        prop_assert!(verify_stored(&damaged).is_err());
    }

    // (a) baseOffset and partitionLeaderEpoch are outside the CRC: any change keeps the batch
    // valid and shows up only in those fields.
    #[test]
    fn flipping_a_base_offset_or_leader_epoch_byte_keeps_the_batch_valid(
        (_specs, _codec, batch) in arb_batch(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let candidates: Vec<usize> =
            (AT_BASE_OFFSET..AT_BATCH_LENGTH).chain(AT_LEADER_EPOCH..AT_MAGIC).collect();
        let at = candidates[at.index(candidates.len())];
        let before = validate(&batch).unwrap();
        let mut changed = batch.clone();
        changed[at] ^= xor;
        let after = validate(&changed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(after.base_offset, get_i64(&changed, AT_BASE_OFFSET));
        prop_assert_eq!(after.partition_leader_epoch, get_i32(&changed, AT_LEADER_EPOCH));
        let mut expected = before;
        expected.base_offset = after.base_offset;
        expected.partition_leader_epoch = after.partition_leader_epoch;
        prop_assert_eq!(after, expected);
        prop_assert!(kdecode(&changed).is_ok());
    }

    // baseOffset is not under the CRC, so a producer (or a flipped bit on disk) can put any
    // value there and the batch still validates: the header's offset arithmetic must not
    // panic on it, and wraps as Kafka's (Java long) arithmetic does.
    #[test]
    fn any_base_offset_validates_and_offset_arithmetic_never_panics(
        (specs, _codec, batch) in arb_batch(),
        base_offset in prop_oneof![Just(i64::MAX), Just(i64::MAX - 1), Just(i64::MIN), any::<i64>()],
    ) {
        let mut batch = batch;
        runnel_record::set_base_offset(&mut batch, base_offset);
        let header = validate(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let last = base_offset.wrapping_add(specs.len() as i64 - 1);
        prop_assert_eq!(header.last_offset(), last);
        prop_assert_eq!(header.next_offset(), last.wrapping_add(1));
    }

    // (b) Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..700)) {
        exercise(&bytes);
    }

    // (b) Bytes that start like a real batch (a prefix of its header, up to all of it) and
    // continue arbitrarily never panic.
    #[test]
    fn valid_header_prefix_then_arbitrary_bytes_never_panic(
        (_specs, _codec, batch) in arb_batch(),
        keep in 0usize..=HEADER_LEN,
        tail in vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = batch[..keep].to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
    }

    // (b) A real uncompressed header over arbitrary record bytes, re-framed so validation
    // gets past length and CRC into the record walk.
    #[test]
    fn reframed_arbitrary_records_never_panic(
        batch in arb_plain_batch(),
        records in vec(any::<u8>(), 0..400),
        count in 1i32..6,
    ) {
        let mut bytes = batch[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&records);
        set_count(&mut bytes, count);
        reframe(&mut bytes);
        exercise(&bytes);
        accepted_means_walkable(&bytes);
        let err = validate(&bytes).err();
        prop_assert!(
            !matches!(
                err,
                Some(
                    BatchError::CrcMismatch { .. }
                        | BatchError::LengthMismatch { .. }
                        | BatchError::ShortHeader { .. }
                )
            ),
            "{:?}",
            err
        );
    }

    // (b) A real uncompressed batch with a few record bytes overwritten and the CRC
    // recomputed: mostly well-formed input that reaches deep into the record parser.
    #[test]
    fn reframed_mutated_records_never_panic(
        batch in arb_plain_batch(),
        edits in vec((any::<Index>(), any::<u8>()), 1..5),
    ) {
        let mut bytes = batch.clone();
        for (at, value) in edits {
            let at = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
            bytes[at] = value;
        }
        fix_crc(&mut bytes);
        exercise(&bytes);
        accepted_means_walkable(&bytes);
    }

    // (b) Records over arbitrary bytes: no panic, an error only at the end.
    #[test]
    fn records_over_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        walk_records(&bytes);
    }

    // (c) No truncation of a valid batch validates.
    #[test]
    fn truncated_valid_batch_never_validates(
        (_specs, _codec, batch) in arb_batch(),
        cut in any::<Index>(),
    ) {
        let cut = cut.index(batch.len());
        let err = validate(&batch[..cut]).expect_err("truncated batch accepted");
        prop_assert_eq!(err.kafka_error_code(), 2);
        prop_assert!(
            matches!(err, BatchError::ShortHeader { .. } | BatchError::LengthMismatch { .. }),
            "{:?}",
            err
        );
        prop_assert!(verify_stored(&batch[..cut]).is_err());
        let items: Vec<_> = Batches::new(&batch[..cut]).collect();
        if cut == 0 {
            prop_assert!(items.is_empty());
        } else {
            prop_assert_eq!(items.len(), 1);
            prop_assert!(
                matches!(
                    items[0],
                    Err(BatchError::ShortHeader { .. } | BatchError::Truncated { .. })
                ),
                "{:?}",
                items[0]
            );
        }
    }

    // Concatenations of valid batches split exactly; a cut anywhere in the last one leaves the
    // others intact and yields exactly one error.
    #[test]
    fn concatenated_batches_split_exactly_even_with_a_cut_tail(
        batches in vec(arb_batch(), 1..5),
        cut in any::<Index>(),
    ) {
        let bytes: Vec<Vec<u8>> = batches.into_iter().map(|(_, _, b)| b).collect();
        let buf = bytes.concat();
        let whole: Vec<_> = Batches::new(&buf).collect::<Result<_, _>>().unwrap();
        let mut at = 0;
        for ((start, header), batch) in whole.iter().zip(&bytes) {
            prop_assert_eq!(*start, at);
            prop_assert_eq!(validate(&buf[at..at + header.total_len()]), validate(batch));
            at += batch.len();
        }
        prop_assert_eq!(whole.len(), bytes.len());

        let last = bytes.last().unwrap().len();
        let keep = buf.len() - last + 1 + cut.index(last - 1); // cut inside the last batch
        let mut it = Batches::new(&buf[..keep]);
        let items: Vec<_> = it.by_ref().collect();
        prop_assert_eq!(items.len(), bytes.len());
        for (item, expected) in items.iter().zip(&whole) {
            if let Ok(found) = item {
                prop_assert_eq!(found, expected);
            }
        }
        prop_assert!(items[..items.len() - 1].iter().all(Result::is_ok));
        prop_assert!(
            matches!(
                items.last().unwrap(),
                Err(BatchError::ShortHeader { .. } | BatchError::Truncated { .. })
            ),
            "{:?}",
            items.last()
        );
        prop_assert_eq!(it.position(), buf.len() - last);
    }
}
