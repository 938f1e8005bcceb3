//! What the end-to-end benchmarks share: the release broker as a child process, and just
//! enough hand-written Kafka framing to drive it without a client library in the way.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release broker binary: RUNNEL_BIN or target/release/runnel.
pub fn broker_bin() -> PathBuf {
    let bin = std::env::var("RUNNEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/runnel")
        });
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release --bin runnel` or set RUNNEL_BIN",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Broker {
    pub child: Child,
    pub addr: String,
}

impl Broker {
    pub fn start(bin: &Path, data: &Path, args: &[&str]) -> Broker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        // BENCH_CORES: the broker's --cores (default: all).
        if let Ok(cores) = std::env::var("BENCH_CORES") {
            cmd.args(["--cores", &cores]);
        }
        let child = cmd
            .args(["--listen", &addr, "--log-level", "warn"])
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start runnel");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "runnel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, addr }
    }

    /// User + system CPU seconds of the broker process so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after_comm.split(' ').collect();
        // Fields 14 and 15 of stat(5); after_comm starts at field 3.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

pub fn frame(api_key: i16, version: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 32);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&corr.to_be_bytes());
    put_str(&mut f, "fanout-bench");
    f.extend_from_slice(body);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    f
}

pub fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("response size");
    let n = i32::from_be_bytes(size) as usize;
    buf.resize(n, 0);
    s.read_exact(buf).expect("response body");
}
