//! The bound on sagas driven at once ([`EngineConfig::max_in_flight`]): every driver holds a
//! [`Slot`] for as long as it runs, and a saga that finds none is not driven here.
//!
//! [`EngineConfig::max_in_flight`]: super::EngineConfig::max_in_flight

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The slots of one engine: how many are taken, and how many there are.
#[derive(Debug)]
pub(crate) struct Capacity {
    taken: AtomicUsize,
    limit: usize,
}

/// One taken slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Capacity>);

impl Capacity {
    /// `limit` slots (at least one), none taken.
    pub fn new(limit: usize) -> Arc<Capacity> {
        Arc::new(Capacity {
            taken: AtomicUsize::new(0),
            limit: limit.max(1),
        })
    }

    /// How many slots there are.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a slot, or `None` when all are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.limit).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Takes up to `n` slots: as many as are free.
    pub fn take_up_to(self: &Arc<Self>, n: usize) -> Vec<Slot> {
        std::iter::from_fn(|| self.try_take()).take(n).collect()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let capacity = Capacity::new(3);
        let first = capacity.try_take().expect("a free slot");
        let more = capacity.take_up_to(5);
        assert_eq!(more.len(), 2, "only the free slots are taken");
        assert!(capacity.try_take().is_none());
        drop(first);
        let again = capacity.try_take().expect("the dropped slot is free again");
        drop(more);
        assert_eq!(capacity.take_up_to(5).len(), 2);
        drop(again);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit() {
        let capacity = Capacity::new(8);
        let held: Vec<Vec<Slot>> = std::thread::scope(|scope| {
            let takers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| capacity.take_up_to(100)))
                .collect();
            takers.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 8);
        assert!(capacity.try_take().is_none());
    }
}
