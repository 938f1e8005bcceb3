//! runnel-bench against the real broker: its batches are accepted by librdkafka, its
//! verification catches an injected gap and a duplicate, it fails clearly against a dead
//! port or a missing topic, and --help documents every mode and flag.

use crate::clients::consumer;
use crate::common::*;
use crate::protocol::{connect, create_via_metadata, produce_to};
use clap::{CommandFactory, Parser};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use runnel_bench::batch::{parse_compression, parse_value, BatchTemplate};
use runnel_bench::Cli;
use std::time::{Duration, Instant};

fn bench(args: &[&str]) -> Result<(), String> {
    let mut argv = vec!["runnel-bench", "--quiet"];
    argv.extend_from_slice(args);
    runnel_bench::run(Cli::try_parse_from(argv).map_err(|e| e.to_string())?)
}

#[test]
fn librdkafka_consumes_what_runnel_bench_produces() {
    with_timeout(180, || {
        let b = Broker::start(&["--default-partitions", "2"]);
        for codec in ["none", "lz4", "zstd", "gzip", "snappy"] {
            let topic = format!("rb-{codec}");
            bench(&[
                "--brokers",
                &b.addr,
                "produce",
                "--create",
                "--partitions",
                "2",
                "--topic",
                &topic,
                "--compression",
                codec,
                "--record-size",
                "200",
                "--batch-size",
                "20000",
                "--total-bytes",
                "1000000",
                "--keyed",
            ])
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
            let c = consumer(&b.addr, &[]);
            let mut tpl = TopicPartitionList::new();
            for p in 0..2 {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .unwrap();
            }
            c.assign(&tpl).unwrap();
            let mut next = [0u64; 2];
            let deadline = Instant::now() + Duration::from_secs(30);
            let hw: i64 = (0..2)
                .map(|p| {
                    c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .unwrap()
                        .1
                })
                .sum();
            assert!(hw > 0);
            let mut got = 0i64;
            while got < hw {
                assert!(Instant::now() < deadline, "{codec}: consumed {got} of {hw}");
                if let Some(m) = c.poll(Duration::from_millis(200)) {
                    let m = m.expect("librdkafka accepts the batch");
                    let (seq, _) = parse_value(m.payload().unwrap()).expect("a runnel-bench value");
                    let p = m.partition() as usize;
                    assert_eq!(seq, next[p], "{codec}: sequences in order");
                    next[p] += 1;
                    assert_eq!(m.key().map(|k| k.len()), Some(8));
                    got += 1;
                }
            }
        }
    });
}

#[test]
fn verification_catches_an_injected_gap_and_a_duplicate() {
    with_timeout(120, || {
        let b = Broker::start(&[]);
        let mut s = connect(&b.addr);
        for topic in ["rb-clean", "rb-dup", "rb-gap"] {
            create_via_metadata(&mut s, topic);
        }
        let none = parse_compression("none").unwrap();
        let mut t = BatchTemplate::new(10, 64, false, none);
        // Clean: 0..30. Duplicate: 0..20 then 10..20 again. Gap: 0..10 then 15..25.
        for (topic, starts) in [
            ("rb-clean", &[0u64, 10, 20][..]),
            ("rb-dup", &[0, 10, 10][..]),
            ("rb-gap", &[0, 15][..]),
        ] {
            for &seq in starts {
                let r = produce_to(&mut s, 9, vec![(topic, 0, t.fill(seq, 1))]);
                assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            }
        }
        bench(&[
            "--brokers",
            &b.addr,
            "consume",
            "--verify",
            "--topic",
            "rb-clean",
        ])
        .unwrap();
        let e = bench(&[
            "--brokers",
            &b.addr,
            "consume",
            "--verify",
            "--topic",
            "rb-dup",
        ])
        .unwrap_err();
        assert!(e.contains("duplicate") && e.contains("offset 20"), "{e}");
        let e = bench(&[
            "--brokers",
            &b.addr,
            "consume",
            "--verify",
            "--topic",
            "rb-gap",
        ])
        .unwrap_err();
        assert!(e.contains("gap") && e.contains("expected 10"), "{e}");
        // Without --verify the same data just counts.
        bench(&["--brokers", &b.addr, "consume", "--topic", "rb-gap"]).unwrap();
    });
}

