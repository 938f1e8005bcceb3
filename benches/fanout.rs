//! Fan-out: N consumers read the same hot data from one broker, zero copy on vs off, against
//! the loopback TCP limit measured in the same run (iperf3).
//!
//! `cargo bench -p runnel-benches --bench fanout` (or benches/fanout.sh, which builds the
//! release broker first). Environment: RUNNEL_BIN (broker binary, default
//! target/release/runnel), FANOUT_MIB (data size, default 1024), FANOUT_CONSUMERS (4),
//! FANOUT_ROUNDS (interleaved on/off rounds, default 2), FANOUT_MODES (default "on,off"),
//! FANOUT_IPERF (0 skips the loopback limit, e.g. under a profiler), BENCH_CORES (the
//! broker's --cores, default: all).
//!
//! The client speaks just enough Kafka by hand (Produce v3, Fetch v4) to stay out of the
//! way: a consumer reads each response into one reused buffer and walks only the batch
//! headers to find its next offset, as a real consumer must at least do.

#[path = "common.rs"]
mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "fanout";
const FETCH_MAX_BYTES: i32 = 8 << 20;

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let mib: u64 = env("FANOUT_MIB", 1024);
    let consumers: usize = env("FANOUT_CONSUMERS", 4);
    let rounds: usize = env("FANOUT_ROUNDS", 2);
    let bin = broker_bin();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    println!("fan-out: {consumers} consumers x {mib} MiB of hot data, {rounds} rounds");
    let modes_env = std::env::var("FANOUT_MODES").unwrap_or_else(|_| "on,off".into());
    let modes: Vec<&str> = modes_env.split(',').collect();
    let (limit_1, limit_n) = if env("FANOUT_IPERF", 1) == 1 {
        (iperf3(1), iperf3(consumers))
    } else {
        (None, None)
    };
    if let (Some(l1), Some(ln)) = (limit_1, limit_n) {
        println!(
            "loopback TCP limit (iperf3): 1 stream {l1:.2} GB/s, {consumers} streams {ln:.2} GB/s"
        );
    }

    // Load once; every run then serves the same page-cached segment.
    {
        let broker = Broker::start(&bin, &data, &["--zero-copy", "on"]);
        let t = Instant::now();
        let end = produce(&broker.addr, mib << 20);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "loaded {end} records ({mib} MiB) in {secs:.2} s: {:.2} GB/s produce (acks=1, 1 connection)",
            (mib << 20) as f64 / secs / 1e9
        );
        broker.stop();
    }

    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for round in 0..rounds {
        for &mode in &modes {
            let broker = Broker::start(&bin, &data, &["--zero-copy", mode]);
            let end = end_offset(&broker.addr);
            // Warm-up pass by one consumer: the data is in the page cache for both modes.
            consume(&broker.addr, end);
            let cpu0 = broker.cpu_seconds();
            let t = Instant::now();
            let handles: Vec<_> = (0..consumers)
                .map(|_| {
                    let addr = broker.addr.clone();
                    std::thread::spawn(move || consume(&addr, end))
                })
                .collect();
            let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let secs = t.elapsed().as_secs_f64();
            let cpu = broker.cpu_seconds() - cpu0;
            let gbps = bytes as f64 / secs / 1e9;
            let cpu_per_gb = cpu / (bytes as f64 / 1e9);
            println!(
                "round {round} zero-copy={mode} (broker pid {}): {:.2} GB served in {secs:.2} s = {gbps:.2} GB/s; broker CPU {cpu:.2} s = {cpu_per_gb:.3} s/GB",
                broker.child.id(),
                bytes as f64 / 1e9
            );
            results.push((mode, gbps, cpu_per_gb));
            broker.stop();
        }
    }
    if modes.len() != 2 {
        return;
    }
    let median = |mode: &str, f: fn(&(&str, f64, f64)) -> f64| {
        let mut v: Vec<f64> = results.iter().filter(|r| r.0 == mode).map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_gbps, off_gbps) = (median("on", |r| r.1), median("off", |r| r.1));
    let (on_cpu, off_cpu) = (median("on", |r| r.2), median("off", |r| r.2));
    println!();
    println!(
        "| consumers | zero copy | GB/s | ratio to loopback {consumers}-stream | broker CPU s/GB |"
    );
    println!("|---|---|---|---|---|");
    for (mode, gbps, cpu) in [("on", on_gbps, on_cpu), ("off", off_gbps, off_cpu)] {
        let ratio = limit_n.map_or("n/a".to_string(), |l| format!("{:.2}", gbps / l));
        println!("| {consumers} | {mode} | {gbps:.2} | {ratio} | {cpu:.3} |");
    }
    println!(
        "CPU per GB, zero copy on / off: {:.2} (target <= 0.6); throughput on / off: {:.2}",
        on_cpu / off_cpu,
        on_gbps / off_gbps
    );
}

