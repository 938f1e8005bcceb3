//! Stable placement: which shard owns a partition. The same in every process and every
//! start, so it hashes with FNV-1a rather than std's randomly seeded hasher.

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The shard owning `topic`-`partition`: a topic's partitions go round-robin over the shards
/// from a start derived from the topic name.
pub fn owner(topic: &str, partition: i32, nr_shards: usize) -> usize {
    (fnv1a(topic.as_bytes()).wrapping_add(partition as u64) % nr_shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_a_topics_partitions() {
        assert_eq!(owner("orders", 0, 4), owner("orders", 0, 4));
        let shards: std::collections::HashSet<usize> =
            (0..4).map(|p| owner("orders", p, 4)).collect();
        assert_eq!(shards.len(), 4);
        assert!((0..100).all(|p| owner("t", p, 1) == 0));
    }
}
