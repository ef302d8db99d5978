//! The ids of the items a receiver fetched lately: a broker that lost its
//! record of acknowledgements (a crash) hands items out again as if for the
//! first time; those this process already had are recognised here, counted
//! and dropped instead of delivered twice.

use std::collections::{HashSet, VecDeque};

/// How many ids a receiver remembers: well past any fetch-ahead window, a
/// few MiB at most.
pub(crate) const REMEMBERED_IDS: usize = 1 << 16;

/// A bounded set of ids; the oldest is forgotten first.
pub(crate) struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentIds { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    /// Remembers `id`; false if it was remembered already.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once_until_it_is_forgotten() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        assert!(recent.insert("b"));
        assert!(recent.insert("c"), "a is forgotten to make room");
        assert!(recent.insert("a"));
        assert!(!recent.insert("c"));
    }
}
