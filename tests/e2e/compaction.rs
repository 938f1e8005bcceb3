//! Compacted topics (tests/python/compaction_test.py, confluent-kafka): the latest record of
//! each key kept at its offset while a reader goes through the log, tombstones served until
//! delete.retention.ms and then gone, keyless records refused, and the broker killed at each
//! step of the cleaner's swap, with every latest value there after the restart.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

const FLAGS: &[&str] = &["--log-cleaner-backoff-ms", "200"];

fn case(b: &Broker, args: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/compaction_test.py"
    );
    let (status, out, err) = run_cmd(
        Command::new("python3").arg(script).args(args),
        Duration::from_secs(300),
    );
    assert!(
        status.success() && out.contains("OK"),
        "{args:?} failed:\n{out}\n{err}\nbroker log:\n{}",
        b.logs()
    );
}

#[test]
fn a_compacted_topic_keeps_the_latest_record_of_each_key_while_a_reader_goes_through_it() {
    with_timeout(600, || {
        let b = Broker::start(FLAGS);
        case(&b, &["latest", &b.addr, b.dir.to_str().unwrap()]);
        assert!(b.metric_sum("cleaner_passes") >= 1);
        assert!(b.metric_sum("cleaner_records_removed") >= 190_000);
    });
}

#[test]
fn tombstones_stay_for_delete_retention_ms_and_keyless_records_are_refused() {
    with_timeout(600, || {
        let b = Broker::start(FLAGS);
        case(&b, &["tombstones", &b.addr]);
        case(&b, &["keyless", &b.addr]);
    });
}

#[test]
fn a_broker_killed_at_each_step_of_the_cleaners_swap_loses_no_latest_value() {
    with_timeout(900, || {
        for step in ["cleaned", "swap", "old-removed"] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            let state = tmp.path().join("latest.json");
            let state = state.to_str().unwrap();
            let mut flags = FLAGS.to_vec();
            flags.extend(["--test-cleaner-crash-after", step]);
            let mut b = Broker::start_in(&dir, &flags);
            case(&b, &["fill", &b.addr, "crash", state]);
            // The cleaner's first pass kills the broker at `step`.
            let exit = b.wait(Duration::from_secs(120));
            assert!(!exit.success(), "{step}: killed, not stopped");
            let mut b = Broker::start_in(&dir, FLAGS);
            case(&b, &["verify", &b.addr, "crash", state]);
            assert!(
                b.logs().contains("completed an interrupted cleaner swap") || step == "cleaned",
                "{step}: recovery completed the swap:\n{}",
                b.logs()
            );
            b.stop();
        }
    });
}

#[test]
fn committed_offsets_survive_cleaning_and_restarts_and_kafkas_formatter_reads_them() {
    with_timeout(600, || {
        let mut b = Broker::start(FLAGS);
        case(&b, &["offsets", &b.addr, "commit"]);
        // 3,010 commits over 10 offsets: all but the latest of each go.
        wait_until(
            "the group's __consumer_offsets partition cleaned",
            Duration::from_secs(60),
            || b.metric_sum("cleaner_records_removed") >= 2_900,
        );
        b.stop();
        b.restart();
        case(&b, &["offsets", &b.addr, "fetch"]);
        // Kafka's own console consumer and offsets formatter read the records.
        let (status, out, err) = run_cmd(
            Command::new("java").args([
                "-cp",
                &crate::tools::java_classpath(),
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                "--bootstrap-server",
                &b.addr,
                "--topic",
                "__consumer_offsets",
                "--from-beginning",
                "--timeout-ms",
                "10000",
                "--formatter",
                "org.apache.kafka.tools.consumer.OffsetsMessageFormatter",
                "--consumer-property",
                "exclude.internal.topics=false",
            ]),
            Duration::from_secs(120),
        );
        let ours: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("offsets-group"))
            .collect();
        assert!(
            !err.contains("Could not read record") && !ours.is_empty(),
            "{status}\n{out}\n{err}"
        );
        for p in 0..10 {
            let want = format!("\"offset\":{}", 5_000 + p);
            assert!(ours.iter().any(|l| l.contains(&want)), "{want} in:\n{out}");
        }
        // Cleaned: about one record per group-partition (and what came after the last
        // cleaning), not 3,010.
        assert!(ours.len() <= 40, "{} records:\n{out}", ours.len());
    });
}
