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
    rate: Option<f64>,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl Throttle {
    /// `broker_rate` bytes per second over `nr_shards` shards (u64::MAX: unlimited, Kafka's
    /// default).
    pub fn new(broker_rate: u64, nr_shards: usize) -> Throttle {
        let rate = (broker_rate != u64::MAX).then(|| broker_rate as f64 / nr_shards.max(1) as f64);
        Throttle {
            rate,
            tokens: Cell::new(rate.unwrap_or(0.0)),
            last: Cell::new(Instant::now()),
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
        match self.rate {
            None => false,
            Some(rate) => {
                self.refill(rate);
                self.tokens.get() <= 0.0
            }
        }
    }

    /// Counts `bytes` of throttled traffic.
    pub fn charge(&self, bytes: u64) {
        if let Some(rate) = self.rate {
            self.refill(rate);
            self.tokens.set(self.tokens.get() - bytes as f64);
        }
    }
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
    }
}
