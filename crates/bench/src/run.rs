//! The produce, consume/fan-out and end-to-end modes.

use crate::batch::{parse_compression, parse_value, BatchTemplate};
use crate::client::{topic_layout, watermarks, Conn, TopicLayout};
use crate::report::{Progress, Report};
use crate::{ConsumeArgs, E2eArgs, ProduceArgs};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

struct ProducerPlan {
    partitions: Vec<i32>,
    /// Batches to send (None: until the deadline).
    batches: Option<u64>,
    deadline: Option<Instant>,
    /// Records per second for this producer (0: flat out).
    rate: u64,
    /// Where each partition's sequence starts (its high watermark).
    first_seqs: HashMap<i32, u64>,
    /// The producer's number, for its transactional id.
    index: usize,
}

pub fn produce(bootstrap: &str, a: &ProduceArgs, quiet: bool) -> Result<Report, String> {
    if !matches!(a.acks, -1..=1) {
        return Err(format!("--acks must be 0, 1 or -1, got {}", a.acks));
    }
    let compression = parse_compression(&a.compression)?;
    if a.create {
        crate::client::create_topic(bootstrap, &a.topic, a.partitions)?;
    }
    let layout = topic_layout(bootstrap, &a.topic, a.create)?;
    // Each partition's record sequence continues from its high watermark, so runs append
    // to one verifiable sequence (one writer per partition at a time).
    let marks = watermarks(&layout, &a.topic)?;
    let first_seqs = next_sequences(&layout, &a.topic, &marks)?;
    let producers = a.producers.max(1).min(layout.partitions.len().max(1) * 64);
    let records_per_batch = (a.batch_size / a.record_size.max(16)).max(1);
    let batch_bytes = BatchTemplate::new(records_per_batch, a.record_size, a.keyed, compression)
        .fill(0, 0)
        .len() as u64;
    let total_batches = match (a.total_bytes, a.duration) {
        (Some(b), _) => Some(b.div_ceil(batch_bytes)),
        (None, Some(_)) => None,
        (None, None) => Some((1u64 << 30).div_ceil(batch_bytes)),
    };
    let deadline = a
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer("produce", quiet);
    let hist = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|i| {
            let plan = ProducerPlan {
                partitions: layout
                    .partitions
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(j, _)| j % producers == i)
                    .map(|(_, p)| p)
                    .collect(),
                batches: total_batches
                    .map(|t| t / producers as u64 + u64::from((i as u64) < t % producers as u64)),
                deadline,
                rate: a.rate / producers as u64,
                first_seqs: first_seqs.clone(),
                index: i,
            };
            let (layout, args, progress, hist) =
                (layout.clone(), a.clone(), progress.clone(), hist.clone());
            std::thread::spawn(move || {
                producer_thread(
                    &layout,
                    &args,
                    plan,
                    compression,
                    records_per_batch,
                    &progress,
                    &hist,
                )
            })
        })
        .collect();
    let mut failure = None;
    for h in handles {
        if let Err(e) = h
            .join()
            .map_err(|_| "a producer thread panicked".to_string())?
        {
            failure.get_or_insert(e);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.done.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        let _ = p.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut r = Report {
        mode: "produce".into(),
        bytes: progress.bytes.load(Ordering::Relaxed),
        records: progress.records.load(Ordering::Relaxed),
        seconds,
        ..Default::default()
    };
    if a.acks != 0 {
        r.set_latency(&hist.lock().unwrap(), "produce request");
    }
    let txns = progress.transactions.load(Ordering::Relaxed);
    if txns > 0 {
        r.figures.push((
            "transactions committed".into(),
            txns as f64 / seconds.max(1e-9),
            "/s".into(),
        ));
    }
    Ok(r)
}

fn producer_thread(
    layout: &TopicLayout,
    a: &ProduceArgs,
    plan: ProducerPlan,
    compression: Compression,
    records_per_batch: usize,
    progress: &Progress,
    hist: &Mutex<Histogram<u64>>,
) -> Result<(), String> {
    if plan.partitions.is_empty() {
        return Ok(());
    }
    // One connection per leader this producer sends to.
    let mut conns: HashMap<String, Conn> = HashMap::new();
    for p in &plan.partitions {
        let addr = &layout.leaders[p];
        if !conns.contains_key(addr) {
            conns.insert(addr.clone(), Conn::connect(addr)?);
        }
    }
    let mut template = BatchTemplate::new(records_per_batch, a.record_size, a.keyed, compression);
    let mut seqs: HashMap<i32, u64> = HashMap::new();
    // An idempotent or transactional producer: its session, and each partition's next
    // producer sequence.
    let transactional_id = a
        .transaction_batches
        .map(|_| format!("runnel-bench-{}-{}", a.topic, plan.index));
    let mut session = if a.idempotent || transactional_id.is_some() {
        let any = &layout.leaders[&plan.partitions[0]];
        Some(crate::producer_id::Session::start(any, transactional_id)?)
    } else {
        None
    };
    let mut producer_seqs: HashMap<i32, i32> = HashMap::new();
    let per_txn = a.transaction_batches.unwrap_or(0).max(1);
    let mut in_txn = 0u64;
    let mut in_txn_partitions: Vec<i32> = Vec::new();
    // Sent and not yet answered, per connection: (send time, records, bytes).
    let mut pending: HashMap<String, VecDeque<(Instant, u64, u64)>> = HashMap::new();
    let mut local = histogram();
    let mut buf = Vec::new();
    let topic = TopicName(StrBytes::from_string(a.topic.clone()));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    loop {
        if plan.batches.is_some_and(|b| sent >= b)
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        let mut batch_records = records_per_batch;
        if plan.rate > 0 {
            // Pace: the next batch is due when the rate allows its first record; with
            // linger, a partial batch goes out instead of waiting to fill.
            let due = start
                + Duration::from_secs_f64(
                    sent as f64 * records_per_batch as f64 / plan.rate as f64,
                );
            let linger = Duration::from_millis(a.linger_ms);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(linger.max(Duration::from_micros(100))));
                if due > Instant::now() {
                    let ready = ((plan.rate as f64 * linger.as_secs_f64()) as usize)
                        .clamp(1, records_per_batch);
                    batch_records = ready;
                }
            }
        }
        let p = plan.partitions[i % plan.partitions.len()];
        i += 1;
        let seq = seqs
            .entry(p)
            .or_insert_with(|| plan.first_seqs.get(&p).copied().unwrap_or(0));
        let transactional = a.transaction_batches.is_some();
        if transactional && !in_txn_partitions.contains(&p) {
            // As clients do: a partition joins the transaction before its first batch.
            let s = session.as_mut().expect("a transactional session");
            s.add_partitions(&a.topic, &[p])?;
            in_txn_partitions.push(p);
        }
        let fields = session.as_ref().map(|s| {
            let next = producer_seqs.entry(p).or_insert(0);
            let f = crate::batch::ProducerFields {
                id: s.producer_id,
                epoch: s.epoch,
                base_sequence: *next,
                transactional,
            };
            *next = next.wrapping_add(batch_records as i32);
            f
        });
        let records = if batch_records == records_per_batch {
            template.fill_as(*seq, crate::run::now_ns(), fields)
        } else {
            BatchTemplate::new(batch_records, a.record_size, a.keyed, compression).fill_as(
                *seq,
                crate::run::now_ns(),
                fields,
            )
        };
        *seq += batch_records as u64;
        let bytes = records.len() as u64;
        let addr = layout.leaders[&p].clone();
        let conn = conns.get_mut(&addr).expect("connection per leader");
        let req = ProduceRequest::default()
            .with_transactional_id(
                session
                    .as_ref()
                    .and_then(|s| s.transactional_id.as_deref())
                    .map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
            )
            .with_acks(a.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(records))])]);
        let frame = conn.frame(ApiKey::Produce, 7, &req)?;
        conn.send_frame(&frame)?;
        sent += 1;
        if a.acks == 0 {
            progress.add(bytes, batch_records as u64);
            continue;
        }
        let q = pending.entry(addr.clone()).or_default();
        q.push_back((Instant::now(), batch_records as u64, bytes));
        while q.len() >= a.in_flight.max(1) {
            answer(conn, q, &mut buf, &mut local, progress)?;
        }
        if transactional {
            in_txn += 1;
            if in_txn == per_txn {
                // Every batch of the transaction answered, then its commit.
                drain(&mut conns, &mut pending, &mut buf, &mut local, progress)?;
                session.as_mut().expect("a session").commit()?;
                progress.transactions.fetch_add(1, Ordering::Relaxed);
                in_txn = 0;
                in_txn_partitions.clear();
            }
        }
    }
    if in_txn > 0 {
        drain(&mut conns, &mut pending, &mut buf, &mut local, progress)?;
        session.as_mut().expect("a session").commit()?;
        progress.transactions.fetch_add(1, Ordering::Relaxed);
    }
    for (addr, q) in pending.iter_mut() {
        let conn = conns.get_mut(addr).expect("connection");
        while !q.is_empty() {
            answer(conn, q, &mut buf, &mut local, progress)?;
        }
    }
    hist.lock()
        .unwrap()
        .add(&local)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Where each partition's record sequence continues: one past the last record's (its
/// offset, unless transaction markers took offsets too), 0 for an empty partition.
fn next_sequences(
    layout: &TopicLayout,
    topic: &str,
    marks: &HashMap<i32, (i64, i64)>,
) -> Result<HashMap<i32, u64>, String> {
    let mut out = HashMap::new();
    for (&p, &(lo, hw)) in marks {
        let mut next = 0u64;
        // The last record sits in one of the last batches (transaction markers take an
        // offset each after it): read the end of the log, further back if it holds markers
        // only.
        let mut from = (hw - 64).max(lo);
        for _ in 0..4 {
            if hw <= lo {
                break;
            }
            let mut c = Conn::connect(&layout.leaders[&p])?;
            let r: FetchResponse = c.call(
                ApiKey::Fetch,
                12,
                &fetch_request(topic, &[(p, from)], 8 << 20, 0, 0),
            )?;
            let records = r.responses[0].partitions[0]
                .records
                .clone()
                .unwrap_or_default();
            let mut found = None;
            for item in runnel_record::Batches::new(&records) {
                let Ok((pos, h)) = item else { break };
                if h.is_control() {
                    continue;
                }
                let mut b = Bytes::copy_from_slice(&records[pos..pos + h.total_len()]);
                let set = RecordBatchDecoder::decode(&mut b)
                    .map_err(|e| format!("cannot decode {topic}-{p} at {}: {e}", h.base_offset))?;
                found = set
                    .records
                    .last()
                    .and_then(|r| r.value.as_deref().and_then(parse_value))
                    .map(|(seq, _)| seq + 1)
                    .or(found);
            }
            if let Some(n) = found {
                next = n;
                break;
            }
            if from == lo.max(0) {
                break;
            }
            from = (from - 64).max(lo);
        }
        // A partition written by others than runnel-bench: continue from its offset.
        out.insert(p, if next == 0 { hw.max(0) as u64 } else { next });
    }
    Ok(out)
}

/// Waits for the answers to every request in flight.
fn drain(
    conns: &mut HashMap<String, Conn>,
    pending: &mut HashMap<String, VecDeque<(Instant, u64, u64)>>,
    buf: &mut Vec<u8>,
    hist: &mut Histogram<u64>,
    progress: &Progress,
) -> Result<(), String> {
    for (addr, q) in pending.iter_mut() {
        let conn = conns.get_mut(addr).expect("connection");
        while !q.is_empty() {
            answer(conn, q, buf, hist, progress)?;
        }
    }
    Ok(())
}

fn answer(
    conn: &mut Conn,
    q: &mut VecDeque<(Instant, u64, u64)>,
    buf: &mut Vec<u8>,
    hist: &mut Histogram<u64>,
    progress: &Progress,
) -> Result<(), String> {
    conn.recv_into(buf)?;
    let (sent_at, records, bytes) = q.pop_front().expect("a pending request");
    let r: ProduceResponse = Conn::decode(buf, 7)?;
    for t in &r.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                return Err(format!(
                    "produce to {}-{} failed: error {}",
                    t.name.0, p.index, p.error_code
                ));
            }
        }
    }
    let _ = hist.record(sent_at.elapsed().as_micros().max(1) as u64);
    progress.add(bytes, records);
    Ok(())
}

