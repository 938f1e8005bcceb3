//! Hostile clients against the real binary: garbage, truncated requests, huge size prefixes,
//! slowloris, thousands of idle connections, consumers that never read, pipelines that never
//! read, request floods. For each: the broker stays up, its memory stays within a stated
//! bound, the limit that protected it is counted, and a well-behaved client running at the
//! same time gets its answers within a stated latency.
//!
//! The latency bounds are loose on purpose: CI runs these next to other tests on 2 cores.
//! The figures each test saw are printed (cargo test -- --nocapture).

use crate::common::*;
use crate::protocol::{batch, call, connect, encode_request, fetch_request, produce_to, send_raw};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a well-behaved client may wait for one answer while the broker is under attack.
const WELL_BEHAVED_MAX: Duration = Duration::from_secs(2);

fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss_mib(b: &Broker) -> u64 {
    proc_status(b.pid().unwrap(), "VmRSS:") / 1024
}

fn threads(b: &Broker) -> u64 {
    proc_status(b.pid().unwrap(), "Threads:")
}

/// A well-behaved client: produces one small batch and reads it back, on a fresh
/// connection; returns the slowest of the answers.
fn well_behaved_round(addr: &str, topic: &'static str) -> Duration {
    let mut s = connect(addr);
    let t = Instant::now();
    let r = produce_to(&mut s, 9, vec![(topic, 0, batch(&[b"ok"]))]);
    let produce = t.elapsed();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "the well-behaved produce failed");
    let t = Instant::now();
    let f: FetchResponse = call(
        &mut s,
        ApiKey::Fetch,
        12,
        &fetch_request(topic, &[(0, p.base_offset, 1 << 16)], 0, 0, 1 << 20),
    );
    assert_eq!(f.responses[0].partitions[0].error_code, 0);
    produce.max(t.elapsed())
}

/// Runs well-behaved rounds on a thread until `stop` is set; returns the slowest answer.
fn well_behaved_while(
    addr: String,
    topic: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Duration, u32)> {
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut rounds = 0;
        while !stop.load(std::sync::atomic::Ordering::Acquire) || rounds < 3 {
            worst = worst.max(well_behaved_round(&addr, topic));
            rounds += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (worst, rounds)
    })
}

fn no_panic(b: &Broker) {
    let logs = b.logs();
    assert!(!logs.contains("panicked"), "the broker panicked:\n{logs}");
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Raises this test process's open-file limit (and so its children's) to `want`, as far as
/// it may; returns the limit in effect.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            // Raising the hard limit needs CAP_SYS_RESOURCE (CI runs as root); without it,
            // the soft limit goes as high as the hard one.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn garbage_and_requests_truncated_at_every_byte_close_only_their_connection() {
    with_timeout(120, || {
        let b = Broker::start(&[]);
        let mut setup = connect(&b.addr);
        crate::protocol::create_via_metadata(&mut setup, "hostile-trunc");
        // Real requests as clients send them: a Produce v9 with a batch, a Fetch v12, a
        // Metadata v12, a JoinGroup v7.
        let produce = {
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("hostile-trunc")))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch(&[b"truncated", b"requests"]))),
                    ])]);
            encode_request(ApiKey::Produce, 9, 1, &req)
        };
        let fetch = encode_request(
            ApiKey::Fetch,
            12,
            2,
            &fetch_request("hostile-trunc", &[(0, 0, 1 << 20)], 100, 1, 1 << 20),
        );
        let metadata = encode_request(ApiKey::Metadata, 12, 3, &MetadataRequest::default());
        let join = encode_request(
            ApiKey::JoinGroup,
            7,
            4,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("hostile-g")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]),
        );
        let mut cuts = 0;
        for frame in [&produce, &fetch, &metadata, &join] {
            // The full size announced, then only the first `cut` bytes, then a close.
            for cut in 0..frame.len() {
                let mut s = TcpStream::connect(&b.addr).unwrap();
                let mut buf = (frame.len() as i32).to_be_bytes().to_vec();
                buf.extend_from_slice(&frame[..cut]);
                s.write_all(&buf).unwrap();
                drop(s);
                cuts += 1;
            }
            // A frame whose size is honest but whose body is cut short inside: the same
            // bytes, the size saying the truncated length. Each is answered with an error
            // or a logged close, never a panic.
            for cut in (2..frame.len()).step_by(3) {
                let mut s = connect(&b.addr);
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                send_raw(&mut s, &frame[..cut]);
                let mut sink = Vec::new();
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.read_to_end(&mut sink);
                cuts += 1;
            }
        }
        // Random garbage: random sizes (most beyond the limit or negative) and bodies.
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for i in 0..300 {
            let mut s = TcpStream::connect(&b.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let len = (rng.next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len + 4).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 {
                // A plausible size, so the body reaches the decoders.
                buf[..4].copy_from_slice(&(len as i32).to_be_bytes());
                // A known API key at a random version, so it passes the first checks.
                if len >= 4 {
                    buf[4] = 0;
                    buf[5] = (rng.next() % 70) as u8;
                    buf[6] = 0;
                    buf[7] = (rng.next() % 18) as u8;
                }
            }
            s.write_all(&buf).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        println!("{cuts} truncated requests, 300 garbage connections");
        well_behaved_round(&b.addr, "hostile-trunc");
        no_panic(&b);
        // Nothing logged across lines: every close is one log entry.
        for line in b.logs().lines() {
            assert!(
                line.contains(" WARN ")
                    || line.contains(" INFO ")
                    || line.contains(" ERROR ")
                    || line.contains(" DEBUG ")
                    || line.starts_with("runnel"),
                "a log entry split across lines: {line:?}"
            );
        }
    });
}

