//! Server selection policies. Each returns an index into the pool's servers, skipping servers
//! this request already tried, or `None` when every server was tried.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::UpstreamServer;

/// Servers one request has already tried, by index. No allocation for pools of up to 64.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    low: u64,
    high: Vec<usize>,
}

// === impl Tried ===

impl Tried {
    pub fn insert(&mut self, index: usize) {
        match 1u64.checked_shl(index as u32).filter(|_| index < 64) {
            Some(bit) => self.low |= bit,
            None => self.high.push(index),
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        if index < 64 {
            self.low & (1 << index) != 0
        } else {
            self.high.contains(&index)
        }
    }

    pub fn count(&self) -> usize {
        self.low.count_ones() as usize + self.high.len()
    }
}

/// Round robin and random: walk from `start` to the first untried server.
pub fn first_untried(len: usize, start: usize, tried: &Tried) -> Option<usize> {
    (0..len)
        .map(|offset| start.wrapping_add(offset) % len)
        .find(|index| !tried.contains(*index))
}

/// The untried server with the fewest requests in flight; ties go round robin from `start`
/// so equally idle servers share the load.
pub fn least_loaded(servers: &[Arc<UpstreamServer>], start: usize, tried: &Tried) -> Option<usize> {
    let len = servers.len();
    (0..len)
        .map(|offset| start.wrapping_add(offset) % len)
        .filter(|index| !tried.contains(*index))
        .min_by_key(|index| servers.get(*index).map_or(usize::MAX, |s| s.in_flight()))
}

/// Rendezvous hashing: every (key, server) pair gets a score and the highest untried score
/// wins. A key keeps its server while that server is in the pool, and removing a server moves
/// only the keys that were on it.
pub fn highest_random_weight(
    servers: &[Arc<UpstreamServer>],
    key: u64,
    tried: &Tried,
) -> Option<usize> {
    servers
        .iter()
        .enumerate()
        .filter(|(index, _)| !tried.contains(*index))
        .max_by_key(|(_, server)| {
            // DefaultHasher::new() uses fixed keys, so scores are stable across processes.
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            server.endpoint.hash(&mut hasher);
            hasher.finish()
        })
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        hasher.finish()
    }

    fn servers(n: u16) -> Vec<Arc<UpstreamServer>> {
        (0..n)
            .map(|i| {
                Arc::new(UpstreamServer::new(
                    super::super::Endpoint::Inet(([127, 0, 0, 1], 5000 + i).into()),
                    None,
                    super::super::health::Health::Unknown,
                ))
            })
            .collect()
    }

    #[test]
    fn tried_handles_large_pools() {
        let mut tried = Tried::default();
        tried.insert(3);
        tried.insert(100);
        assert!(tried.contains(3) && tried.contains(100) && !tried.contains(4));
        assert_eq!(tried.count(), 2);
    }

    #[test]
    fn first_untried_skips_tried_and_gives_up_when_all_are() {
        let mut tried = Tried::default();
        tried.insert(1);
        assert_eq!(first_untried(3, 1, &tried), Some(2));
        tried.insert(0);
        tried.insert(2);
        assert_eq!(first_untried(3, 7, &tried), None);
    }

    #[test]
    fn least_loaded_prefers_idle_server() {
        let pool = servers(3);
        let _busy = [pool[0].begin_request(), pool[2].begin_request()];
        for start in 0..6 {
            assert_eq!(least_loaded(&pool, start, &Tried::default()), Some(1));
        }
    }

    #[test]
    fn hashing_is_stable_and_moves_only_keys_of_a_removed_server() {
        let pool = servers(5);
        let keys: Vec<String> = (0..500)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| highest_random_weight(&pool, key_of(k), &Tried::default()))
            .collect();
        let mut without_two = Tried::default();
        without_two.insert(2);
        for (key, first) in keys.iter().zip(&before) {
            let again = highest_random_weight(&pool, key_of(key), &Tried::default());
            assert_eq!(again, *first, "same key, same server");
            let after = highest_random_weight(&pool, key_of(key), &without_two);
            if *first != Some(2) {
                assert_eq!(after, *first, "keys not on the removed server stay put");
            }
        }
        let on_each = (0..5).map(|i| before.iter().filter(|s| **s == Some(i)).count());
        assert!(
            on_each.clone().all(|n| n > 50),
            "keys spread over all servers"
        );
    }
}