/// Per-partition verification state: the next sequence expected.
#[derive(Default)]
struct Verifier {
    next: HashMap<i32, u64>,
}

impl Verifier {
    fn check(&mut self, partition: i32, offset: i64, seq: u64) -> Result<(), String> {
        let next = self.next.entry(partition).or_insert(seq);
        if seq < *next {
            return Err(format!(
                "duplicate: partition {partition} offset {offset} holds sequence {seq}, already seen (expected {next})"
            ));
        }
        if seq > *next {
            return Err(format!(
                "gap: partition {partition} offset {offset} holds sequence {seq}, expected {next} ({} records missing)",
                seq - *next
            ));
        }
        *next += 1;
        Ok(())
    }
}

/// What a fetched record set holds: (next offset, record bytes, records, send times of the
/// records, in ns), checking sequences when `verify` is given.
fn digest(
    partition: i32,
    records: &Bytes,
    fetch_offset: i64,
    verify: Option<&mut Verifier>,
    want_times: bool,
    times: &mut Vec<i64>,
) -> Result<(Option<i64>, u64, u64), String> {
    let mut next = None;
    let mut count = 0u64;
    let mut verifier = verify;
    let deep = verifier.is_some() || want_times;
    for item in runnel_record::Batches::new(records) {
        let Ok((pos, h)) = item else { break }; // a partial batch at the end of the fetch
        let batch = &records[pos..pos + h.total_len()];
        next = Some(h.next_offset());
        if h.is_control() {
            continue; // a transaction marker: no records of ours
        }
        if !deep {
            count += h.record_count as u64;
            continue;
        }
        runnel_record::verify_stored(batch)
            .map_err(|e| format!("corrupt batch at {partition}:{}: {e}", h.base_offset))?;
        let mut b = Bytes::copy_from_slice(batch);
        let set = RecordBatchDecoder::decode(&mut b)
            .map_err(|e| format!("cannot decode batch at {partition}:{}: {e}", h.base_offset))?;
        for r in set.records {
            if r.offset < fetch_offset {
                continue; // before the fetch offset, in the same batch
            }
            count += 1;
            let Some((seq, sent_ns)) = r.value.as_deref().and_then(parse_value) else {
                return Err(format!(
                    "record {partition}:{} was not written by runnel-bench",
                    r.offset
                ));
            };
            if let Some(v) = verifier.as_deref_mut() {
                v.check(partition, r.offset, seq)?;
            }
            if want_times {
                times.push(sent_ns);
            }
        }
    }
    Ok((next, records.len() as u64, count))
}

