//! The harness: the real `runnel` binary on a free port with its own temp data dir, waited on
//! with deadlines, stopped with real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_runnel");

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
pub fn with_timeout<F: FnOnce() + Send + 'static>(secs: u64, f: F) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic.
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(_) => panic!("test timed out after {secs} s"),
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Broker {
    child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
    pub metrics_addr: Option<String>,
    /// The listen address announced by a launched broker, until it is ready.
    ready: Option<std::sync::mpsc::Receiver<String>>,
    /// A network namespace to run in (`ip netns exec`), and the address its metrics
    /// listener binds (the namespace's own, reachable from the test).
    netns: Option<(String, String)>,
}

impl Broker {
    /// A broker on a free port with a fresh temp data dir.
    pub fn start(args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut b = Broker::start_in(&dir, args);
        b._tmp = Some(tmp);
        b
    }

    pub fn start_in(dir: &Path, args: &[&str]) -> Broker {
        let mut b = Broker::launch(dir, "127.0.0.1:0", args);
        b.await_ready();
        b
    }

    /// Starts the process without waiting for it to be ready (a cluster's brokers wait for
    /// each other): [`Broker::await_ready`] next.
    pub fn launch(dir: &Path, listen: &str, args: &[&str]) -> Broker {
        let mut b = Broker::unstarted(dir, args, None);
        b.launch_process(listen);
        b
    }

    fn unstarted(dir: &Path, args: &[&str], netns: Option<(String, String)>) -> Broker {
        Broker {
            child: None,
            addr: String::new(),
            dir: dir.to_path_buf(),
            _tmp: None,
            log: Arc::default(),
            args: args.iter().map(|s| s.to_string()).collect(),
            metrics_addr: None,
            ready: None,
            netns,
        }
    }

    /// [`Broker::launch`] inside network namespace `ns`, whose address is `host`.
    pub fn launch_in_netns(dir: &Path, ns: &str, host: &str, port: u16, args: &[&str]) -> Broker {
        let mut b = Broker::unstarted(dir, args, Some((ns.to_string(), host.to_string())));
        b.launch_process(&format!("{host}:{port}"));
        b
    }

    pub fn await_ready(&mut self) {
        let rx = self.ready.take().expect("launched");
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => self.addr = addr,
            Err(_) => panic!("runnel did not become ready:\n{}", self.logs()),
        }
    }

    fn launch_process(&mut self, listen: &str) {
        let (mut cmd, metrics_host) = match &self.netns {
            Some((ns, host)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                (c, host.clone())
            }
            None => (Command::new(BIN), "127.0.0.1".to_string()),
        };
        cmd.arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !self.args.iter().any(|a| a.starts_with("--cores")) {
            cmd.arg("--cores").arg("1");
        }
        let metrics = free_port();
        cmd.arg("--metrics-listen")
            .arg(format!("{metrics_host}:{metrics}"));
        self.metrics_addr = Some(format!("{metrics_host}:{metrics}"));
        let mut child = cmd.spawn().expect("start runnel");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("runnel is ready listen=") {
                        let addr = line[i + "runnel is ready listen=".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .to_string();
                        let _ = tx.send(addr);
                    }
                    if std::env::var_os("RUNNEL_TEST_LOG").is_some() {
                        eprintln!("[runnel] {line}");
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        self.log = log;
        self.child = Some(child);
        self.ready = Some(rx);
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Forgets what the broker logged so far (a test that provoked a panic on purpose).
    pub fn clear_logs(&self) {
        self.log.lock().unwrap().clear();
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL: no flush, no marker.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(30));
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("broker running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("runnel did not exit in time:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same data dir and port.
    pub fn restart(&mut self) {
        self.relaunch();
        self.await_ready();
    }

    /// [`Broker::restart`] without waiting for it to be ready.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        let addr = self.addr.clone();
        self.launch_process(&addr);
    }

    /// The sum over shards of a counter from the metrics endpoint, per shard.
    pub fn metric(&self, name: &str) -> Vec<u64> {
        let mut s = TcpStream::connect(self.metrics_addr.as_ref().unwrap()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let prefix = format!("runnel_{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    pub fn metric_sum(&self, name: &str) -> u64 {
        self.metric(name).iter().sum()
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Every test also checks that nothing it did reached a panic in the broker (which
        // aborts it, saying so).
        if !std::thread::panicking() && self.logs().contains("runnel: panicked") {
            let logs = self.logs();
            if self.child.is_some() {
                self.kill();
            }
            panic!("the broker panicked:\n{logs}");
        }
        if std::thread::panicking() {
            // The test failed: what this broker said last is the first thing to look at.
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of the broker at {} ({}):",
                self.addr,
                self.dir.display()
            );
            for l in tail.iter().rev() {
                eprintln!("    {l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port no other test of this run gets. Ports are handed out from a counter over
/// 20000-32767, below the kernel's ephemeral range: a port the kernel picked for `:0` may be
/// picked again for another test before the broker binds it (and brokers bind with
/// SO_REUSEPORT, so two of them could share it), or taken by an outgoing connection.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Start somewhere that depends on the process, so two test runs on one machine rarely
    // walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// The whole batches of a partition's segment files, in order, as raw bytes.
pub fn segment_batch_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let mut pos = 0;
        while pos + 61 <= data.len() {
            let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
            if pos + 12 + len > data.len() {
                break;
            }
            out.push(data[pos..pos + 12 + len].to_vec());
            pos += 12 + len;
        }
    }
    out
}

/// Every batch header in a partition's segment files: (base offset, attributes, records).
pub fn segment_batches(dir: &Path) -> Vec<(i64, i16, i32)> {
    segment_batch_bytes(dir)
        .iter()
        .map(|b| {
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let attrs = i16::from_be_bytes(b[21..23].try_into().unwrap());
            let count = i32::from_be_bytes(b[57..61].try_into().unwrap());
            (base, attrs, count)
        })
        .collect()
}

/// Runs a command with a deadline; returns (status, stdout, stderr).
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} timed out; stderr:\n{}",
                te.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, to.join().unwrap(), te.join().unwrap())
}
