//! librdkafka (the `rdkafka` crate) against the real broker.

use crate::common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A delivery report: (partition, offset) or the error.
type Delivery = Result<(i32, i64), String>;

/// Remembers every delivery report.
#[derive(Clone, Default)]
pub struct Deliveries(pub Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let v = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push(v);
    }
}

pub fn producer(addr: &str, extra: &[(&str, &str)]) -> (BaseProducer<Deliveries>, Deliveries) {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let d = Deliveries::default();
    (c.create_with_context(d.clone()).expect("producer"), d)
}

pub fn consumer(addr: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("group.id", "unused-no-subscribe")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

/// Sends with retries while librdkafka's queue is full, then flushes; every delivery must
/// succeed.
fn send_all<'a>(
    p: &BaseProducer<Deliveries>,
    d: &Deliveries,
    records: impl Iterator<Item = BaseRecord<'a, [u8], [u8]>>,
) -> Vec<(i32, i64)> {
    let mut n = 0;
    for mut r in records {
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        n += 1;
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let got = d.0.lock().unwrap().clone();
    assert_eq!(got.len(), n, "a delivery report per record");
    got.into_iter()
        .map(|r| r.expect("delivery succeeded"))
        .collect()
}

/// Consumes exactly `n` messages from the assignment: (partition, offset, key, value, headers).
type Got = (i32, i64, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);
fn consume_n(c: &BaseConsumer, n: usize) -> Vec<Got> {
    let mut out = Vec::with_capacity(n);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed {} of {n}",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consume error: {e}"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                ));
            }
        }
    }
    out
}

fn assign(c: &BaseConsumer, topic: &str, partitions: &[(i32, Offset)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in partitions {
        tpl.add_partition_offset(topic, *p, *o).unwrap();
    }
    c.assign(&tpl).unwrap();
}

#[test]
fn ten_thousand_keyed_records_with_headers_round_trip_in_order_over_three_partitions() {
    with_timeout(180, || {
        let b = Broker::start(&["--default-partitions", "3", "--cores", "2"]);
        let (p, d) = producer(&b.addr, &[("acks", "all")]);
        // (partition, key, value, header value)
        type Sent = (i32, Vec<u8>, Vec<u8>, Vec<u8>);
        let records: Vec<Sent> = (0..10_000u32)
            .map(|i| {
                (
                    (i % 3) as i32,
                    format!("key-{}", i % 97).into_bytes(),
                    format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
                    i.to_be_bytes().to_vec(),
                )
            })
            .collect();
        let acked = send_all(
            &p,
            &d,
            records.iter().map(|(part, k, v, h)| {
                BaseRecord::to("orders")
                    .partition(*part)
                    .key(&k[..])
                    .payload(&v[..])
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "seq",
                        value: Some(&h[..]),
                    }))
            }),
        );
        assert_eq!(acked.len(), 10_000);

        let c = consumer(&b.addr, &[]);
        assign(
            &c,
            "orders",
            &[
                (0, Offset::Beginning),
                (1, Offset::Beginning),
                (2, Offset::Beginning),
            ],
        );
        let got = consume_n(&c, 10_000);
        let mut per_partition: HashMap<i32, Vec<&Got>> = HashMap::new();
        for g in &got {
            per_partition.entry(g.0).or_default().push(g);
        }
        for part in 0..3 {
            let want: Vec<_> = records.iter().filter(|r| r.0 == part).collect();
            let have = &per_partition[&part];
            assert_eq!(have.len(), want.len(), "partition {part}");
            for (i, (w, h)) in want.iter().zip(have.iter()).enumerate() {
                assert_eq!(h.1, i as i64, "offsets are dense and in order");
                assert_eq!(h.2, w.1, "key");
                assert_eq!(h.3, w.2, "value");
                assert_eq!(h.4, vec![("seq".to_string(), w.3.clone())], "headers");
            }
        }
        let (lo, hi) = c
            .fetch_watermarks("orders", 1, Duration::from_secs(10))
            .unwrap();
        assert_eq!((lo, hi), (0, per_partition[&1].len() as i64));
    });
}

#[test]
fn every_codec_stays_compressed_on_disk_and_round_trips() {
    with_timeout(180, || {
        let b = Broker::start(&[]);
        for (codec, bits) in [("gzip", 1i16), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
            let topic = format!("codec-{codec}");
            let (p, d) = producer(
                &b.addr,
                &[("compression.codec", codec), ("linger.ms", "50")],
            );
            let values: Vec<Vec<u8>> = (0..2000)
                .map(|i| format!("{codec} record {i} {}", "abc".repeat(20)).into_bytes())
                .collect();
            send_all(
                &p,
                &d,
                values
                    .iter()
                    .map(|v| BaseRecord::to(&topic).payload(&v[..]).key(&b"k"[..])),
            );
            let batches = segment_batches(&b.partition_dir(&topic, 0));
            assert!(!batches.is_empty());
            for (base, attrs, _) in &batches {
                assert_eq!(
                    attrs & 7,
                    bits,
                    "{codec}: batch at {base} is stored as sent"
                );
            }
            assert!(
                batches.iter().any(|(_, _, n)| *n > 1),
                "{codec}: batches hold many records"
            );
            let total: i32 = batches.iter().map(|x| x.2).sum();
            assert_eq!(total, 2000);
            let c = consumer(&b.addr, &[]);
            assign(&c, &topic, &[(0, Offset::Beginning)]);
            let got = consume_n(&c, 2000);
            for (i, g) in got.iter().enumerate() {
                assert_eq!(g.1, i as i64);
                assert_eq!(g.3, values[i], "{codec} value {i}");
            }
        }
    });
}

