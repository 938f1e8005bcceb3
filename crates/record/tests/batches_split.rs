//! `Batches` over concatenated batches: exact split positions, and a trailing partial batch that
//! is reported once and never misread as a batch.

mod common;

use common::*;
use kafka_protocol::records::Compression as KCompression;
use runnel_record::{validate, BatchError, BatchHeader, Batches, HEADER_LEN};

/// Batches of different sizes and codecs, with distinct base offsets so a misplaced split
/// would show.
fn assorted() -> Vec<Vec<u8>> {
    let specs = sample_specs();
    let mut out = Vec::new();
    for (i, (codec, take)) in [
        (KCompression::None, 5),
        (KCompression::Gzip, 3),
        (KCompression::Snappy, 1),
        (KCompression::None, 1),
        (KCompression::Lz4, 4),
        (KCompression::Zstd, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let mut batch = encode(&specs[..take], codec);
        runnel_record::set_base_offset(&mut batch, 100 * i as i64);
        out.push(batch);
    }
    out
}

fn concat(batches: &[Vec<u8>]) -> Vec<u8> {
    batches.concat()
}

fn starts(batches: &[Vec<u8>]) -> Vec<usize> {
    batches
        .iter()
        .scan(0, |at, b| {
            let start = *at;
            *at += b.len();
            Some(start)
        })
        .collect()
}

#[test]
fn splits_concatenated_batches_at_exact_positions() {
    let batches = assorted();
    let buf = concat(&batches);
    let starts = starts(&batches);
    let mut it = Batches::new(&buf);
    assert_eq!(it.position(), 0);
    for (i, batch) in batches.iter().enumerate() {
        let (at, header) = it.next().unwrap().unwrap();
        assert_eq!(at, starts[i], "batch {i}");
        assert_eq!(header, validate(batch).unwrap(), "batch {i}");
        assert_eq!(header.base_offset, 100 * i as i64);
        assert_eq!(it.position(), starts[i] + batch.len());
        // The yielded range is itself a valid batch.
        let range = &buf[at..at + header.total_len()];
        assert_eq!(range, &batch[..]);
        assert_eq!(validate(range), Ok(header));
    }
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(it.position(), buf.len());
}

#[test]
fn empty_buffer_yields_nothing() {
    let mut it = Batches::new(&[]);
    assert_eq!(it.next(), None);
    assert_eq!(it.position(), 0);
}

#[test]
fn every_truncation_of_the_last_batch_yields_one_error_and_no_misread_batch() {
    let batches = assorted();
    let whole = &batches[..batches.len() - 1];
    let last = batches.last().unwrap();
    let prefix = concat(whole);
    let expected: Vec<(usize, BatchHeader)> = starts(whole)
        .into_iter()
        .zip(whole.iter().map(|b| validate(b).unwrap()))
        .collect();

    for cut in 1..last.len() {
        let mut buf = prefix.clone();
        buf.extend_from_slice(&last[..cut]);
        let mut it = Batches::new(&buf);
        let mut seen = Vec::new();
        let mut errors = Vec::new();
        for item in it.by_ref() {
            match item {
                Ok(found) => {
                    assert!(errors.is_empty(), "cut {cut}: batch after an error");
                    seen.push(found);
                }
                Err(e) => errors.push(e),
            }
        }
        assert_eq!(seen, expected, "cut {cut}");
        assert_eq!(errors.len(), 1, "cut {cut}: {errors:?}");
        let want = if cut < HEADER_LEN {
            BatchError::ShortHeader {
                needed: HEADER_LEN,
                available: cut,
            }
        } else {
            BatchError::Truncated {
                needed: last.len(),
                available: cut,
            }
        };
        assert_eq!(errors[0], want, "cut {cut}");
        assert_eq!(it.position(), prefix.len(), "cut {cut}");
        // Fused after the error.
        assert_eq!(it.next(), None);
    }
}

#[test]
fn every_truncation_of_a_lone_batch_yields_one_error() {
    for codec in CODECS {
        let batch = encode(&sample_specs(), codec);
        for cut in 1..batch.len() {
            let items: Vec<_> = Batches::new(&batch[..cut]).collect();
            assert_eq!(items.len(), 1, "{codec:?} cut {cut}");
            assert!(
                matches!(
                    items[0],
                    Err(BatchError::Truncated { .. } | BatchError::ShortHeader { .. })
                ),
                "{codec:?} cut {cut}: {:?}",
                items[0]
            );
        }
    }
}

#[test]
fn position_after_a_partial_batch_is_where_a_reader_resumes() {
    // A segment reader stops at position(), reads more, and carries on from there: the batches
    // it then finds are exactly the remaining ones.
    let batches = assorted();
    let buf = concat(&batches);
    let cut = buf.len() - batches.last().unwrap().len() / 2;
    let mut it = Batches::new(&buf[..cut]);
    let first: Vec<_> = it.by_ref().filter_map(Result::ok).collect();
    let resume = it.position();
    let rest: Vec<_> = Batches::new(&buf[resume..]).map(|r| r.unwrap().1).collect();
    assert_eq!(first.len() + rest.len(), batches.len());
    assert_eq!(rest, vec![validate(batches.last().unwrap()).unwrap()]);
}

/// Damages the batch at the start of the slice.
type Damage = fn(&mut [u8]);

#[test]
fn damaged_batch_in_the_middle_stops_the_split_there() {
    let batches = assorted();
    let starts = starts(&batches);
    let damages: [(Damage, BatchError); 3] = [
        (
            |b| b[AT_MAGIC] = 1,
            BatchError::UnsupportedMagic { magic: 1 },
        ),
        (
            |b| put_i32(b, AT_BATCH_LENGTH, 48),
            BatchError::BadBatchLength { batch_length: 48 },
        ),
        (
            |b| put_i32(b, AT_BATCH_LENGTH, -7),
            BatchError::BadBatchLength { batch_length: -7 },
        ),
    ];
    for (damage, want) in damages {
        let mut buf = concat(&batches);
        damage(&mut buf[starts[2]..]);
        let mut it = Batches::new(&buf);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.position(), starts[2]);
        assert_eq!(it.next(), Some(Err(want)));
        assert_eq!(it.next(), None);
        assert_eq!(it.position(), starts[2]);
    }
}

#[test]
fn batch_length_overstating_the_buffer_is_truncated_not_a_read_past_the_end() {
    let batch = sample_batch();
    let mut buf = batch.clone();
    buf.extend_from_slice(&batch);
    put_i32(&mut buf, batch.len() + AT_BATCH_LENGTH, i32::MAX);
    let items: Vec<_> = Batches::new(&buf).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert_eq!(
        items[1],
        Err(BatchError::Truncated {
            needed: i32::MAX as usize + 12,
            available: batch.len()
        })
    );
}

#[test]
fn split_does_not_check_crcs() {
    // Batches only frames; a damaged payload is still yielded for validate/verify_stored to
    // judge.
    let batches = assorted();
    let mut buf = concat(&batches);
    let end = buf.len();
    buf[end - 1] ^= 0xff;
    let items: Vec<_> = Batches::new(&buf).collect();
    assert_eq!(items.len(), batches.len());
    assert!(items.iter().all(Result::is_ok));
    let (at, header) = items.last().unwrap().clone().unwrap();
    assert!(matches!(
        runnel_record::verify_stored(&buf[at..at + header.total_len()]),
        Err(BatchError::CrcMismatch { .. })
    ));
}
