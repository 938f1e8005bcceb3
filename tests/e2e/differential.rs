//! The differential protocol test: the corpus of client requests in tests/differential/corpus
//! (recorded from librdkafka, kcat, kafka-python and the Java client by
//! tests/differential/capture) replayed to a real Apache Kafka broker and to Runnel, the
//! answers compared field by field by runnel.Differential (tests/java), against the list of
//! known differences in tests/differential/known-differences.txt (each explained in
//! ARCHITECTURE.md). Fails on a difference not in that list, and when an API Runnel serves
//! was not compared at its lowest and its highest version in common with Kafka.

use crate::common::*;
use crate::tools::java_classpath;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Apache Kafka (benches/kafka/kafka run: one KRaft node, combined mode) for this test alone,
/// killed when the test ends, and with the test process if that dies first.
struct Kafka {
    child: Child,
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Kafka {
    fn start() -> Kafka {
        let root = Path::new(ROOT);
        assert!(
            root.join("target/kafka/lib/.fetched").exists(),
            "Apache Kafka is not fetched: run scripts/install-test-deps (benches/kafka/kafka fetch)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kafka");
        let (port, cport) = (free_port(), free_port());
        let log = std::fs::File::create(tmp.path().join("stdout")).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "python3"])
            .arg(root.join("benches/kafka/kafka"))
            .args(["run", "--port", &port.to_string()])
            .args(["--controller-port", &cport.to_string()])
            .args(["--heap", "512M", "--dir"])
            .arg(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("setpriv and python3 run Apache Kafka");
        let mut k = Kafka {
            child,
            port,
            dir,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(k.dir.join("server.log")).unwrap_or_default();
            if log.contains("Kafka Server started")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break;
            }
            if let Some(st) = k.child.try_wait().unwrap() {
                panic!("Apache Kafka exited ({st}):\n{}", k.logs());
            }
            assert!(
                Instant::now() < deadline,
                "Apache Kafka did not start in 120 s:\n{}",
                k.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(self._tmp.path().join("stdout")).unwrap_or_default();
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("{out}\n{tail}")
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn runnel_answers_the_client_corpus_as_apache_kafka_does_but_for_the_known_differences() {
    with_timeout(600, || {
        let kafka = Kafka::start();
        // As the Kafka node is configured (benches/kafka/kafka): the same node id, and groups
        // that do not wait for more members.
        let broker = Broker::start(&["--node-id", "1", "--group-initial-rebalance-delay-ms", "0"]);
        let root = Path::new(ROOT);
        // (Dies with this thread, as Kafka does, if the test times out.)
        let (status, out, err) = run_cmd(
            Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "java"])
                .args(["-cp", &java_classpath(), "runnel.Differential", "compare"])
                .args(["--kafka", &format!("127.0.0.1:{}", kafka.port)])
                .args(["--runnel", &broker.addr])
                .arg("--corpus")
                .arg(root.join("tests/differential/corpus"))
                .arg("--known")
                .arg(root.join("tests/differential/known-differences.txt")),
            // Within the test's 600 s with Kafka's start (at most 120 s) and Runnel's.
            Duration::from_secs(420),
        );
        println!("{out}");
        // The summary alone in the failure message, so a truncated log still shows it.
        let summary: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("NEW") || l.starts_with("MISSING") || l.starts_with("FAILED"))
            .collect();
        if !status.success() {
            // What Kafka did on its own (retention, log start offsets) explains most
            // timing-dependent differences.
            let log = std::fs::read_to_string(kafka.dir.join("server.log")).unwrap_or_default();
            for l in log.lines().filter(|l| {
                l.contains("log start offset")
                    || l.contains("Deleting segment")
                    || l.contains("retention")
            }) {
                println!("kafka: {l}");
            }
        }
        assert!(
            status.success(),
            "the differential test failed:\n{}\n{err}",
            summary.join("\n")
        );
        assert!(out.contains("OK: no new differences"), "{out}");
    });
}