#[test]
fn a_2gib_size_prefix_and_slowloris_are_closed_and_others_are_served_meanwhile() {
    with_timeout(120, || {
        let b = Broker::start(&["--request-read-timeout-ms", "3000", "--cores", "1"]);
        let mut setup = connect(&b.addr);
        crate::protocol::create_via_metadata(&mut setup, "hostile-slow");
        let rss_before = rss_mib(&b);

        // 2 GiB announced: closed at once, the size logged as it is.
        let mut s = connect(&b.addr);
        s.write_all(&i32::MAX.to_be_bytes()).unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(s.read(&mut byte), Ok(0) | Err(_)));
        // A negative size says so, not "exceeds".
        let mut s = connect(&b.addr);
        s.write_all(&(-1_995_213_087i32).to_be_bytes()).unwrap();
        assert!(matches!(s.read(&mut byte), Ok(0) | Err(_)));
        wait_until("the size refusals logged", Duration::from_secs(5), || {
            let l = b.logs();
            l.contains("request frame of 2147483647 bytes exceeds --max-request-bytes")
                && l.contains("negative request frame size -1995213087")
        });

        // 300 connections announce 100 MiB requests (the default limit) and send a few
        // bytes; 20 more trickle a byte every 300 ms. Before, the announced sizes took the
        // shard's whole request budget and every client on it stalled.
        let mut held = Vec::new();
        for _ in 0..300 {
            let mut s = TcpStream::connect(&b.addr).unwrap();
            let mut buf = (100i32 << 20).to_be_bytes().to_vec();
            buf.extend_from_slice(&[0, 0, 0, 9, 0, 0]);
            s.write_all(&buf).unwrap();
            held.push(s);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trickle = {
            let addr = b.addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..20)
                    .map(|_| {
                        let mut s = TcpStream::connect(&addr).unwrap();
                        s.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
                        s
                    })
                    .collect();
                let mut closed = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) && !conns.is_empty() {
                    conns.retain_mut(|s| s.write_all(&[0]).is_ok());
                    closed = 20 - conns.len();
                    std::thread::sleep(Duration::from_millis(300));
                }
                closed
            })
        };
        let good = well_behaved_while(b.addr.clone(), "hostile-slow", stop.clone());
        let rss_during = rss_mib(&b);
        // Every slow connection is closed once its request is 3 s old.
        wait_until(
            "the slow connections closed",
            Duration::from_secs(30),
            || b.metric_sum("connections_closed_slow_request") >= 320,
        );
        stop.store(true, std::sync::atomic::Ordering::Release);
        let (worst, rounds) = good.join().unwrap();
        trickle.join().unwrap();
        for mut s in held {
            assert!(matches!(s.read(&mut byte), Ok(0) | Err(_)), "still open");
        }
        println!(
            "slowloris: {rounds} well-behaved rounds, slowest answer {worst:?}; RSS {rss_before} MiB before, {rss_during} MiB with 320 slow connections"
        );
        assert!(
            worst < WELL_BEHAVED_MAX,
            "a well-behaved client waited {worst:?}"
        );
        assert!(
            rss_during < rss_before + 64,
            "RSS grew from {rss_before} to {rss_during} MiB with 320 slow connections"
        );
        // Logged once for the lot, not once per connection.
        let lines = b
            .logs()
            .matches("did not arrive in full within --request-read-timeout-ms")
            .count();
        assert_eq!(lines, 1, "the slow closes were logged {lines} times");
        no_panic(&b);
    });
}

