//! Produce throughput with idempotence on vs off, in the same run against the same broker
//! build: `cargo bench -p runnel-benches --bench produce` (after
//! `cargo build --release --bin runnel`).
//!
//! One connection produces PRODUCE_MIB (default 1024) of 1 KiB records in batches of
//! PRODUCE_BATCH_RECORDS (default 256, i.e. 256 KiB) to
//! one partition, PRODUCE_IN_FLIGHT (default 5, librdkafka's and Java's limit with
//! idempotence) requests in flight, acks=-1 with the broker's --sync-on-acks-all=false (the
//! sync would dominate both sides equally). "on": every batch carries a producer id from
//! InitProducerId and consecutive sequence numbers, checked by the broker; "off": no
//! producer id. Batches are built (and their CRCs computed) before the clock starts.
//! PRODUCE_ROUNDS (default 3) interleaved rounds, each on a fresh data dir.

#[path = "common.rs"]
mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

const TOPIC: &str = "produce-bench";

fn main() {
    let mib: usize = env("PRODUCE_MIB", 1024);
    // PRODUCE_BATCH_RECORDS: records of 1 KiB per batch (default 256: 256 KiB batches).
    let per_batch: usize = env("PRODUCE_BATCH_RECORDS", 256);
    let rounds: usize = env("PRODUCE_ROUNDS", 3);
    let in_flight: usize = env("PRODUCE_IN_FLIGHT", 5);
    let bin = broker_bin();
    let batches = mib * 1024 / per_batch;
    println!("produce: {mib} MiB of 1 KiB records, {per_batch} per batch, {in_flight} in flight, {rounds} rounds");
    let mut results: Vec<(&str, f64)> = Vec::new();
    for round in 0..rounds {
        for mode in ["on", "off"] {
            let tmp = tempfile::tempdir().unwrap();
            let broker = Broker::start(&bin, tmp.path(), &["--sync-on-acks-all", "false"]);
            let mut s = TcpStream::connect(&broker.addr).unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            create_topic(&mut s, &mut buf);
            let pid = if mode == "on" {
                init_producer_id(&mut s, &mut buf)
            } else {
                -1
            };
            let requests: Vec<Vec<u8>> = (0..batches)
                .map(|i| {
                    produce_request(
                        build_batch(pid, (i * per_batch) as i32, per_batch),
                        i as i32,
                    )
                })
                .collect();
            let bytes: usize = requests.iter().map(Vec::len).sum();
            let t = Instant::now();
            let (mut sent, mut answered) = (0, 0);
            while answered < requests.len() {
                while sent < requests.len() && sent - answered < in_flight {
                    s.write_all(&requests[sent]).unwrap();
                    sent += 1;
                }
                read_frame(&mut s, &mut buf);
                // corr, [responses] count, name, [partitions] count, index, error code
                let name_len = i16::from_be_bytes([buf[8], buf[9]]) as usize;
                let at = 10 + name_len + 4 + 4;
                let err = i16::from_be_bytes([buf[at], buf[at + 1]]);
                assert_eq!(err, 0, "produce error {err}");
                answered += 1;
            }
            let secs = t.elapsed().as_secs_f64();
            let mbs = bytes as f64 / secs / 1e6;
            println!(
                "round {round} idempotence={mode}: {:.0} MB in {secs:.2} s = {mbs:.0} MB/s",
                bytes as f64 / 1e6
            );
            results.push((mode, mbs));
            broker.stop();
        }
    }
    let median = |mode: &str| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == mode)
            .map(|r| r.1)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median("on"), median("off"));
    println!();
    println!("| idempotence | MB/s (median) |");
    println!("|---|---|");
    println!("| on | {on:.0} |");
    println!("| off | {off:.0} |");
    println!(
        "idempotent / plain throughput: {:.2} (target >= 0.9)",
        on / off
    );
}

fn create_topic(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut md = Vec::new();
    md.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut md, TOPIC);
    md.push(1);
    s.write_all(&frame(3, 4, 0, &md)).unwrap();
    read_frame(s, buf);
}

/// InitProducerId v1 (non-flexible): transactional id null, timeout.
fn init_producer_id(s: &mut TcpStream, buf: &mut Vec<u8>) -> i64 {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&60_000i32.to_be_bytes());
    s.write_all(&frame(22, 1, 0, &body)).unwrap();
    read_frame(s, buf);
    // corr, throttle, error, producer id, epoch
    let err = i16::from_be_bytes([buf[8], buf[9]]);
    assert_eq!(err, 0, "InitProducerId error {err}");
    i64::from_be_bytes(buf[10..18].try_into().unwrap())
}

fn build_batch(pid: i64, seq: i32, records: usize) -> Vec<u8> {
    let mut b = runnel_record::builder::BatchBuilder::new(1_700_000_000_000);
    if pid >= 0 {
        b = b.producer(pid, 0, seq);
    }
    let value = vec![b'x'; 1000];
    for _ in 0..records {
        b.append(1_700_000_000_000, Some(b"key"), Some(&value), &[]);
    }
    b.build()
}

/// Produce v9 is flexible; v7 keeps the hand-written framing simple (acks=-1).
fn produce_request(records: Vec<u8>, corr: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.len() + 64);
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks=-1
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    body.extend_from_slice(&records);
    frame(0, 7, corr, &body)
}
