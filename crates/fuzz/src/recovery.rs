//! Segment recovery over arbitrary file contents: the active segment of a log that did not
//! shut down cleanly is scanned batch by batch, and the file is cut at the first batch that
//! does not verify. Whatever the bytes, opening must not panic, what survives must be a log
//! of whole, verified, contiguous batches, every batch that was intact before the first
//! damaged byte must survive, and the log must take appends afterwards.
//!
//! Input: byte 0 picks the layout. High bit set: the rest is the whole segment file. Clear:
//! `n = byte0 % 8` valid batches of `1 + byte1 % 16` records each are written, then the
//! rest of the input is laid over the file at the offset bytes 2-3 name (little endian,
//! modulo the file's length + 1), growing it if it runs past the end.

use bytes::BytesMut;
use runnel_log::{Log, LogConfig, OpenOptions};
use runnel_record::builder::BatchBuilder;
use runnel_record::Batches;
use std::os::unix::fs::FileExt;

pub fn run(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let (file, intact) = layout(data);
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_dir = dir.path().join("t-0");
    std::fs::create_dir_all(&log_dir).expect("the log dir");
    std::fs::write(log_dir.join("00000000000000000000.log"), &file).expect("the segment");
    crate::block_on(async move {
        let config = LogConfig {
            index_interval_bytes: 256,
            preallocate: false,
            ..LogConfig::default()
        };
        let opts = OpenOptions {
            recovery_point: None,
            log_start_offset: None,
            clean_shutdown: false,
            high_watermark: None,
        };
        let log = match Log::open(&log_dir, "t", 0, config.clone(), opts).await {
            Ok(log) => log,
            // Refusing to open is an answer (the partition goes offline), not a crash.
            Err(_) => return,
        };
        let end = log.log_end_offset();
        assert!(
            end >= intact,
            "recovery lost intact batches: end {end} < {intact}"
        );
        // What survives: whole, verified batches at contiguous offsets from 0.
        let mut next = 0i64;
        while next < end {
            let plan = log
                .read(next, 1 << 20, true)
                .await
                .expect("a read below the end");
            assert!(plan.len > 0, "no progress at {next}");
            let f = std::fs::File::from(plan.file.try_clone().expect("dup"));
            let mut buf = vec![0u8; plan.len as usize];
            f.read_exact_at(&mut buf, plan.position)
                .expect("the planned bytes");
            // The plan starts at the batch holding `next`; every batch after it starts at
            // or past the previous one's end (a compacted log may have gaps, never overlaps).
            let mut first = true;
            for b in Batches::new(&buf) {
                let (pos, h) = b.expect("a recovered batch parses");
                runnel_record::verify_stored(&buf[pos..pos + h.total_len()])
                    .expect("a recovered batch verifies");
                if first {
                    assert!(
                        h.last_offset() >= next,
                        "the plan for {next} starts below it"
                    );
                    first = false;
                } else {
                    assert!(
                        h.base_offset >= next,
                        "batch at {} overlaps {next}",
                        h.base_offset
                    );
                }
                next = h.next_offset();
            }
        }
        assert_eq!(next, end);
        // Appends go on from the recovered end.
        let mut b = BatchBuilder::new(1_700_000_000_000);
        b.append(1_700_000_000_000, Some(b"k"), Some(b"after"), &[]);
        let info = log
            .append(BytesMut::from(&b.build()[..]), false)
            .await
            .expect("an append after recovery");
        assert_eq!(info.base_offset, end);
        let _ = log.close().await;
        // And a second recovery of what the first left finds the same log.
        let again = Log::open(&log_dir, "t", 0, config, opts)
            .await
            .expect("the recovered log opens again");
        assert_eq!(again.log_end_offset(), end + 1);
        let _ = again.close().await;
    });
}

/// The segment file for `data`, and the records of the batches no byte of the input
/// touched (they must survive recovery).
fn layout(data: &[u8]) -> (Vec<u8>, i64) {
    if data[0] & 0x80 != 0 {
        return (data[1..].to_vec(), 0);
    }
    let n = usize::from(data[0] % 8);
    let per = 1 + i64::from(data.get(1).copied().unwrap_or(0) % 16);
    let mut file = Vec::new();
    let mut ends = Vec::new();
    for i in 0..n {
        let mut b = BatchBuilder::new(1_700_000_000_000);
        for r in 0..per {
            b.append(
                1_700_000_000_000 + r,
                Some(&[i as u8, r as u8]),
                Some(&[7; 30]),
                &[],
            );
        }
        let mut batch = b.build();
        runnel_record::set_base_offset(&mut batch, i as i64 * per);
        runnel_record::set_crc(&mut batch);
        file.extend_from_slice(&batch);
        ends.push(file.len());
    }
    let at = data
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        % (file.len() + 1);
    let patch = data.get(4..).unwrap_or(&[]);
    if !patch.is_empty() {
        if file.len() < at + patch.len() {
            file.resize(at + patch.len(), 0);
        }
        file[at..at + patch.len()].copy_from_slice(patch);
    }
    // Batches wholly before the first patched byte are intact.
    let first_touched = if patch.is_empty() { usize::MAX } else { at };
    let intact = ends.iter().filter(|&&e| e <= first_touched).count() as i64 * per;
    (file, intact)
}

/// Seeds: valid logs of each size, with a patch in the middle, at the end, and none.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in [0u8, 1, 3, 7] {
        out.push(vec![n, 4]);
        out.push(vec![n, 2, 0x40, 0, 0xde, 0xad, 0xbe, 0xef]);
        out.push(vec![n, 15, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40]);
    }
    out.push(vec![0x80]);
    out.push([&[0x80u8][..], &[0u8; 61]].concat());
    out
}