/// Loopback TCP throughput with `streams` parallel streams, GB/s; None without iperf3.
fn iperf3(streams: usize) -> Option<f64> {
    let port = free_port();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "5", "-P"])
        .arg(streams.to_string())
        .arg("-J")
        .output()
        .ok()?;
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    // "sum_received": { ... "bits_per_second": X ... }
    let at = text.find("\"sum_received\"")?;
    let rest = &text[at..];
    let b = rest.find("\"bits_per_second\"")?;
    let num: String = rest[b + 18..]
        .trim_start_matches(|c: char| c == ':' || c.is_whitespace())
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
        .collect();
    num.parse::<f64>().ok().map(|bps| bps / 8e9)
}

/// Produces `bytes` of 1 KiB records in 1 MiB requests of four 256 KiB batches; returns the
/// log end offset.
fn produce(addr: &str, bytes: u64) -> i64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    // Metadata v4 with auto-create makes the topic.
    let mut md = Vec::new();
    md.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut md, TOPIC);
    md.push(1);
    s.write_all(&frame(3, 4, 0, &md)).unwrap();
    let mut buf = Vec::new();
    read_frame(&mut s, &mut buf);

    let mut batch = runnel_record::builder::BatchBuilder::new(1_700_000_000_000);
    let value = vec![b'x'; 1000];
    for _ in 0..256 {
        batch.append(1_700_000_000_000, Some(b"key"), Some(&value), &[]);
    }
    let batch = batch.build();
    let records: Vec<u8> = batch
        .iter()
        .copied()
        .cycle()
        .take(batch.len() * 4)
        .collect();
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    body.extend_from_slice(&records);
    let req = frame(0, 3, 1, &body);
    let requests = bytes.div_ceil(records.len() as u64);
    // Keep 4 requests in flight.
    let mut sent = 0;
    let mut answered = 0;
    while answered < requests {
        while sent < requests && sent - answered < 4 {
            s.write_all(&req).unwrap();
            sent += 1;
        }
        read_frame(&mut s, &mut buf);
        // corr, [topic], name, [partition], index, error_code
        let name_len = i16::from_be_bytes([buf[8], buf[9]]) as usize;
        let at = 10 + name_len + 4 + 4;
        let err = i16::from_be_bytes([buf[at], buf[at + 1]]);
        assert_eq!(err, 0, "produce error {err}");
        answered += 1;
    }
    end_offset(addr)
}

/// The high watermark, from an empty fetch.
fn end_offset(addr: &str) -> i64 {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut buf = Vec::new();
    fetch(&mut s, &mut buf, i64::MAX / 2, 0);
    read_frame(&mut s, &mut buf);
    let (_, hw, _) = parse_fetch(&buf);
    hw
}

fn fetch(s: &mut TcpStream, _buf: &mut [u8], offset: i64, max_bytes: i32) {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&500i32.to_be_bytes()); // max wait
    body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&max_bytes.to_be_bytes());
    body.push(0); // read_uncommitted
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&max_bytes.to_be_bytes());
    s.write_all(&frame(1, 4, 2, &body)).unwrap();
}

/// (next offset after the records, high watermark, record bytes) of a Fetch v4 response.
fn parse_fetch(buf: &[u8]) -> (Option<i64>, i64, usize) {
    let be_i32 = |at: usize| i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
    let be_i64 = |at: usize| i64::from_be_bytes(buf[at..at + 8].try_into().unwrap());
    // corr, throttle, [topics] count, name, [partitions] count
    let name_len = i16::from_be_bytes([buf[12], buf[13]]) as usize;
    let p = 14 + name_len + 4;
    let error = i16::from_be_bytes([buf[p + 4], buf[p + 5]]);
    let hw = be_i64(p + 6);
    // partition i32, error i16, hw i64, lso i64, aborted (null: -1)
    let aborted = be_i32(p + 22);
    assert!(error == 0 || error == 1, "fetch error {error}");
    assert_eq!(aborted, -1);
    let len = be_i32(p + 26).max(0) as usize;
    let records = &buf[p + 30..p + 30 + len];
    let mut pos = 0;
    let mut next = None;
    while pos + 61 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().unwrap());
        let blen = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 12 + blen > records.len() {
            break;
        }
        let last_delta = i32::from_be_bytes(records[pos + 23..pos + 27].try_into().unwrap());
        next = Some(base + i64::from(last_delta) + 1);
        pos += 12 + blen;
    }
    (next, hw, len)
}

/// Reads the partition from 0 to `end`; returns the record bytes received.
fn consume(addr: &str, end: i64) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(FETCH_MAX_BYTES as usize + 4096);
    let mut offset = 0;
    let mut bytes = 0u64;
    while offset < end {
        fetch(&mut s, &mut buf, offset, FETCH_MAX_BYTES);
        read_frame(&mut s, &mut buf);
        let (next, _, len) = parse_fetch(&buf);
        offset = next.expect("a fetch below the end returns a batch");
        bytes += len as u64;
    }
    bytes
}
