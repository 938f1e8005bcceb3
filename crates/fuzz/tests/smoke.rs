//! The bounded smoke run of every fuzz target (in the README's test command): its seeds
//! (built in code, plus fuzz/corpus/<target>: captures of real clients and inputs that
//! once crashed) and a fixed number of random mutations of them. Coverage-guided runs of
//! any length are `cargo +nightly fuzz run <target>` in fuzz/ (fuzz/README.md).

use std::path::Path;
use std::time::Instant;

fn smoke(target: &str, iterations: usize) {
    let body = runnel_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a target")
        .1;
    let mut seeds = runnel_fuzz::seeds(target);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    if std::env::var_os("RUNNEL_FUZZ_WRITE_SEEDS").is_some() {
        // Writes the seeds built in code into fuzz/corpus/<target>, for cargo fuzz.
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let mut all = seeds.clone();
        if target == "record_batch" {
            for frame in runnel_fuzz::corpus(&corpus.join("request")) {
                all.extend(runnel_fuzz::batch::from_produce_frame(&frame));
            }
        }
        for (i, s) in all.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
    let from_files = runnel_fuzz::corpus(&corpus.join(target));
    let files = from_files.len();
    seeds.extend(from_files);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    // A different sequence per run (printed, so a failure can be replayed with
    // RUNNEL_FUZZ_SEED), unless one is given.
    let seed = std::env::var("RUNNEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let t = Instant::now();
    let n = runnel_fuzz::smoke(body, &seeds, iterations, seed);
    println!(
        "{target}: {n} inputs ({files} corpus files) in {:?}, RUNNEL_FUZZ_SEED={seed}",
        t.elapsed()
    );
}

#[test]
fn framing() {
    smoke("framing", 20_000);
}

#[test]
fn request() {
    smoke("request", 100_000);
}

#[test]
fn record_batch() {
    smoke("record_batch", 50_000);
}

#[test]
fn segment_recovery() {
    smoke("segment_recovery", 300);
}

#[test]
fn fetch_response() {
    smoke("fetch_response", 30_000);
}

#[test]
fn group_coordinator() {
    smoke("group_coordinator", 20_000);
}