fn fetch_request(
    topic: &str,
    parts: &[(i32, i64)],
    max_bytes: i32,
    max_wait: i32,
    isolation_level: i8,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_max_wait_ms(max_wait)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                parts
                    .iter()
                    .map(|(p, o)| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(*o)
                            .with_partition_max_bytes(max_bytes)
                    })
                    .collect(),
            )])
}

pub fn consume(
    bootstrap: &str,
    a: &ConsumeArgs,
    fanout: bool,
    quiet: bool,
) -> Result<Report, String> {
    let layout = topic_layout(bootstrap, &a.topic, false)?;
    let marks = watermarks(&layout, &a.topic)?;
    let consumers = a.consumers.max(1);
    let deadline = a
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mode = if fanout { "fanout" } else { "consume" };
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer(mode, quiet);
    let start = Instant::now();
    let handles: Vec<_> = (0..consumers)
        .map(|i| {
            let mine: Vec<i32> = layout
                .partitions
                .iter()
                .copied()
                .enumerate()
                .filter(|(j, _)| fanout || j % consumers == i)
                .map(|(_, p)| p)
                .collect();
            let (layout, a, marks, progress) =
                (layout.clone(), a.clone(), marks.clone(), progress.clone());
            std::thread::spawn(move || {
                consumer_thread(&layout, &a, &mine, &marks, deadline, &progress)
            })
        })
        .collect();
    let mut failure = None;
    for h in handles {
        if let Err(e) = h
            .join()
            .map_err(|_| "a consumer thread panicked".to_string())?
        {
            failure.get_or_insert(e);
        }
    }
    progress.done.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        let _ = p.join();
    }
    Ok(Report {
        mode: mode.into(),
        bytes: progress.bytes.load(Ordering::Relaxed),
        records: progress.records.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        failure,
        ..Default::default()
    })
}

