//! The scheduler (docs/mediator.md, "Scheduling"): one queue over all pools, strict priority
//! high > medium > low, first come first served within a priority, no pre-emption.
//!
//! Pools have equal standing: a job's pool does not affect its place in the queue (it is kept for
//! the reports). Nothing here prevents starvation: while jobs of a higher priority keep arriving,
//! lower ones wait. What bounds it in practice is that a VM has at most one job queued or running
//! (its device is busy until its job ends), so at most one job per higher-priority VM can go
//! ahead of a waiting one each time the device frees.

use std::collections::VecDeque;

use crate::model::Priority;

/// A queued job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<T> {
    /// Submission number over all VMs (the FIFO order).
    pub seq: u64,
    /// The VM that submitted it.
    pub vm: usize,
    /// Its effective priority.
    pub priority: Priority,
    /// What the caller keeps with it.
    pub job: T,
}

/// The queue.
#[derive(Debug)]
pub struct Scheduler<T> {
    /// One FIFO per priority, highest first (index 0 = high).
    queues: [VecDeque<Queued<T>>; 3],
    next_seq: u64,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Self { queues: Default::default(), next_seq: 1 }
    }
}

fn index(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

/// The priority a job gets: what it asked for (or the VM's default), capped at the VM's highest
/// allowed. Returns the effective priority and whether a request was capped.
pub fn effective(requested: Option<Priority>, default: Priority, max: Priority) -> (Priority, bool) {
    let want = requested.unwrap_or(default);
    if want > max {
        (max, true)
    } else {
        (want, false)
    }
}

impl<T> Scheduler<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a job; returns its submission number.
    pub fn submit(&mut self, vm: usize, priority: Priority, job: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queues[index(priority)].push_back(Queued { seq, vm, priority, job });
        seq
    }

    /// The next job to run: the oldest of the highest priority that has one.
    pub fn pop(&mut self) -> Option<Queued<T>> {
        self.queues.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Removes every queued job of `vm` (it went away or reset), oldest first.
    pub fn cancel_vm(&mut self, vm: usize) -> Vec<Queued<T>> {
        let mut out = Vec::new();
        for q in &mut self.queues {
            let (gone, keep): (Vec<_>, Vec<_>) = q.drain(..).partition(|j| j.vm == vm);
            out.extend(gone);
            q.extend(keep);
        }
        out.sort_by_key(|j| j.seq);
        out
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Jobs waiting per priority (high, medium, low).
    pub fn depth(&self) -> [usize; 3] {
        [self.queues[0].len(), self.queues[1].len(), self.queues[2].len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Priority::*;

    fn order(s: &mut Scheduler<()>) -> Vec<(usize, Priority)> {
        std::iter::from_fn(|| s.pop()).map(|j| (j.vm, j.priority)).collect()
    }

    #[test]
    fn strict_priority_then_fifo() {
        let mut s = Scheduler::new();
        s.submit(0, Low, ());
        s.submit(1, Medium, ());
        s.submit(2, Low, ());
        s.submit(3, High, ());
        s.submit(4, Medium, ());
        assert_eq!(order(&mut s), vec![(3, High), (1, Medium), (4, Medium), (0, Low), (2, Low)]);
        assert!(s.is_empty());
    }

    #[test]
    fn submissions_while_running_keep_their_place() {
        let mut s = Scheduler::new();
        s.submit(0, Low, ());
        s.submit(1, Low, ());
        assert_eq!(s.pop().map(|j| j.vm), Some(0));
        s.submit(2, High, ());
        s.submit(0, Low, ());
        assert_eq!(order(&mut s), vec![(2, High), (1, Low), (0, Low)]);
    }

    #[test]
    fn caps_and_defaults() {
        assert_eq!(effective(None, Medium, High), (Medium, false));
        assert_eq!(effective(Some(High), Low, Medium), (Medium, true));
        assert_eq!(effective(Some(Low), High, High), (Low, false));
        assert_eq!(effective(None, High, Low), (Low, true));
    }

    #[test]
    fn cancelling_a_vm_removes_only_its_jobs() {
        let mut s = Scheduler::new();
        s.submit(0, Low, ());
        s.submit(1, High, ());
        s.submit(0, High, ());
        s.submit(2, Low, ());
        let gone = s.cancel_vm(0);
        assert_eq!(gone.iter().map(|j| j.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.depth(), [1, 0, 1]);
        assert_eq!(order(&mut s), vec![(1, High), (2, Low)]);
        assert!(s.cancel_vm(5).is_empty());
    }

    fn prio() -> impl Strategy<Value = Priority> {
        prop_oneof![Just(Low), Just(Medium), Just(High)]
    }

    proptest! {
        /// Against a reference: whatever is submitted, popped and cancelled in any order, each pop
        /// returns the queued job with the highest priority and, among those, the lowest seq.
        #[test]
        fn pop_is_highest_priority_oldest(ops in proptest::collection::vec((0u8..3, 0usize..4, prio()), 1..200)) {
            let mut s = Scheduler::new();
            let mut reference: Vec<(u64, usize, Priority)> = Vec::new();
            for (op, vm, p) in ops {
                match op {
                    0 => { let seq = s.submit(vm, p, ()); reference.push((seq, vm, p)); }
                    1 => {
                        let want = reference.iter().copied()
                            .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)));
                        let got = s.pop().map(|j| (j.seq, j.vm, j.priority));
                        prop_assert_eq!(got, want);
                        if let Some(w) = want { reference.retain(|r| r.0 != w.0); }
                    }
                    _ => {
                        let got: Vec<u64> = s.cancel_vm(vm).iter().map(|j| j.seq).collect();
                        let want: Vec<u64> = reference.iter().filter(|r| r.1 == vm).map(|r| r.0).collect();
                        prop_assert_eq!(got, want);
                        reference.retain(|r| r.1 != vm);
                    }
                }
                prop_assert_eq!(s.len(), reference.len());
            }
        }
    }
}
