//! Replication throttles (Kafka's `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate`): a byte rate per broker for the replicas a
//! reassignment adds, so copying a partition to a new broker does not starve producers,
//! consumers and the in-sync followers. Each shard gets an equal share of the broker's rate
//! (shared nothing: no counter crosses shards) and keeps it as a token bucket holding at
//! most one second of it; a fetch may overdraw it, and the next waits until it is paid.

use std::cell::Cell;
use std::time::Instant;

pub struct Throttle {
    /// Bytes per second for this shard; None: unlimited.
    rate: Cell<Option<f64>>,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl Throttle {
    /// `broker_rate` bytes per second over `nr_shards` shards (u64::MAX: unlimited, Kafka's
    /// default).
    pub fn new(broker_rate: u64, nr_shards: usize) -> Throttle {
        let rate = share(broker_rate, nr_shards);
        Throttle {
            rate: Cell::new(rate),
            tokens: Cell::new(rate.unwrap_or(0.0)),
            last: Cell::new(Instant::now()),
        }
    }

    /// A new rate (a dynamic broker config changed); what is owed stays owed.
    pub fn set_rate(&self, broker_rate: u64, nr_shards: usize) {
        let rate = share(broker_rate, nr_shards);
        if rate != self.rate.get() {
            if let Some(r) = rate {
                self.tokens.set(self.tokens.get().min(r.max(1.0)));
            }
            self.rate.set(rate);
        }
    }

    fn refill(&self, rate: f64) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        self.tokens
            .set((self.tokens.get() + elapsed * rate).min(rate.max(1.0)));
    }

    /// Whether throttled traffic must wait (the bucket is overdrawn).
    pub fn exhausted(&self) -> bool {
        match self.rate.get() {
            None => false,
            Some(rate) => {
                self.refill(rate);
                self.tokens.get() <= 0.0
            }
        }
    }

    /// Counts `bytes` of throttled traffic.
    pub fn charge(&self, bytes: u64) {
        if let Some(rate) = self.rate.get() {
            self.refill(rate);
            self.tokens.set(self.tokens.get() - bytes as f64);
        }
    }
}

/// This shard's share of a broker's rate (u64::MAX: unlimited).
fn share(broker_rate: u64, nr_shards: usize) -> Option<f64> {
    (broker_rate != u64::MAX).then(|| broker_rate as f64 / nr_shards.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overdrawn_bucket_refills_at_the_rate() {
        let t = Throttle::new(2_000_000, 2);
        assert!(!t.exhausted());
        t.charge(3_000_000);
        assert!(t.exhausted());
        let unlimited = Throttle::new(u64::MAX, 2);
        unlimited.charge(u64::MAX / 2);
        assert!(!unlimited.exhausted());
        // An overdraft is paid back at the rate: 1000 bytes at 100 kB/s take 10 ms.
        let slow = Throttle::new(100_000, 1);
        slow.charge(101_000);
        let start = Instant::now();
        while slow.exhausted() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "never refilled"
            );
            std::thread::yield_now();
        }
        assert!(start.elapsed() >= std::time::Duration::from_millis(9));
        // Lifted at runtime, and set again.
        t.set_rate(u64::MAX, 2);
        assert!(!t.exhausted());
        t.set_rate(1000, 2);
        t.charge(10_000);
        assert!(t.exhausted());
    }
}
