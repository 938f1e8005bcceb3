//! The server-side assignors of KIP-848's consumer group protocol: `uniform` (the default)
//! and `range`, Kafka's two. The coordinator runs one whenever the group epoch moves past
//! the target assignment's epoch; members only ever receive their share of its result.

use runnel_metadata::TopicId;
use std::collections::{BTreeMap, BTreeSet};

/// Per topic id: the partitions.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// The assignors this broker runs, the default first (Kafka's `group.consumer.assignors`).
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as an assignor sees it.
pub struct Spec<'a> {
    pub member_id: &'a str,
    /// The subscribed topics that exist.
    pub topics: BTreeSet<TopicId>,
    /// Its share of the previous target assignment (uniform keeps what it can of it).
    pub previous: Option<&'a Assignment>,
}

/// Runs assignor `name` (one of [`ASSIGNORS`]) over `members` (in member id order) and the
/// partition counts of the subscribed topics.
pub fn assign(
    name: &str,
    members: &[Spec],
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    if name == "range" {
        range(members, partitions)
    } else {
        uniform(members, partitions)
    }
}

/// Kafka's range assignor: per topic, its subscribers in member id order take consecutive
/// ranges, the first ones one partition more when the count does not divide. Members
/// subscribed to the same co-partitioned topics get the same partition numbers of each.
fn range(members: &[Spec], partitions: &BTreeMap<TopicId, i32>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for (topic, &count) in partitions {
        let subs: Vec<&Spec> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subs.is_empty() {
            continue;
        }
        let (each, extra) = (count / subs.len() as i32, count % subs.len() as i32);
        let mut start = 0;
        for (i, m) in subs.iter().enumerate() {
            let n = each + i32::from((i as i32) < extra);
            if n > 0 {
                out.get_mut(m.member_id)
                    .expect("member")
                    .insert(*topic, (start..start + n).collect());
            }
            start += n;
        }
    }
    out
}

/// Kafka's uniform assignor: every partition of a subscribed topic goes to one of its
/// subscribers, as evenly as the subscriptions allow, moving as few partitions as it can:
/// each member keeps what it had that is still valid, the rest go to the least loaded
/// subscriber, then partitions move from the most loaded to the least loaded subscriber
/// until no move narrows the gap (with identical subscriptions, computed directly: counts
/// differ by at most one). The general case is quadratic in the partitions a member holds
/// at worst; groups with identical subscriptions never take it.
fn uniform(members: &[Spec], partitions: &BTreeMap<TopicId, i32>) -> BTreeMap<String, Assignment> {
    let n = members.len();
    // Per member: its partitions, as (topic, partition).
    let mut owned: Vec<BTreeSet<(TopicId, i32)>> = vec![BTreeSet::new(); n];
    let mut taken: BTreeSet<(TopicId, i32)> = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in m.previous.into_iter().flatten() {
            let Some(&count) = partitions.get(t) else {
                continue;
            };
            if !m.topics.contains(t) {
                continue;
            }
            for &p in ps {
                if p < count && taken.insert((*t, p)) {
                    owned[i].insert((*t, p));
                }
            }
        }
    }
    if n > 0 && members.iter().all(|m| m.topics == members[0].topics) {
        balance_identical(&mut owned, &taken, &members[0].topics, partitions);
        return collect(members, owned);
    }
    let subscribers =
        |t: &TopicId| -> Vec<usize> { (0..n).filter(|&i| members[i].topics.contains(t)).collect() };
    for (t, &count) in partitions {
        let subs = subscribers(t);
        if subs.is_empty() {
            continue;
        }
        for p in 0..count {
            if taken.contains(&(*t, p)) {
                continue;
            }
            let least = *subs
                .iter()
                .min_by_key(|&&i| (owned[i].len(), i))
                .expect("subscribers");
            owned[least].insert((*t, p));
        }
    }
    // Balance: each move lowers the sum of squared counts, so this ends.
    loop {
        let mut moved = false;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(owned[i].len()));
        'from: for &a in &order {
            let candidates: Vec<(TopicId, i32)> = owned[a].iter().rev().copied().collect();
            for (t, p) in candidates {
                let target = (0..n)
                    .filter(|&b| {
                        members[b].topics.contains(&t) && owned[b].len() + 1 < owned[a].len()
                    })
                    .min_by_key(|&b| (owned[b].len(), b));
                if let Some(b) = target {
                    owned[a].remove(&(t, p));
                    owned[b].insert((t, p));
                    moved = true;
                    break 'from;
                }
            }
        }
        if !moved {
            break;
        }
    }
    collect(members, owned)
}

/// Identical subscriptions (the common case), in O(partitions log partitions): the members
/// keeping the most get the `total % n` places for one partition more, members over their
/// quota give up their last partitions, and the members under it take the free ones.
fn balance_identical(
    owned: &mut [BTreeSet<(TopicId, i32)>],
    taken: &BTreeSet<(TopicId, i32)>,
    topics: &BTreeSet<TopicId>,
    partitions: &BTreeMap<TopicId, i32>,
) {
    let n = owned.len();
    let total: usize = topics
        .iter()
        .filter_map(|t| partitions.get(t))
        .map(|c| *c as usize)
        .sum();
    let (base, extra) = (total / n, total % n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(owned[i].len()), i));
    let mut quota = vec![base; n];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    let mut free: Vec<(TopicId, i32)> = Vec::new();
    for (i, set) in owned.iter_mut().enumerate() {
        while set.len() > quota[i] {
            let last = *set.iter().next_back().expect("over quota");
            set.remove(&last);
            free.push(last);
        }
    }
    for t in topics {
        let Some(&count) = partitions.get(t) else {
            continue;
        };
        free.extend((0..count).map(|p| (*t, p)).filter(|tp| !taken.contains(tp)));
    }
    let mut free = free.into_iter();
    for (i, set) in owned.iter_mut().enumerate() {
        while set.len() < quota[i] {
            match free.next() {
                Some(tp) => {
                    set.insert(tp);
                }
                None => return,
            }
        }
    }
}

