//! kcat (Debian's, linked to an old librdkafka) and the Python clients.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python_test(which: &str) {
    assert!(
        have("python3"),
        "python3 is required (scripts/install-test-deps installs it)"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/clients_test.py"
    );
    client_test(which, Command::new("python3").args([script, which]));
}

/// Runs a client program (its last argument the broker's address) against a fresh broker;
/// it must exit 0 and print OK.
fn client_test(which: &str, cmd: &mut Command) {
    client_test_with(which, cmd, &[]);
}

/// A client's test against a broker started with `flags` besides two cores.
fn client_test_with(which: &str, cmd: &mut Command, flags: &[&str]) {
    let b = Broker::start(&[&["--cores", "2"], flags].concat());
    let (status, out, err) = run_cmd(cmd.arg(&b.addr), Duration::from_secs(150));
    assert!(
        status.success(),
        "{which} failed:\n{out}\n{err}\nbroker log:\n{}",
        b.logs()
    );
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn confluent_kafka_python_admin_produce_consume() {
    with_timeout(180, || python_test("confluent"));
}

#[test]
fn kafka_python_produce_consume_offsets_admin() {
    with_timeout(180, || python_test("kafka-python"));
}

#[test]
fn kcat_with_an_old_librdkafka_produces_consumes_and_lists() {
    with_timeout(120, || {
        assert!(
            have("kcat"),
            "kcat is required (scripts/install-test-deps installs it)"
        );
        let b = Broker::start(&[]);
        let input: String = (0..200)
            .map(|i| format!("key{}:line {i}\n", i % 3))
            .collect();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!(
                "printf '%s' \"$INPUT\" | kcat -P -b {} -t kc -K: -z lz4 -X api.version.request=true",
                b.addr
            ),
        ])
        .env("INPUT", &input);
        let (status, _, err) = run_cmd(&mut cmd, Duration::from_secs(60));
        assert!(status.success(), "kcat -P: {err}");

        let (status, out, err) = run_cmd(
            Command::new("kcat").args(["-C", "-b", &b.addr, "-t", "kc", "-e", "-f", "%k=%s@%o\n"]),
            Duration::from_secs(60),
        );
        assert!(status.success(), "kcat -C: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 200, "{out}\n{err}");
        assert_eq!(lines[0], "key0=line 0@0");
        assert_eq!(lines[199], "key1=line 199@199");

        // From an offset in the middle, and the metadata listing.
        let (_, out, _) = run_cmd(
            Command::new("kcat").args([
                "-C", "-b", &b.addr, "-t", "kc", "-o", "150", "-e", "-f", "%o\n",
            ]),
            Duration::from_secs(60),
        );
        assert_eq!(out.lines().next(), Some("150"));
        let (status, out, err) = run_cmd(
            Command::new("kcat").args(["-L", "-b", &b.addr, "-t", "kc"]),
            Duration::from_secs(60),
        );
        assert!(status.success(), "{err}");
        assert!(out.contains("topic \"kc\" with 1 partitions"), "{out}");
        assert!(out.contains(&format!("broker 0 at {}", b.addr)), "{out}");
    });
}

/// The Go clients' program (tests/go), built by scripts/install-test-deps; built here if
/// missing (once per test process: both Go tests share it).
pub(crate) fn go_clients() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let bin = root.join("target/go-clients");
    BUILT.call_once(|| {
        if !bin.exists() {
            assert!(have("go"), "go is required (scripts/install-test-deps)");
            let (st, out, err) = run_cmd(
                Command::new("go")
                    .args(["build", "-o", bin.to_str().unwrap(), "."])
                    .current_dir(root.join("tests/go")),
                Duration::from_secs(600),
            );
            assert!(st.success(), "go build failed:\n{out}\n{err}");
        }
    });
    bin
}

fn go_test(which: &str) {
    client_test(which, Command::new(go_clients()).arg(which));
}

#[test]
fn franz_go_admin_produce_every_codec_consume_in_a_group_commit() {
    with_timeout(700, || go_test("franz"));
}

#[test]
fn sarama_admin_sync_producer_consumer_group_commit() {
    with_timeout(700, || go_test("sarama"));
}

/// The Java client tests' classpath (tests/java, built by scripts/install-test-deps into
/// target/java-clients: its classes and every jar it needs).
pub(crate) fn java_classpath() -> String {
    let root = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/java-clients"
    ));
    assert!(
        root.join("built").exists() && have("java"),
        "the Java client tests are not built: run scripts/install-test-deps"
    );
    format!(
        "{}:{}/lib/*",
        root.join("classes").display(),
        root.display()
    )
}

fn java_test(which: &str) {
    client_test(
        which,
        Command::new("java").args(["-cp", &java_classpath(), "runnel.ClientsTest", which]),
    );
}

#[test]
fn java_producer_acks_idempotence_every_codec_headers_and_large_records() {
    with_timeout(300, || java_test("producer"));
}

#[test]
fn java_consumer_assignors_static_membership_commits_seek_times_pause() {
    with_timeout(300, || java_test("consumer"));
}

#[test]
fn java_consumer_protocol_kip848_server_side_assignors_regex_and_admin() {
    with_timeout(300, || {
        client_test_with(
            "consumer-protocol",
            Command::new("java").args([
                "-cp",
                &java_classpath(),
                "runnel.ClientsTest",
                "consumer-protocol",
            ]),
            // Members learn of a new assignment at their next heartbeat.
            &["--group-consumer-heartbeat-interval-ms", "500"],
        )
    });
}

#[test]
fn java_admin_topics_configs_partitions_records_offsets_groups_log_dirs() {
    with_timeout(300, || java_test("admin"));
}

#[test]
fn kafka_streams_word_count_at_least_once_gets_exact_counts() {
    with_timeout(300, || java_test("streams"));
}

#[test]
fn kafka_streams_word_count_exactly_once_v2_survives_a_killed_instance() {
    with_timeout(400, || {
        client_test_with(
            "streams-eos",
            Command::new("java").args([
                "-cp",
                &java_classpath(),
                "runnel.ClientsTest",
                "streams-eos",
            ]),
            // The killed instance's transaction is aborted at its timeout (Streams: 10 s),
            // found by the coordinator's next sweep.
            &[
                "--transaction-abort-timed-out-transaction-cleanup-interval-ms",
                "500",
            ],
        )
    });
}

#[test]
fn kafka_connect_worker_moves_a_files_lines_and_resumes_from_its_stored_offsets() {
    with_timeout(400, || {
        let b = Broker::start(&["--cores", "2", "--log-cleaner-backoff-ms", "1000"]);
        // Two workers start in turn, each scanning its classpath for plugins: slow.
        let (status, out, err) = run_cmd(
            Command::new("java").args(["-cp", &java_classpath(), "runnel.ConnectTest", &b.addr]),
            Duration::from_secs(330),
        );
        assert!(
            status.success() && out.contains("OK"),
            "connect failed:\n{out}\n{err}\nbroker log:\n{}",
            b.logs()
        );
    });
}