#[test]
fn list_offsets_earliest_latest_and_by_time() {
    with_timeout(120, || {
        let b = Broker::start(&[]);
        let (p, d) = producer(&b.addr, &[("linger.ms", "0")]);
        let base_ts = 1_700_000_000_000i64;
        let values: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 10]).collect();
        send_all(
            &p,
            &d,
            values.iter().enumerate().map(|(i, v)| {
                BaseRecord::to("times")
                    .payload(&v[..])
                    .key(&b"k"[..])
                    .timestamp(base_ts + 1000 * i as i64)
            }),
        );
        let c = consumer(&b.addr, &[]);
        assert_eq!(
            c.fetch_watermarks("times", 0, Duration::from_secs(10))
                .unwrap(),
            (0, 10)
        );
        let lookup = |ts: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("times", 0, Offset::Offset(ts))
                .unwrap();
            let r = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
            r.find_partition("times", 0).unwrap().offset()
        };
        assert_eq!(lookup(base_ts), Offset::Offset(0));
        assert_eq!(lookup(base_ts + 4500), Offset::Offset(5));
        assert_eq!(lookup(base_ts + 9000), Offset::Offset(9));
        // After the last record: -1 (librdkafka reports it as End).
        assert_eq!(lookup(base_ts + 10_000), Offset::End);
        assert_eq!(lookup(0), Offset::Offset(0));
    });
}

#[test]
fn consume_from_the_middle_of_a_batch() {
    with_timeout(120, || {
        let b = Broker::start(&[]);
        let (p, d) = producer(
            &b.addr,
            &[("linger.ms", "200"), ("batch.num.messages", "1000")],
        );
        let values: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
        send_all(
            &p,
            &d,
            values
                .iter()
                .map(|v| BaseRecord::to("mid").payload(&v[..]).key(&b"k"[..])),
        );
        let batches = segment_batches(&b.partition_dir("mid", 0));
        assert!(batches.len() < 10, "records were batched: {batches:?}");
        let c = consumer(&b.addr, &[]);
        assign(&c, "mid", &[(0, Offset::Offset(57))]);
        let got = consume_n(&c, 43);
        assert_eq!(got[0].1, 57, "the first record is the one asked for");
        assert_eq!(got[0].3, values[57]);
        assert_eq!(got.last().unwrap().1, 99);
    });
}

#[test]
fn a_900_kb_record_round_trips() {
    with_timeout(120, || {
        let b = Broker::start(&[]);
        let (p, d) = producer(&b.addr, &[("message.max.bytes", "2000000")]);
        let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
        send_all(
            &p,
            &d,
            std::iter::once(BaseRecord::to("big").payload(&big[..]).key(&b"k"[..])),
        );
        let c = consumer(&b.addr, &[("fetch.message.max.bytes", "1048576")]);
        assign(&c, "big", &[(0, Offset::Beginning)]);
        let got = consume_n(&c, 1);
        assert_eq!(got[0].3, big);
    });
}

fn produce_numbered(addr: &str, topic: &str, from: u32, n: u32) -> Vec<(i32, i64)> {
    let (p, d) = producer(addr, &[("acks", "all")]);
    let values: Vec<Vec<u8>> = (from..from + n).map(|i| i.to_be_bytes().to_vec()).collect();
    send_all(
        &p,
        &d,
        values
            .iter()
            .map(|v| BaseRecord::to(topic).payload(&v[..]).key(&b"k"[..])),
    )
}

fn consume_numbered(addr: &str, topic: &str, n: usize) -> Vec<u32> {
    let c = consumer(addr, &[]);
    assign(&c, topic, &[(0, Offset::Beginning)]);
    consume_n(&c, n)
        .into_iter()
        .map(|g| u32::from_be_bytes(g.3.try_into().unwrap()))
        .collect()
}