fn collect(members: &[Spec], owned: Vec<BTreeSet<(TopicId, i32)>>) -> BTreeMap<String, Assignment> {
    members
        .iter()
        .zip(owned)
        .map(|(m, set)| {
            let mut a = Assignment::new();
            for (t, p) in set {
                a.entry(t).or_default().insert(p);
            }
            (m.member_id.to_string(), a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> TopicId {
        [b; 16]
    }

    fn spec<'a>(member: &'a str, topics: &[u8], previous: Option<&'a Assignment>) -> Spec<'a> {
        Spec {
            member_id: member,
            topics: topics.iter().map(|b| id(*b)).collect(),
            previous,
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn every_partition_once(
        out: &BTreeMap<String, Assignment>,
        partitions: &BTreeMap<TopicId, i32>,
    ) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t:?}-{p} assigned twice");
                }
            }
        }
        let all: usize = partitions.values().map(|c| *c as usize).sum();
        assert_eq!(seen.len(), all, "every partition assigned");
    }

    #[test]
    fn uniform_balances_identical_subscriptions_and_keeps_what_it_can() {
        let partitions = BTreeMap::from([(id(1), 7), (id(2), 3)]);
        let first = uniform(&[spec("a", &[1, 2], None)], &partitions);
        assert_eq!(count(&first["a"]), 10);
        let prev_a = first["a"].clone();
        let second = uniform(
            &[
                spec("a", &[1, 2], Some(&prev_a)),
                spec("b", &[1, 2], None),
                spec("c", &[1, 2], None),
            ],
            &partitions,
        );
        every_partition_once(&second, &partitions);
        let counts: Vec<usize> = second.values().map(count).collect();
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
        // a gave up only what b and c needed: all of a's partitions were a's before.
        for (t, ps) in &second["a"] {
            assert!(ps.is_subset(&prev_a[t]));
        }
        // Nothing changes when nothing changed.
        let prev: BTreeMap<String, Assignment> = second.clone();
        let third = uniform(
            &[
                spec("a", &[1, 2], Some(&prev["a"])),
                spec("b", &[1, 2], Some(&prev["b"])),
                spec("c", &[1, 2], Some(&prev["c"])),
            ],
            &partitions,
        );
        assert_eq!(third, second);
    }

    #[test]
    fn uniform_with_identical_subscriptions_scales_to_many_partitions() {
        let partitions = BTreeMap::from([(id(1), 10_000), (id(2), 1)]);
        let first = uniform(
            &[
                spec("a", &[1, 2], None),
                spec("b", &[1, 2], None),
                spec("c", &[1, 2], None),
            ],
            &partitions,
        );
        every_partition_once(&first, &partitions);
        let mut counts: Vec<usize> = first.values().map(count).collect();
        counts.sort();
        assert_eq!(counts, vec![3333, 3334, 3334]);
        // A fourth member takes a quarter, each of the others gives up only what it must.
        let second = uniform(
            &[
                spec("a", &[1, 2], Some(&first["a"])),
                spec("b", &[1, 2], Some(&first["b"])),
                spec("c", &[1, 2], Some(&first["c"])),
                spec("d", &[1, 2], None),
            ],
            &partitions,
        );
        every_partition_once(&second, &partitions);
        assert!(second.values().all(|a| (2500..=2501).contains(&count(a))));
        for m in ["a", "b", "c"] {
            for (t, ps) in &second[m] {
                assert!(ps.is_subset(&first[m][t]), "{m} kept only its own");
            }
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let partitions = BTreeMap::from([(id(1), 4), (id(2), 4)]);
        let out = uniform(
            &[spec("a", &[1], None), spec("b", &[1, 2], None)],
            &partitions,
        );
        every_partition_once(&out, &partitions);
        assert!(!out["a"].contains_key(&id(2)));
        assert_eq!(
            count(&out["a"]),
            4,
            "a takes all of topic 1, b all of topic 2"
        );
        assert_eq!(count(&out["b"]), 4);
    }

    #[test]
    fn uniform_drops_partitions_of_topics_gone_or_unsubscribed() {
        let partitions = BTreeMap::from([(id(1), 2)]);
        let prev = Assignment::from([
            (id(1), BTreeSet::from([0, 1, 5])),
            (id(9), BTreeSet::from([0])),
        ]);
        let out = uniform(&[spec("a", &[1], Some(&prev))], &partitions);
        assert_eq!(
            out["a"],
            Assignment::from([(id(1), BTreeSet::from([0, 1]))])
        );
    }

    #[test]
    fn range_gives_consecutive_ranges_in_member_order() {
        let partitions = BTreeMap::from([(id(1), 5), (id(2), 2)]);
        let out = range(
            &[spec("a", &[1, 2], None), spec("b", &[1, 2], None)],
            &partitions,
        );
        every_partition_once(&out, &partitions);
        assert_eq!(out["a"][&id(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&id(1)], BTreeSet::from([3, 4]));
        assert_eq!(out["a"][&id(2)], BTreeSet::from([0]));
        assert_eq!(out["b"][&id(2)], BTreeSet::from([1]));
        // More members than partitions: the last ones get nothing of that topic.
        let partitions = BTreeMap::from([(id(1), 1)]);
        let out = range(&[spec("a", &[1], None), spec("b", &[1], None)], &partitions);
        assert_eq!(count(&out["a"]), 1);
        assert!(out["b"].is_empty());
    }
}
