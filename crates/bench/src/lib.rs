//! runnel-bench: a Kafka-protocol load generator for any Kafka-compatible broker.
//!
//! Modes: `produce`, `consume` (with `--verify`), `fanout` (N consumers of the same
//! partitions), `e2e` (fixed-rate produce, produce-to-consume latency per record from the
//! send time embedded in each value) and `limits` (the machine's own ceilings: loopback TCP
//! with 1 and N streams, sequential buffered writes, with one fdatasync per MiB).
//! A progress line goes to stderr every second; the summary to stdout (`--json` for
//! machines).

pub mod batch;
pub mod client;
mod limits;
pub mod producer_id;
mod report;
mod run;

pub use report::Report;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "runnel-bench",
    version,
    about = "A Kafka-protocol load generator: produce, consume, fan-out, end-to-end latency, and the machine's own limits"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
    /// Bootstrap broker (any Kafka-compatible broker; partition leaders come from Metadata).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub brokers: String,
    /// Print the summary as one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Broker process id: report its CPU seconds (user + system) over the run.
    #[arg(long, global = true, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Produce records as fast as possible (or at --rate) and report throughput and
    /// request latency.
    Produce(ProduceArgs),
    /// Consume partitions from the earliest (or latest) offset up to the high watermark seen
    /// at start (or for --duration); --verify checks every record.
    Consume(ConsumeArgs),
    /// N consumers each read all partitions of the topic: many consumers sharing the same
    /// (page-cached) data.
    Fanout(ConsumeArgs),
    /// Produce at a fixed rate while a consumer tails the topic; reports produce-to-consume
    /// latency per record.
    E2e(E2eArgs),
    /// Measure the machine's ceilings: loopback TCP (1 and N streams), sequential buffered
    /// write bandwidth, and the same with one fdatasync per MiB.
    Limits(LimitsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    #[arg(long, default_value = "runnel-bench")]
    pub topic: String,
    /// Create the topic if it does not exist (CreateTopics with --partitions).
    #[arg(long)]
    pub create: bool,
    /// Partitions of a topic created with --create.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Producer connections (threads); partitions are divided among them.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Bytes of each record's value (at least 16: sequence and send time).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Bytes of records per batch (one batch per partition per request).
    #[arg(long, default_value_t = 65536)]
    pub batch_size: usize,
    /// With --rate: send a partial batch after this long rather than wait to fill it.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Give records keys (1000 distinct).
    #[arg(long)]
    pub keyed: bool,
    /// Stop after this many bytes of record batches (default 1 GiB unless --duration).
    #[arg(long)]
    pub total_bytes: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Records per second over all producers; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// An idempotent producer per connection (InitProducerId; producer id, epoch and
    /// sequences in every batch).
    #[arg(long)]
    pub idempotent: bool,
    /// A transactional producer per connection (transactional id
    /// `runnel-bench-<topic>-<n>`), committing a transaction every this many batches
    /// (AddPartitionsToTxn for its partitions, the batches, EndTxn). Implies --idempotent.
    #[arg(long)]
    pub transaction_batches: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, default_value = "runnel-bench")]
    pub topic: String,
    /// Consumer connections (threads). consume: partitions are divided among them;
    /// fanout: each reads every partition.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Start from the latest offset instead of the earliest.
    #[arg(long)]
    pub from_latest: bool,
    /// Decode every record and check sequences (no gap, no duplicate) and checksums.
    #[arg(long)]
    pub verify: bool,
    /// Stop after this many seconds (default: at the high watermark seen at start).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Fetch max_bytes (and partition_max_bytes).
    #[arg(long, default_value_t = 8 << 20)]
    pub fetch_max_bytes: i32,
    /// Fetch isolation level: read_committed reads below the last stable offset (and gets
    /// the aborted transactions); read_uncommitted below the high watermark.
    #[arg(long, default_value = "read_uncommitted", value_parser = ["read_uncommitted", "read_committed"])]
    pub isolation_level: String,
}

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Topic to produce to and tail.
    #[arg(long, default_value = "runnel-bench-e2e")]
    pub topic: String,
    /// Create the topic if it does not exist (CreateTopics with --partitions).
    #[arg(long)]
    pub create: bool,
    /// Partitions of a topic created with --create.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Records per second; 0: as fast as the broker takes them (its maximum with the
    /// consumer tailing).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of each record's value (at least 16).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Bytes of records per batch (default: a millisecond of records at --rate; 64 KiB
    /// with --rate 0).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Send a partial batch after this long.
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub acks: i16,
    /// Write one line per fetch answer to this file: ms since start, ms the fetch took,
    /// bytes, records, and the oldest and newest record's latency in ms. Places a tail in
    /// time.
    #[arg(long)]
    pub timeline: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Parallel TCP streams for the N-stream figure.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Seconds per TCP measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Directory for the disk measurements (a temporary file, removed after).
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
    /// MiB written per disk measurement.
    #[arg(long, default_value_t = 1024)]
    pub file_mib: u64,
}

/// Runs one mode and prints its report.
pub fn run(cli: Cli) -> Result<(), String> {
    let cpu0 = cli
        .broker_pid
        .map(report::process_cpu_seconds)
        .transpose()?;
    let steal0 = report::steal_seconds();
    let mut report = match &cli.mode {
        Mode::Produce(a) => run::produce(&cli.brokers, a, cli.quiet)?,
        Mode::Consume(a) => run::consume(&cli.brokers, a, false, cli.quiet)?,
        Mode::Fanout(a) => run::consume(&cli.brokers, a, true, cli.quiet)?,
        Mode::E2e(a) => run::e2e(&cli.brokers, a, cli.quiet)?,
        Mode::Limits(a) => limits::run(a)?,
    };
    if let (Some(pid), Some(c0)) = (cli.broker_pid, cpu0) {
        report.broker_cpu_s = Some(report::process_cpu_seconds(pid)? - c0);
    }
    if let (Some(s0), Some(s1)) = (steal0, report::steal_seconds()) {
        report.steal_s = Some(s1 - s0);
    }
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    match &report.failure {
        Some(f) => Err(f.clone()),
        None => Ok(()),
    }
}
