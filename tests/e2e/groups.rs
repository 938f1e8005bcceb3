//! Consumer groups with confluent-kafka and kafka-python (tests/python/groups_test.py).

use crate::common::*;
use std::process::Command;
use std::time::Duration;

const GROUP_FLAGS: &[&str] = &[
    "--cores",
    "2",
    "--group-initial-rebalance-delay-ms",
    "100",
    "--group-min-session-timeout-ms",
    "1000",
];

/// Group tests depend on session and rebalance timing: they run one at a time, so two
/// brokers and their Python members do not starve each other on a 2-core machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn case(b: &Broker, name: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/groups_test.py"
    );
    let (status, out, err) = run_cmd(
        Command::new("python3").args([script, name, &b.addr]),
        Duration::from_secs(150),
    );
    assert!(
        status.success() && out.contains("OK"),
        "{name} failed:\n{out}\n{err}\nbroker log:\n{}",
        b.logs()
    );
}

#[test]
fn two_members_split_commit_leave_and_a_third_resumes_exactly() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "split_commit_resume")
    });
}

#[test]
fn kafka_python_members_split_commit_and_resume() {
    with_timeout(600, || {
        let _serial = serial();
        case(
            &Broker::start(GROUP_FLAGS),
            "kafka_python_split_commit_resume",
        )
    });
}

#[test]
fn a_killed_member_is_expelled_after_its_session_timeout() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "expel")
    });
}

#[test]
fn cooperative_sticky_rebalances_incrementally() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "cooperative")
    });
}

#[test]
fn eight_cooperative_members_converge_through_fast_subscription_changes() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "subscription_changes")
    });
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "static_membership")
    });
}

#[test]
fn list_describe_and_delete_groups() {
    with_timeout(600, || {
        let _serial = serial();
        case(&Broker::start(GROUP_FLAGS), "admin_groups")
    });
}

#[test]
fn committed_offsets_survive_a_broker_restart_and_a_crash() {
    with_timeout(600, || {
        let _serial = serial();
        let mut b = Broker::start(GROUP_FLAGS);
        case(&b, "commit_before_restart");
        assert!(b.stop().success());
        b.restart();
        assert!(b.logs().contains("loaded committed offsets"));
        case(&b, "resume_after_restart");
        // And after SIGKILL (commits are fdatasynced before they are acknowledged).
        b.kill();
        b.restart();
        let c = run_cmd(
            Command::new("python3").args([
                "-c",
                "import confluent_kafka as ck,sys; c=ck.Consumer({'bootstrap.servers':sys.argv[1],'group.id':'restart-group'}); \
                 r=c.committed([ck.TopicPartition('g-restart',p) for p in range(3)],timeout=10); \
                 print(sorted(tp.offset for tp in r))",
                &b.addr,
            ]),
            Duration::from_secs(60),
        );
        assert_eq!(c.1.trim(), "[22, 22, 22]", "{}", c.2);
    });
}
