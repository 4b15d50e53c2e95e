//! [`Schedule`]: things due at instants of virtual time, taken in time order, and in the order
//! they were scheduled when due together, so that a run never depends on a hash or a thread.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items due at instants, taken earliest first (first scheduled first among equals).
#[derive(Debug)]
pub struct Schedule<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so that the max-heap yields the earliest entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Schedule<T> {
    /// An empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `item` at `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.heap.push(Entry { at, seq, item });
    }

    /// When the earliest item is due.
    pub fn next_time(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The earliest item if it is due at or before `now`, with its time.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.next_time()? > now {
            return None;
        }
        self.heap.pop().map(|e| (e.at, e.item))
    }

    /// How many items are scheduled.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_then_in_order_scheduled() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.push(t0 + Duration::from_millis(5), "late");
        s.push(t0, "first");
        s.push(t0, "second");
        assert_eq!(s.next_time(), Some(t0));
        assert_eq!(s.pop_due(t0), Some((t0, "first")));
        assert_eq!(s.pop_due(t0), Some((t0, "second")));
        assert_eq!(s.pop_due(t0), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop_due(t0 + Duration::from_secs(1)).map(|(_, i)| i), Some("late"));
        assert!(s.is_empty());
    }
}