fn consumer_thread(
    layout: &TopicLayout,
    a: &ConsumeArgs,
    partitions: &[i32],
    marks: &HashMap<i32, (i64, i64)>,
    deadline: Option<Instant>,
    progress: &Progress,
) -> Result<(), String> {
    // Per leader: the partitions it serves, with their fetch offsets and end.
    let mut by_leader: HashMap<String, Vec<(i32, i64, i64)>> = HashMap::new();
    for &p in partitions {
        let (lo, hi) = marks[&p];
        let from = if a.from_latest { hi } else { lo };
        by_leader
            .entry(layout.leaders[&p].clone())
            .or_default()
            .push((p, from, hi));
    }
    let mut verifier = a.verify.then(Verifier::default);
    let mut times = Vec::new();
    for (addr, mut parts) in by_leader {
        let mut conn = Conn::connect(&addr)?;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // With a duration, read on past the starting high watermark.
            let active: Vec<(i32, i64)> = parts
                .iter()
                .filter(|(_, o, end)| deadline.is_some() || o < end)
                .map(|(p, o, _)| (*p, *o))
                .collect();
            if active.is_empty() {
                break;
            }
            let isolation = i8::from(a.isolation_level == "read_committed");
            let req = fetch_request(&a.topic, &active, a.fetch_max_bytes, 100, isolation);
            let frame = conn.frame(ApiKey::Fetch, 11, &req)?;
            conn.send_frame(&frame)?;
            let r: FetchResponse = Conn::decode_bytes(conn.recv_bytes()?, 11)?;
            for t in &r.responses {
                for pd in &t.partitions {
                    if pd.error_code != 0 {
                        return Err(format!(
                            "fetch {}-{}: error {}",
                            a.topic, pd.partition_index, pd.error_code
                        ));
                    }
                    let Some(records) = pd.records.as_ref() else {
                        continue;
                    };
                    let entry = parts
                        .iter_mut()
                        .find(|(p, _, _)| *p == pd.partition_index)
                        .expect("a partition we asked for");
                    let (next, bytes, count) = digest(
                        pd.partition_index,
                        records,
                        entry.1,
                        verifier.as_mut(),
                        false,
                        &mut times,
                    )?;
                    if let Some(n) = next {
                        entry.1 = n;
                    }
                    progress.add(bytes, count);
                }
            }
        }
    }
    Ok(())
}

