//! The limits that protect the broker from its clients: how many connections it holds (in
//! all, and per IP address), and the causes for which it closes a connection or refuses one.
//! Each limit hit is counted (runnel_connections_*), and logged the first time and then at
//! most once a minute per cause with the count since: a flood of refused connections must not
//! become a flood of log lines.

use crate::metrics::{Counter, ShardCounters};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Descriptors kept back from connections for segment files, index files, pipes of fetches
/// in progress, the metadata log and the metrics endpoint.
const RESERVED_FDS: u64 = 1024;
/// How often one cause of closed or refused connections is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Raises the soft open-file limit to the hard one (servers need many descriptors; the
/// soft limit is often left at 1024) and returns the limit in effect.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// --max-connections when not given: each connection holds one descriptor (its socket) and,
/// while an answer is being spliced to it, a pipe (two more); what is left after the
/// reserve is divided by three, so even connections that all fetch at once never run the
/// broker out of descriptors (at 10,000 idle connections it ran out, and then answered
/// neither new clients nor the metrics endpoint).
pub fn default_max_connections(open_file_limit: u64) -> u32 {
    let usable = open_file_limit.saturating_sub(RESERVED_FDS.min(open_file_limit / 4));
    (usable / 3).clamp(1, u32::MAX as u64) as u32
}

/// Why a connection was refused or closed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    MaxConnections,
    MaxConnectionsPerIp,
    AcceptFailed,
    SlowRequest,
    SlowReader,
    Idle,
}

const CAUSES: usize = 6;

impl Cause {
    fn index(self) -> usize {
        self as usize
    }

    fn counter(self, c: &ShardCounters) -> &Counter {
        match self {
            Cause::MaxConnections => &c.connections_refused_max,
            Cause::MaxConnectionsPerIp => &c.connections_refused_per_ip,
            Cause::AcceptFailed => &c.accept_errors,
            Cause::SlowRequest => &c.connections_closed_slow_request,
            Cause::SlowReader => &c.connections_closed_slow_reader,
            Cause::Idle => &c.connections_closed_idle,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Cause::MaxConnections => "connection refused: --max-connections reached",
            Cause::MaxConnectionsPerIp => "connection refused: --max-connections-per-ip reached",
            Cause::AcceptFailed => "accept failed",
            Cause::SlowRequest => {
                "connection closed: a request did not arrive in full within --request-read-timeout-ms"
            }
            Cause::SlowReader => {
                "connection closed: the client took no bytes of an answer for --socket-send-timeout-ms"
            }
            Cause::Idle => "connection closed: no request for --connections-max-idle-ms",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Cause::MaxConnections => "runnel_connections_refused_max",
            Cause::MaxConnectionsPerIp => "runnel_connections_refused_per_ip",
            Cause::AcceptFailed => "runnel_accept_errors",
            Cause::SlowRequest => "runnel_connections_closed_slow_request",
            Cause::SlowReader => "runnel_connections_closed_slow_reader",
            Cause::Idle => "runnel_connections_closed_idle",
        }
    }
}

/// Per cause: hits since it was last logged, and when that was (ms since `EPOCH`, +1 so 0
/// means never).
static SINCE_LOGGED: [AtomicU64; CAUSES] = [const { AtomicU64::new(0) }; CAUSES];
static LAST_LOGGED: [AtomicU64; CAUSES] = [const { AtomicU64::new(0) }; CAUSES];

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Counts a limit hit on this shard's counters and logs it if its cause was not logged in
/// the last minute. Idle closes are counted and logged at debug only: they are routine.
pub fn hit(counters: &ShardCounters, cause: Cause, detail: std::fmt::Arguments<'_>) {
    cause.counter(counters).incr();
    if cause == Cause::Idle {
        tracing::debug!("{}: {detail}", cause.what());
        return;
    }
    let i = cause.index();
    SINCE_LOGGED[i].fetch_add(1, Ordering::Relaxed);
    let now = now_ms() + 1;
    let last = LAST_LOGGED[i].load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < LOG_EVERY.as_millis() as u64 {
        return;
    }
    if LAST_LOGGED[i]
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return; // another shard logs it
    }
    // The hits since the last line, this one included.
    let hits = SINCE_LOGGED[i].swap(0, Ordering::Relaxed).max(1);
    if last == 0 {
        tracing::warn!(
            "{}: {detail} (counted in {}; logged at most once a minute)",
            cause.what(),
            cause.metric()
        );
    } else {
        tracing::warn!(
            "{}: {detail} ({} more since last logged)",
            cause.what(),
            hits - 1
        );
    }
}

/// The broker-wide connection counts behind --max-connections and --max-connections-per-ip.
/// Shared by the shards' accept loops (each shard accepts on its own listener): an atomic
/// for the total, a mutex for the per-address counts, taken once per accept and close,
/// never on the request path.
pub struct ConnLimits {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection counted against the limits until dropped.
pub struct Admission {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max: u32, per_ip: Option<u32>) -> ConnLimits {
        ConnLimits {
            max: max as usize,
            per_ip: per_ip.map_or(usize::MAX, |n| n as usize),
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Cause> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Cause::MaxConnections);
        }
        if self.per_ip != usize::MAX {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_ip.entry(ip).or_default();
            if *n >= self.per_ip {
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Cause::MaxConnectionsPerIp);
            }
            *n += 1;
        }
        Ok(Admission {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let l = &self.limits;
        if l.per_ip != usize::MAX {
            let mut by_ip = l.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&self.ip);
                }
            }
        }
        l.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limits_and_frees_on_drop() {
        let l = Arc::new(ConnLimits::new(3, Some(2)));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Cause::MaxConnectionsPerIp));
        let _b1 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Cause::MaxConnections));
        assert_eq!(l.open(), 3);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.admit(a).unwrap();
        assert_eq!(l.by_ip.lock().unwrap()[&a], 2);
    }

    #[test]
    fn default_leaves_room_for_pipes_and_files() {
        assert_eq!(default_max_connections(20_000), (20_000 - 1024) / 3);
        assert_eq!(default_max_connections(1024), (1024 - 256) / 3);
        assert!(default_max_connections(4) >= 1);
    }
}