#[test]
fn a_restart_keeps_every_record_and_topic_and_needs_no_recovery() {
    with_timeout(180, || {
        let mut b = Broker::start(&["--segment-bytes", "65536"]);
        produce_numbered(&b.addr, "keep", 0, 5000);
        produce_numbered(&b.addr, "keep2", 0, 10);
        assert!(b.stop().success(), "exit 0 on SIGTERM");
        assert!(
            b.dir.join(".runnel_cleanshutdown").exists(),
            "clean-shutdown marker written"
        );
        assert!(b.logs().contains("runnel stopped cleanly"));
        b.restart();
        assert!(b.logs().contains("clean_shutdown=true"));
        assert_eq!(
            consume_numbered(&b.addr, "keep", 5000),
            (0..5000).collect::<Vec<_>>()
        );
        assert_eq!(
            consume_numbered(&b.addr, "keep2", 10),
            (0..10).collect::<Vec<_>>()
        );
        // And appends continue after the restored end.
        let acked = produce_numbered(&b.addr, "keep", 5000, 10);
        assert_eq!(acked[0].1, 5000);
        assert!(
            !b.dir.join(".runnel_cleanshutdown").exists(),
            "marker removed while running"
        );
    });
}

#[test]
fn sigkill_then_restart_recovers_every_acknowledged_record() {
    with_timeout(180, || {
        let mut b = Broker::start(&["--segment-bytes", "65536"]);
        let acked = produce_numbered(&b.addr, "crash", 0, 3000);
        assert_eq!(acked.len(), 3000);
        b.kill();
        assert!(!b.dir.join(".runnel_cleanshutdown").exists());
        // A torn tail, as a crash mid-write leaves: garbage after the last batch.
        let dir = b.partition_dir("crash", 0);
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        let last = logs.last().unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
        std::io::Write::write_all(&mut f, &[0xAB; 100]).unwrap();
        drop(f);
        b.restart();
        assert!(b.logs().contains("clean_shutdown=false"));
        assert_eq!(
            consume_numbered(&b.addr, "crash", 3000),
            (0..3000).collect::<Vec<_>>()
        );
        let acked = produce_numbered(&b.addr, "crash", 3000, 1);
        assert_eq!(
            acked[0].1, 3000,
            "the torn tail was truncated, offsets continue"
        );
    });
}

#[test]
fn two_shards_serve_partitions_of_both_over_one_connection() {
    with_timeout(120, || {
        let b = Broker::start(&["--cores", "2", "--default-partitions", "4"]);
        let (p, d) = producer(&b.addr, &[]);
        let values: Vec<Vec<u8>> = (0..400u32).map(|i| i.to_be_bytes().to_vec()).collect();
        send_all(
            &p,
            &d,
            values.iter().enumerate().map(|(i, v)| {
                BaseRecord::to("spread")
                    .partition((i % 4) as i32)
                    .payload(&v[..])
                    .key(&b"k"[..])
            }),
        );
        // Partitions live on both shards; the partition directories are opened by their owner.
        let c = consumer(&b.addr, &[]);
        assign(
            &c,
            "spread",
            &(0..4).map(|p| (p, Offset::Beginning)).collect::<Vec<_>>(),
        );
        let got = consume_n(&c, 400);
        for part in 0..4 {
            let n = got.iter().filter(|g| g.0 == part).count();
            assert_eq!(n, 100, "partition {part}");
        }
        // One producer and one consumer connection each crossed to the other shard.
        assert!(
            b.metric_sum("cross_shard_messages") > 0,
            "work crossed shards"
        );
        assert_eq!(b.metric("produce_records").len(), 2, "two shards report");
    });
}

#[test]
fn zero_copy_sends_no_record_bytes_through_user_space_and_the_copy_path_does() {
    with_timeout(120, || {
        for zero_copy in ["on", "off"] {
            let b = Broker::start(&["--zero-copy", zero_copy]);
            produce_numbered(&b.addr, "zc", 0, 2000);
            assert_eq!(consume_numbered(&b.addr, "zc", 2000).len(), 2000);
            let spliced = b.metric_sum("fetch_bytes_spliced");
            let copied = b.metric_sum("fetch_bytes_copied");
            if zero_copy == "on" {
                assert!(spliced > 2000 * 4, "spliced {spliced}");
                assert_eq!(copied, 0, "no record byte copied in user space");
            } else {
                assert_eq!(spliced, 0);
                assert!(copied > 2000 * 4, "copied {copied}");
            }
            assert_eq!(
                b.metric_sum("produce_bytes_copied"),
                0,
                "produce frames never copied"
            );
            assert!(
                b.metric_sum("produce_bytes") > 2000 * 4,
                "appended bytes are counted"
            );
            assert_eq!(b.metric_sum("produce_records"), 2000);
            // Every log write took one of the two paths; on ext4 or tmpfs (the usual temp
            // dirs) the shard wrote inline.
            let inline = b.metric_sum("page_cache_writes_inline");
            let ring = b.metric_sum("page_cache_writes_ring");
            assert!(inline + ring > 0, "log writes counted");
            let fs = std::process::Command::new("stat")
                .args(["-f", "-c", "%T"])
                .arg(&b.dir)
                .output()
                .unwrap();
            let fs = String::from_utf8_lossy(&fs.stdout).trim().to_string();
            if fs == "ext2/ext3" || fs == "tmpfs" {
                assert!(
                    inline > 0,
                    "no inline writes on {fs} ({ring} through the ring)"
                );
            }
        }
    });
}