pub fn e2e(bootstrap: &str, a: &E2eArgs, quiet: bool) -> Result<Report, String> {
    if a.create {
        crate::client::create_topic(bootstrap, &a.topic, a.partitions)?;
    }
    let layout = topic_layout(bootstrap, &a.topic, a.create)?;
    let marks = watermarks(&layout, &a.topic)?;
    let produce = ProduceArgs {
        topic: a.topic.clone(),
        create: false,
        partitions: a.partitions,
        producers: 1,
        record_size: a.record_size,
        batch_size: a.batch_size.unwrap_or(if a.rate == 0 {
            64 << 10
        } else {
            a.record_size * (a.rate as usize / 1000).max(1)
        }),
        linger_ms: a.linger_ms,
        acks: a.acks,
        compression: "none".into(),
        keyed: false,
        total_bytes: None,
        duration: Some(a.duration),
        rate: a.rate,
        in_flight: 5,
        idempotent: false,
        transaction_batches: None,
    };
    let stop_at = Instant::now() + Duration::from_secs_f64(a.duration + 2.0);
    let (layout2, topic) = (layout.clone(), a.topic.clone());
    let mut timeline = match &a.timeline {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => None,
    };
    let consumer = std::thread::spawn(move || -> Result<(Histogram<u64>, u64, u64), String> {
        let mut hist = histogram();
        let (mut bytes, mut records) = (0u64, 0u64);
        let mut offsets: HashMap<i32, i64> = layout2
            .partitions
            .iter()
            .map(|p| (*p, marks[p].1))
            .collect();
        let mut conn = Conn::connect(&layout2.leaders[&layout2.partitions[0]])?;
        let mut times = Vec::new();
        let started = Instant::now();
        if let Some(w) = timeline.as_mut() {
            use std::io::Write;
            // The start on CLOCK_MONOTONIC, to line the file up with `perf --clockid
            // monotonic` or ftrace.
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime only writes the timespec we own.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            writeln!(
                w,
                "# start {}.{:09} (CLOCK_MONOTONIC); ms since start, ms the fetch took, bytes, records, oldest and newest record's latency in ms",
                ts.tv_sec, ts.tv_nsec
            )
            .map_err(|e| e.to_string())?;
        }
        while Instant::now() < stop_at {
            let parts: Vec<(i32, i64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
            let asked = Instant::now();
            let frame = conn.frame(
                ApiKey::Fetch,
                11,
                &fetch_request(&topic, &parts, 8 << 20, 100, 0),
            )?;
            conn.send_frame(&frame)?;
            let resp = conn.recv_bytes()?;
            let now = now_ns();
            let answered = Instant::now();
            let r: FetchResponse = Conn::decode_bytes(resp, 11)?;
            // This answer's bytes, records, and its oldest and newest record (send times).
            let (mut fb, mut fr, mut oldest, mut newest) = (0u64, 0u64, i64::MAX, i64::MIN);
            for t in &r.responses {
                for pd in &t.partitions {
                    let Some(recs) = pd.records.as_ref() else {
                        continue;
                    };
                    let o = offsets.get_mut(&pd.partition_index).expect("asked");
                    times.clear();
                    let (next, b, n) =
                        digest(pd.partition_index, recs, *o, None, true, &mut times)?;
                    if let Some(n) = next {
                        *o = n;
                    }
                    bytes += b;
                    records += n;
                    (fb, fr) = (fb + b, fr + n);
                    for &t in &times {
                        let _ = hist.record(((now - t) / 1000).max(1) as u64);
                        (oldest, newest) = (oldest.min(t), newest.max(t));
                    }
                }
            }
            if let Some(w) = timeline.as_mut() {
                use std::io::Write;
                let ms = |ns: i64| (now - ns) as f64 / 1e6;
                let (old, new) = if fr > 0 {
                    (ms(oldest), ms(newest))
                } else {
                    (0.0, 0.0)
                };
                writeln!(
                    w,
                    "{:.3} {:.3} {fb} {fr} {old:.3} {new:.3}",
                    (answered - started).as_secs_f64() * 1e3,
                    (answered - asked).as_secs_f64() * 1e3,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        if let Some(mut w) = timeline {
            use std::io::Write;
            w.flush().map_err(|e| e.to_string())?;
        }
        Ok((hist, bytes, records))
    });
    let produced = self::produce(bootstrap, &produce, quiet)?;
    let (hist, _, consumed) = consumer
        .join()
        .map_err(|_| "the consumer thread panicked")??;
    let mut r = Report {
        mode: "e2e".into(),
        bytes: produced.bytes,
        records: produced.records,
        seconds: produced.seconds,
        ..Default::default()
    };
    r.set_latency(&hist, "produce-to-consume");
    if consumed < produced.records {
        r.failure = Some(format!(
            "consumed {consumed} of {} records produced within 2 s of the end",
            produced.records
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_reports_gaps_and_duplicates() {
        let mut v = Verifier::default();
        for s in 10..20 {
            v.check(0, s as i64, s).unwrap();
        }
        assert!(v.check(0, 20, 25).unwrap_err().starts_with("gap"));
        let mut v = Verifier::default();
        v.check(1, 0, 0).unwrap();
        v.check(1, 1, 1).unwrap();
        assert!(v.check(1, 2, 1).unwrap_err().starts_with("duplicate"));
        // Partitions are independent.
        v.check(2, 0, 7).unwrap();
    }
}