#[test]
fn ten_thousand_idle_connections_and_the_connection_limits() {
    with_timeout(180, || {
        const IDLE: usize = 10_000;
        // This process holds one end of each connection, the broker (which inherits the
        // limit) the other.
        let limit = raise_nofile(IDLE as u64 + 4096);
        assert!(
            limit >= IDLE as u64 + 2048,
            "this test needs an open-file limit of {} (has {limit})",
            IDLE + 2048
        );
        let max = (IDLE + 10).to_string();
        let b = Broker::start(&["--max-connections", &max, "--max-connections-per-ip", &max]);
        let mut setup = connect(&b.addr);
        crate::protocol::create_via_metadata(&mut setup, "hostile-idle");
        let rss_before = rss_mib(&b);
        let fds_before = std::fs::read_dir(format!("/proc/{}/fd", b.pid().unwrap()))
            .unwrap()
            .count();
        let t = Instant::now();
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE - 2 {
            idle.push(TcpStream::connect(&b.addr).unwrap());
        }
        wait_until(
            "the idle connections accepted",
            Duration::from_secs(60),
            || b.metric_sum("connections_open") as usize >= IDLE - 1,
        );
        let connected = t.elapsed();
        let rss_idle = rss_mib(&b);
        let fds_idle = std::fs::read_dir(format!("/proc/{}/fd", b.pid().unwrap()))
            .unwrap()
            .count();
        // One descriptor per idle connection (the socket; no duplicate, no pipe).
        assert!(
            fds_idle - fds_before <= IDLE + 16,
            "{fds_before} descriptors before, {fds_idle} with {IDLE} idle connections"
        );
        // The metrics endpoint and a well-behaved client still answer.
        let worst = well_behaved_round(&b.addr, "hostile-idle");
        assert!(
            worst < WELL_BEHAVED_MAX,
            "a well-behaved client waited {worst:?}"
        );
        assert!(b.metric_sum("connections_open") as usize >= IDLE - 1);
        // Past --max-connections: accepted and closed at once, counted, logged once.
        // (The ones admitted stay open and quiet: their reads time out.)
        let mut refused = 0;
        let mut extra = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(&b.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(0) => refused += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
                _ => extra.push(s),
            }
        }
        assert!(
            refused >= 8,
            "only {refused} of 20 connections past the limit refused"
        );
        wait_until("the refusals counted", Duration::from_secs(5), || {
            b.metric_sum("connections_refused_max") >= 8
        });
        // (The counter moves before the line is written, and the test reads the broker's
        // output on a thread of its own: wait for the line, then count.)
        wait_until("the refusal logged", Duration::from_secs(5), || {
            b.logs().contains("--max-connections reached")
        });
        assert_eq!(
            b.logs().matches("--max-connections reached").count(),
            1,
            "refusals are logged once a minute"
        );
        // Room again once clients leave.
        drop(extra);
        idle.truncate(IDLE - 100);
        wait_until(
            "closed connections counted",
            Duration::from_secs(20),
            || (b.metric_sum("connections_open") as usize) < IDLE - 50,
        );
        well_behaved_round(&b.addr, "hostile-idle");
        println!(
            "{IDLE} idle connections in {connected:?}: RSS {rss_before} -> {rss_idle} MiB, descriptors {fds_before} -> {fds_idle}; a well-behaved round took {worst:?}"
        );
        assert!(
            rss_idle < rss_before + 200,
            "RSS grew from {rss_before} to {rss_idle} MiB with {IDLE} idle connections"
        );
        drop(idle);
        no_panic(&b);

        // Per IP: the 4th connection from 127.0.0.1 is refused.
        let b = Broker::start(&["--max-connections-per-ip", "3"]);
        let mut conns: Vec<TcpStream> = (0..3).map(|_| connect(&b.addr)).collect();
        crate::protocol::create_via_metadata(&mut conns[0], "hostile-per-ip");
        wait_until("3 connections open", Duration::from_secs(5), || {
            b.metric_sum("connections_open") == 3
        });
        let mut s = connect(&b.addr);
        let mut byte = [0u8; 1];
        assert!(matches!(s.read(&mut byte), Ok(0) | Err(_)));
        assert_eq!(b.metric_sum("connections_refused_per_ip"), 1);
        drop(conns);
        wait_until("room again", Duration::from_secs(5), || {
            b.metric_sum("connections_open") == 0
        });
        well_behaved_round(&b.addr, "hostile-per-ip");
    });
}