#[test]
fn every_mode_runs_and_fails_clearly_when_it_cannot() {
    with_timeout(180, || {
        let b = Broker::start(&["--default-partitions", "2"]);
        bench(&[
            "--brokers",
            &b.addr,
            "produce",
            "--create",
            "--topic",
            "rb-modes",
            "--total-bytes",
            "2000000",
            "--acks",
            "-1",
        ])
        .unwrap();
        bench(&[
            "--brokers",
            &b.addr,
            "produce",
            "--topic",
            "rb-modes",
            "--duration",
            "0.5",
            "--rate",
            "5000",
            "--producers",
            "2",
        ])
        .unwrap();
        bench(&[
            "--brokers",
            &b.addr,
            "consume",
            "--topic",
            "rb-modes",
            "--consumers",
            "2",
            "--verify",
        ])
        .unwrap();
        bench(&[
            "--brokers",
            &b.addr,
            "fanout",
            "--topic",
            "rb-modes",
            "--consumers",
            "3",
            "--json",
        ])
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let timeline = tmp.path().join("timeline");
        bench(&[
            "--brokers",
            &b.addr,
            "e2e",
            "--create",
            "--topic",
            "rb-e2e",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--timeline",
            timeline.to_str().unwrap(),
        ])
        .unwrap();
        // One line per fetch answer after a header; together they hold every record the
        // run produced (about 2,000), each fetch within the run and no latency negative.
        let text = std::fs::read_to_string(&timeline).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("# start "), "{text}");
        let mut records = 0u64;
        for l in lines {
            let f: Vec<f64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f.len(), 6, "{l}");
            assert!(f[0] >= f[1] && f[0] < 5_000.0, "{l}");
            assert!(f[4] >= 0.0 && f[5] >= 0.0 && f[4] >= f[5], "{l}");
            records += f[3] as u64;
        }
        assert!(
            (1_900..=2_100).contains(&records),
            "{records} records in the timeline"
        );
        // Flat out (the e2e workload's own maximum): every record produced is consumed.
        bench(&[
            "--brokers",
            &b.addr,
            "e2e",
            "--topic",
            "rb-e2e",
            "--rate",
            "0",
            "--batch-size",
            "16384",
            "--duration",
            "0.5",
        ])
        .unwrap();
        bench(&[
            "limits",
            "--seconds",
            "0.3",
            "--file-mib",
            "8",
            "--dir",
            tmp.path().to_str().unwrap(),
        ])
        .unwrap();
        // A dead port and a missing topic are errors with a message.
        let dead = format!("127.0.0.1:{}", free_port());
        let e = bench(&["--brokers", &dead, "produce", "--total-bytes", "1000"]).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        let e = bench(&["--brokers", &b.addr, "consume", "--topic", "rb-missing"]).unwrap_err();
        assert!(e.contains("rb-missing"), "{e}");
        let e = bench(&[
            "--brokers",
            &b.addr,
            "produce",
            "--topic",
            "rb-missing",
            "--total-bytes",
            "1000",
        ])
        .unwrap_err();
        assert!(e.contains("--create"), "{e}");
    });
}

#[test]
fn help_documents_every_mode_and_flag() {
    let mut cmd = Cli::command();
    let top = cmd.render_long_help().to_string();
    for mode in ["produce", "consume", "fanout", "e2e", "limits"] {
        assert!(top.contains(mode), "{mode} in --help");
    }
    for sub in cmd.get_subcommands_mut() {
        let help = sub.render_long_help().to_string();
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    help.contains(&format!("--{long}")),
                    "{} --{long}",
                    sub.get_name()
                );
                assert!(
                    arg.get_help().is_some() || long == "help" || long == "version",
                    "{} --{long} has help text",
                    sub.get_name()
                );
            }
        }
    }
}
