//! Kafka's own command-line tools (the classes behind kafka-topics.sh and the others, from
//! the kafka-tools artifact built into target/java-clients) against a Runnel broker.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

/// Runs one of Kafka's tools (its main class) against `bootstrap` with `args` (split at
/// spaces); stdin from `input` if given. Returns its stdout; panics with its output if it
/// does not exit 0.
fn tool(class: &str, bootstrap: &str, args: &str, input: Option<&str>) -> String {
    let cp = crate::tools::java_classpath();
    let mut cmd = Command::new("sh");
    let args: Vec<&str> = ["--bootstrap-server", bootstrap]
        .into_iter()
        .chain(args.split_whitespace())
        .collect();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let java = format!("java -cp '{cp}' {class} {}", quoted.join(" "));
    match input {
        Some(text) => cmd.args(["-c", &format!("printf '{text}' | {java}")]),
        None => cmd.args(["-c", &java]),
    };
    let (st, out, err) = run_cmd(&mut cmd, Duration::from_secs(120));
    assert!(st.success(), "{class} {args:?} failed:\n{out}\n{err}");
    out
}

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";
const OFFSETS: &str = "org.apache.kafka.tools.GetOffsetShell";
const LOG_DIRS: &str = "org.apache.kafka.tools.LogDirsCommand";

#[test]
fn kafka_topics_console_clients_consumer_groups_configs_get_offsets_and_log_dirs() {
    with_timeout(600, || {
        let b = Broker::start(&[]);
        let bs = b.addr.as_str();
        let out = tool(TOPICS, bs, "--create --topic kt --partitions 3 --replication-factor 1 --config retention.ms=3600000", None);
        assert!(out.contains("Created topic kt."), "{out}");
        let out = tool(TOPICS, bs, "--list", None);
        assert!(out.lines().any(|l| l == "kt"), "{out}");
        let out = tool(TOPICS, bs, "--describe --topic kt", None);
        assert!(out.contains("PartitionCount: 3"), "{out}");
        assert!(out.contains("retention.ms=3600000"), "{out}");

        // Console producer (keyed lines) and consumer in a group.
        tool(
            PRODUCER,
            bs,
            "--topic kt --property parse.key=true --property key.separator=:",
            Some("k1:one\\nk2:two\\nk3:three\\nk1:four\\n"),
        );
        let out = tool(CONSUMER, bs, "--topic kt --from-beginning --max-messages 4 --group kt-group --property print.key=true", None);
        for l in ["k1\tone", "k2\ttwo", "k3\tthree", "k1\tfour"] {
            assert!(out.lines().any(|x| x == l), "{l:?} in {out}");
        }

        // Consumer groups: list, describe (no lag), reset to earliest (lag 4 again).
        let out = tool(GROUPS, bs, "--list", None);
        assert!(out.lines().any(|l| l.trim() == "kt-group"), "{out}");
        let lag = |out: &str| -> i64 {
            out.lines()
                .filter(|l| l.starts_with("kt-group"))
                .filter_map(|l| l.split_whitespace().nth(5)?.parse::<i64>().ok())
                .sum()
        };
        let out = tool(GROUPS, bs, "--describe --group kt-group", None);
        assert_eq!(lag(&out), 0, "{out}");
        let out = tool(
            GROUPS,
            bs,
            "--reset-offsets --group kt-group --topic kt --to-earliest --execute",
            None,
        );
        assert!(out.contains("kt-group"), "{out}");
        let out = tool(GROUPS, bs, "--describe --group kt-group", None);
        assert_eq!(lag(&out), 4, "{out}");

        // Configs: describe and alter a topic's; a dynamic broker default.
        let out = tool(
            CONFIGS,
            bs,
            "--describe --entity-type topics --entity-name kt",
            None,
        );
        assert!(out.contains("retention.ms=3600000"), "{out}");
        tool(CONFIGS, bs, "--alter --entity-type topics --entity-name kt --add-config retention.ms=7200000,cleanup.policy=[compact,delete]", None);
        let out = tool(
            CONFIGS,
            bs,
            "--describe --entity-type topics --entity-name kt",
            None,
        );
        assert!(out.contains("retention.ms=7200000"), "{out}");
        assert!(out.contains("cleanup.policy=compact,delete"), "{out}");
        tool(CONFIGS, bs, "--alter --entity-type brokers --entity-default --add-config leader.replication.throttled.rate=1000000", None);
        let out = tool(
            CONFIGS,
            bs,
            "--describe --entity-type brokers --entity-default",
            None,
        );
        assert!(
            out.contains("leader.replication.throttled.rate=1000000"),
            "{out}"
        );

        // Offsets and log dirs.
        let out = tool(OFFSETS, bs, "--topic kt", None);
        let total: i64 = out
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<i64>().ok())
            .sum();
        assert_eq!(total, 4, "{out}");
        let out = tool(LOG_DIRS, bs, "--describe", None);
        assert!(out.contains("\"partition\":\"kt-0\""), "{out}");

        tool(TOPICS, bs, "--delete --topic kt", None);
        let out = tool(TOPICS, bs, "--list", None);
        assert!(!out.lines().any(|l| l == "kt"), "{out}");
    });
}

/// kafka-reassign-partitions moves a partition to another broker with a throttle, and
/// --verify sees it done and removes the throttle, on a three-broker cluster.
#[test]
fn kafka_reassign_partitions_moves_a_replica_with_a_throttle_and_verifies_it() {
    with_timeout(300, || {
        let c = crate::cluster::Cluster::start(3, &[]);
        let bs = c.brokers[0].addr.clone();
        assert_eq!(crate::cluster::create_with_replicas(&bs, "rt", &[1, 2]), 0);
        tool(PRODUCER, &bs, "--topic rt", Some("a\\nb\\nc\\n"));
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.json");
        std::fs::write(
            &plan,
            r#"{"version":1,"partitions":[{"topic":"rt","partition":0,"replicas":[3,2]}]}"#,
        )
        .unwrap();
        let plan = plan.to_str().unwrap();
        const REASSIGN: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";
        let out = tool(
            REASSIGN,
            &bs,
            &format!("--execute --reassignment-json-file {plan} --throttle 50000000"),
            None,
        );
        assert!(
            out.contains("Successfully started partition reassignment"),
            "{out}"
        );
        let mut verified = String::new();
        wait_until(
            "kafka-reassign-partitions --verify",
            Duration::from_secs(60),
            || {
                verified = tool(
                    REASSIGN,
                    &bs,
                    &format!("--verify --reassignment-json-file {plan}"),
                    None,
                );
                verified.contains("Reassignment of partition rt-0 is completed")
            },
        );
        assert!(
            verified.contains("Clearing broker-level throttles on brokers 1,2,3")
                && verified.contains("Clearing topic-level throttles on topic rt"),
            "{verified}"
        );
        let v = crate::cluster::metadata(&bs, Some("rt"));
        assert_eq!(v.partitions[&0].3, vec![3, 2], "{v:?}");
        let out = tool(
            CONSUMER,
            &bs,
            "--topic rt --from-beginning --max-messages 3",
            None,
        );
        assert_eq!(out.lines().collect::<Vec<_>>(), ["a", "b", "c"], "{out}");
    });
}
