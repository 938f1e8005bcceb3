//! Results: a human summary and a JSON object; latency percentiles from hdrhistogram; a live
//! progress line on stderr.

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Report {
    pub mode: String,
    pub bytes: u64,
    pub records: u64,
    pub seconds: f64,
    /// Latency percentiles in microseconds: (p50, p90, p99, p99.9, max).
    pub latency_us: Option<(u64, u64, u64, u64, u64)>,
    pub latency_what: String,
    pub broker_cpu_s: Option<f64>,
    /// CPU time the hypervisor took from this machine's CPUs during the run (all CPUs, from
    /// /proc/stat): a virtual machine's vCPUs stop for it, whatever they were doing.
    pub steal_s: Option<f64>,
    /// Extra named figures (limits mode).
    pub figures: Vec<(String, f64, String)>,
    /// Set when verification failed: the run exits non-zero with it.
    pub failure: Option<String>,
}

impl Report {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }

    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }

    pub fn set_latency(&mut self, h: &Histogram<u64>, what: &str) {
        if h.is_empty() {
            return;
        }
        self.latency_us = Some((
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ));
        self.latency_what = what.to_string();
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        if self.mode != "limits" {
            let _ = writeln!(
                s,
                "{}: {} records, {:.1} MB in {:.2} s = {:.1} MB/s, {:.0} records/s",
                self.mode,
                self.records,
                self.bytes as f64 / 1e6,
                self.seconds,
                self.mb_per_s(),
                self.records_per_s()
            );
        }
        if let Some((p50, p90, p99, p999, max)) = self.latency_us {
            let _ = writeln!(
                s,
                "{} latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                self.latency_what,
                p50 as f64 / 1e3,
                p90 as f64 / 1e3,
                p99 as f64 / 1e3,
                p999 as f64 / 1e3,
                max as f64 / 1e3
            );
        }
        for (name, value, unit) in &self.figures {
            let _ = writeln!(s, "{name}: {value:.3} {unit}");
        }
        if let Some(cpu) = self.broker_cpu_s {
            let _ = writeln!(
                s,
                "broker CPU: {cpu:.2} s ({:.3} s per GB)",
                cpu / (self.bytes as f64 / 1e9).max(1e-9)
            );
        }
        if let Some(steal) = self.steal_s.filter(|s| *s > 0.0) {
            let _ = writeln!(s, "host steal: {steal:.2} s (all CPUs)");
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(s, "FAILED: {f}");
        }
        s
    }

    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"mode\":\"{}\",\"bytes\":{},\"records\":{},\"seconds\":{:.6},\"mb_per_s\":{:.3},\"records_per_s\":{:.3}",
            self.mode,
            self.bytes,
            self.records,
            self.seconds,
            self.mb_per_s(),
            self.records_per_s()
        );
        if let Some((p50, p90, p99, p999, max)) = self.latency_us {
            let _ = write!(
                s,
                ",\"latency\":{{\"what\":\"{}\",\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"max_us\":{max}}}",
                self.latency_what
            );
        }
        for (name, value, unit) in &self.figures {
            let _ = write!(
                s,
                ",\"{name}\":{{\"value\":{value:.6},\"unit\":\"{unit}\"}}"
            );
        }
        if let Some(cpu) = self.broker_cpu_s {
            let _ = write!(s, ",\"broker_cpu_s\":{cpu:.3}");
        }
        if let Some(steal) = self.steal_s {
            let _ = write!(s, ",\"steal_s\":{steal:.3}");
        }
        match &self.failure {
            Some(f) => {
                let _ = write!(s, ",\"failure\":\"{}\"", f.replace('"', "'"));
            }
            None => s.push_str(",\"failure\":null"),
        }
        s.push('}');
        s
    }
}

/// User + system CPU seconds of a process (from /proc/<pid>/stat).
pub fn process_cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("--broker-pid {pid}: {e}"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .ok_or("bad /proc stat")?;
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .zip(f.get(12).and_then(|s| s.parse::<u64>().ok()))
        .map(|(u, s)| u + s)
        .ok_or("bad /proc stat")?;
    Ok(ticks as f64 / ticks_per_s())
}

/// The clock ticks of /proc's CPU times per second (USER_HZ).
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Steal time of all CPUs so far, in seconds (the 8th field of /proc/stat's "cpu" line);
/// None where the kernel does not count it.
pub fn steal_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_steal(&stat)
}

fn parse_steal(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks as f64 / ticks_per_s())
}

/// Counters the workers add to, and the progress line reads.
#[derive(Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub records: AtomicU64,
    /// Transactions committed (transactional produce).
    pub transactions: AtomicU64,
    pub done: AtomicBool,
}

impl Progress {
    pub fn add(&self, bytes: u64, records: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    /// Prints "mode: X MB/s, Y records/s, N records, T s" every second until done.
    pub fn spawn_printer(
        self: &Arc<Self>,
        mode: &str,
        quiet: bool,
    ) -> Option<std::thread::JoinHandle<()>> {
        if quiet {
            return None;
        }
        let p = self.clone();
        let mode = mode.to_string();
        Some(std::thread::spawn(move || {
            let start = Instant::now();
            let (mut last_b, mut last_r, mut last_t) = (0u64, 0u64, start);
            while !p.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last_t.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let (b, r) = (
                    p.bytes.load(Ordering::Relaxed),
                    p.records.load(Ordering::Relaxed),
                );
                let dt = last_t.elapsed().as_secs_f64();
                eprint!(
                    "\r{mode}: {:8.1} MB/s {:10.0} records/s  {r} records  {:.0} s   ",
                    (b - last_b) as f64 / dt / 1e6,
                    (r - last_r) as f64 / dt,
                    start.elapsed().as_secs_f64()
                );
                (last_b, last_r, last_t) = (b, r, Instant::now());
            }
            eprintln!();
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_figure_of_the_all_cpus_line() {
        let hz = ticks_per_s();
        let stat = "cpu  761395 0 329217 583591 741940 0 45539 7588 0 0\n\
                    cpu0 395199 0 204013 176120 435721 0 22171 3060 0 0\n";
        assert_eq!(parse_steal(stat), Some(7588.0 / hz));
        // A kernel without the field, or no such line: nothing to report.
        assert_eq!(parse_steal("cpu  1 2 3 4\n"), None);
        assert_eq!(parse_steal("intr 5\n"), None);
        let mut r = Report {
            steal_s: Some(0.25),
            ..Default::default()
        };
        assert!(r.human().contains("host steal: 0.25 s"));
        assert!(r.json().contains("\"steal_s\":0.250"));
        r.steal_s = Some(0.0);
        assert!(!r.human().contains("steal"));
    }
}