/// Record batches of about `size` bytes each into `topic`-0, `n` of them.
fn fill(addr: &str, topic: &'static str, n: usize, size: usize) {
    let mut s = connect(addr);
    crate::protocol::create_via_metadata(&mut s, topic);
    let value = vec![7u8; 1000];
    let records: Vec<&[u8]> = (0..size / 1000).map(|_| &value[..]).collect();
    for _ in 0..n {
        let r = produce_to(&mut s, 9, vec![(topic, 0, batch(&records))]);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
}

#[test]
fn consumers_that_never_read_hold_no_threads_and_are_disconnected() {
    with_timeout(120, || {
        let b = Broker::start(&["--socket-send-timeout-ms", "4000", "--cores", "1"]);
        // 24 MiB: more than the socket buffers of a loopback connection take.
        fill(&b.addr, "hostile-stuck", 28, 900_000);
        let threads_before = threads(&b);
        let rss_before = rss_mib(&b);
        // 30 consumers ask for everything and never read a byte of the answer.
        let fetch = encode_request(
            ApiKey::Fetch,
            12,
            1,
            &fetch_request("hostile-stuck", &[(0, 0, 50 << 20)], 0, 1, 50 << 20),
        );
        let stuck: Vec<TcpStream> = (0..30)
            .map(|_| {
                let mut s = TcpStream::connect(&b.addr).unwrap();
                send_raw(&mut s, &fetch);
                s
            })
            .collect();
        // Their splices are waiting (the answers went partly out).
        wait_until("the stuck answers started", Duration::from_secs(20), || {
            b.metric_sum("connections_open") >= 30
        });
        std::thread::sleep(Duration::from_millis(500)); // let the splices fill the sockets
        let threads_stuck = threads(&b);
        // Meanwhile others consume and produce.
        let worst = well_behaved_round(&b.addr, "hostile-stuck");
        let mut reader = connect(&b.addr);
        let t = Instant::now();
        let f: FetchResponse = call(
            &mut reader,
            ApiKey::Fetch,
            12,
            &fetch_request("hostile-stuck", &[(0, 0, 8 << 20)], 0, 1, 8 << 20),
        );
        let full_fetch = t.elapsed();
        assert!(f.responses[0].partitions[0].records.as_ref().unwrap().len() > 4 << 20);
        // After the send timeout, every stuck consumer is disconnected.
        wait_until(
            "the stuck consumers closed",
            Duration::from_secs(30),
            || b.metric_sum("connections_closed_slow_reader") >= 30,
        );
        let rss_stuck = rss_mib(&b);
        println!(
            "30 stuck consumers: broker threads {threads_before} -> {threads_stuck}, RSS {rss_before} -> {rss_stuck} MiB; a well-behaved round {worst:?}, an 8 MiB fetch {full_fetch:?}"
        );
        // A blocked splice used to take a kernel worker thread per stuck consumer.
        assert!(
            threads_stuck <= threads_before + 4,
            "broker threads {threads_before} -> {threads_stuck} with 30 stuck consumers"
        );
        assert!(worst < WELL_BEHAVED_MAX && full_fetch < WELL_BEHAVED_MAX);
        assert!(rss_stuck < rss_before + 64);
        drop(stuck);
        no_panic(&b);
    });
}

#[test]
fn a_thousand_pipelined_requests_unread_and_a_flood_from_100_connections() {
    with_timeout(120, || {
        let b = Broker::start(&["--cores", "1"]);
        fill(&b.addr, "hostile-pipe", 4, 256 << 10);
        let rss_before = rss_mib(&b);
        // 1,000 fetches of 1 MiB each, sent without reading an answer: the broker reads
        // only --connection-max-in-flight-requests ahead, so it holds a bounded amount.
        let mut piped = connect(&b.addr);
        let mut frames = Vec::new();
        for i in 0..1000 {
            let req = fetch_request("hostile-pipe", &[(0, 0, 1 << 20)], 0, 1, 1 << 20);
            let frame = encode_request(ApiKey::Fetch, 12, i, &req);
            frames.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            frames.extend_from_slice(&frame);
        }
        let mut w = piped.try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&frames).is_ok());

        // A flood: 100 connections each sending Metadata and ApiVersions requests as fast as
        // they can for 3 s, 8 in flight each.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood: Vec<_> = (0..100)
            .map(|i| {
                let addr = b.addr.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut s = connect(&addr);
                    let req = if i % 2 == 0 {
                        encode_request(ApiKey::Metadata, 12, 0, &MetadataRequest::default())
                    } else {
                        encode_request(ApiKey::ApiVersions, 3, 0, &ApiVersionsRequest::default())
                    };
                    let mut burst = Vec::new();
                    for _ in 0..8 {
                        burst.extend_from_slice(&(req.len() as i32).to_be_bytes());
                        burst.extend_from_slice(&req);
                    }
                    let mut answered = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        s.write_all(&burst).unwrap();
                        for _ in 0..8 {
                            crate::protocol::read_response(&mut s).expect("an answer");
                            answered += 1;
                        }
                    }
                    answered
                })
            })
            .collect();
        let good = well_behaved_while(b.addr.clone(), "hostile-pipe", stop.clone());
        std::thread::sleep(Duration::from_secs(3));
        let rss_during = rss_mib(&b);
        stop.store(true, std::sync::atomic::Ordering::Release);
        let answered: u64 = flood.into_iter().map(|h| h.join().unwrap()).sum();
        let (worst, rounds) = good.join().unwrap();

        // Now read the 1,000 answers: all there, in order.
        for i in 0..1000 {
            let mut resp = crate::protocol::read_response(&mut piped).expect("an answer");
            let header = ResponseHeader::decode(&mut resp, 1).unwrap();
            assert_eq!(header.correlation_id, i, "answers out of order");
        }
        assert!(writer.join().unwrap());
        println!(
            "flood: {answered} answers to 100 connections in 3 s; {rounds} well-behaved rounds, slowest {worst:?}; RSS {rss_before} -> {rss_during} MiB with 1,000 unread fetches pipelined"
        );
        assert!(
            worst < WELL_BEHAVED_MAX,
            "a well-behaved client waited {worst:?}"
        );
        assert!(rss_during < rss_before + 128);
        no_panic(&b);
    });
}

