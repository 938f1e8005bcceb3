//! The crash loop (tests/tools/crash-loop, confluent-kafka): the broker SIGKILLed at random
//! moments while idempotent acks=all producers write and a group reads and commits; after
//! each restart every acknowledged record is at its offset exactly once, in order, and the
//! committed offsets did not go back. 5 cycles here; 100 for a release (docs).

use crate::common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn five_random_sigkills_under_load_lose_duplicate_and_reorder_nothing() {
    with_timeout(300, || {
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/tools/crash-loop");
        let (status, out, err) = run_cmd(
            Command::new("python3")
                .arg(tool)
                .args(["--runnel", BIN, "--cycles", "5"]),
            Duration::from_secs(280),
        );
        let err: Vec<&str> = err.lines().filter(|l| !l.starts_with('%')).collect();
        assert!(
            status.success() && out.contains("OK: 5 kills"),
            "the crash loop failed:\n{out}\n{}",
            err.join("\n")
        );
        println!("{out}");
    });
}