#[test]
fn a_panic_in_a_shard_aborts_the_whole_broker_loudly() {
    with_timeout(60, || {
        // A fault point makes shard 1 of 2 panic once it serves: the broker must not go on
        // with half its shards. The panic hook logs where and why, then aborts.
        let tmp = tempfile::tempdir().unwrap();
        let mut b = Broker::launch(
            &tmp.path().join("data"),
            "127.0.0.1:0",
            &["--cores", "2", "--test-panic-shard", "1"],
        );
        let status = b.wait(Duration::from_secs(30));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        wait_until("the panic logged", Duration::from_secs(5), || {
            b.logs().contains("runnel: panicked on thread")
        });
        let logs = b.logs();
        assert!(
            logs.contains("--test-panic-shard asked for a panic"),
            "{logs}"
        );
        assert!(logs.contains("ERROR"), "{logs}");
        // (The harness's check for panics would fail this test on drop: this one was asked for.)
        b.clear_logs();
    });
}

#[test]
fn partly_sent_large_requests_cannot_deadlock_the_request_budget() {
    with_timeout(120, || {
        // A 4 MiB budget and four connections each announcing 4 MiB and sending 1.5 MiB:
        // if a frame held its budget while waiting for more, the four would each hold some
        // and wait for the rest forever (waiting for budget does not count against the read
        // deadline), and every client of the shard behind them. A frame that must wait
        // gives back what it holds, so the deadline closes the stalled ones.
        let b = Broker::start(&[
            "--queued-max-request-bytes",
            "4194304",
            "--max-request-bytes",
            "4194304",
            "--request-read-timeout-ms",
            "2000",
        ]);
        let mut setup = connect(&b.addr);
        crate::protocol::create_via_metadata(&mut setup, "hostile-budget");
        let stalled: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(&b.addr).unwrap();
                let mut buf = (4i32 << 20).to_be_bytes().to_vec();
                buf.extend(std::iter::repeat_n(0u8, 3 << 19));
                s.write_all(&buf).unwrap();
                s
            })
            .collect();
        let t = Instant::now();
        let worst = well_behaved_round(&b.addr, "hostile-budget");
        let waited = t.elapsed();
        wait_until(
            "the stalled requests closed",
            Duration::from_secs(30),
            || b.metric_sum("connections_closed_slow_request") >= 4,
        );
        println!("budget: a well-behaved round took {waited:?} (slowest answer {worst:?}) behind 4 stalled 4 MiB requests");
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        drop(stalled);
        no_panic(&b);
    });
}
