//! The admission queue: FIFO within each priority, higher priorities first, each priority
//! bounded (a full queue refuses at once, so that the gateway can try another agent). With
//! aging, a waiting request rises one class for every `aging` it has waited, so that steady
//! urgent traffic delays low-priority work by at most three aging periods, never forever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::generation::Priority;

/// The queue for `priority` is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {} queue is full ({limit} waiting)", priority.as_str())]
pub struct QueueFull {
    /// The refused priority.
    pub priority: Priority,
    /// Its limit.
    pub limit: usize,
}

/// One waiting item and when it was first queued.
#[derive(Debug, Clone)]
struct Waiting<T> {
    since: Instant,
    item: T,
}

/// A bounded multi-priority FIFO of `T`.
#[derive(Debug, Clone)]
pub struct AdmissionQueue<T> {
    queues: [VecDeque<Waiting<T>>; 4],
    limits: [usize; 4],
    /// Wait after which an item rises one class; zero turns aging off.
    aging: Duration,
}

impl<T> AdmissionQueue<T> {
    /// A queue with a limit per priority, in `Priority::ALL` order, whose items rise one
    /// class per `aging` waited (never, when zero).
    pub fn new(limits: [usize; 4], aging: Duration) -> Self {
        Self {
            queues: Default::default(),
            limits,
            aging,
        }
    }

    /// Why an item of `priority` would be refused now, if it would.
    pub fn refusal(&self, priority: Priority) -> Option<QueueFull> {
        let limit = self.limits[priority.index()];
        (self.queues[priority.index()].len() >= limit).then_some(QueueFull { priority, limit })
    }

    /// Queues `item`, or refuses it when its priority's queue is full.
    pub fn push(&mut self, priority: Priority, item: T) -> Result<(), QueueFull> {
        self.push_at(priority, item, Instant::now())
    }

    /// `push`, queued at `now`.
    pub fn push_at(&mut self, priority: Priority, item: T, now: Instant) -> Result<(), QueueFull> {
        let (queue, limit) = (
            &mut self.queues[priority.index()],
            self.limits[priority.index()],
        );
        if queue.len() >= limit {
            return Err(QueueFull { priority, limit });
        }
        queue.push_back(Waiting { since: now, item });
        Ok(())
    }

    /// The class an item of `priority` queued at `since` has reached by `now` (0 is the
    /// most urgent).
    fn class(&self, priority: Priority, since: Instant, now: Instant) -> usize {
        let risen = match self.aging.as_nanos() {
            0 => 0,
            aging => now.saturating_duration_since(since).as_nanos() / aging,
        };
        priority
            .index()
            .saturating_sub(usize::try_from(risen).unwrap_or(usize::MAX))
    }

    /// The priority whose head goes first at `now`: the most urgent class reached, then
    /// the longest wait, then the higher priority. Only heads compete: within a priority
    /// the head has waited longest, so it has risen furthest.
    fn next_priority(&self, now: Instant) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .filter_map(|p| {
                let head = self.queues[p.index()].front()?;
                Some(((self.class(p, head.since, now), head.since, p), p))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, p)| p)
    }

    /// The item that goes first at `now`, with its own priority.
    pub fn pop_at(&mut self, now: Instant) -> Option<(Priority, T)> {
        let p = self.next_priority(now)?;
        let waiting = self.queues[p.index()].pop_front()?;
        Some((p, waiting.item))
    }

    /// Puts an item back at the head of its priority (a preempted sequence keeps its turn),
    /// even past the limit: it was admitted already. It takes the age of the head it goes
    /// before (none when alone): its time running must not count as waiting, or a long
    /// low-priority generation would come back ahead of every urgent request.
    pub fn push_front(&mut self, priority: Priority, item: T, now: Instant) {
        let queue = &mut self.queues[priority.index()];
        let since = queue.front().map_or(now, |w| w.since);
        queue.push_front(Waiting { since, item });
    }

    /// The item `pop_at(now)` would return, without removing it.
    pub fn peek_at(&self, now: Instant) -> Option<&T> {
        let p = self.next_priority(now)?;
        self.queues[p.index()].front().map(|w| &w.item)
    }

    /// How long the item `pop_at(now)` would return has waited (for a preempted item, as
    /// long as the head it was put before).
    pub fn head_waited(&self, now: Instant) -> Option<Duration> {
        let p = self.next_priority(now)?;
        let head = self.queues[p.index()].front()?;
        Some(now.saturating_duration_since(head.since))
    }

    /// Removes every item for which `drop_it` holds (cancelled requests); returns how many.
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&T) -> bool) -> usize {
        let before = self.len();
        for q in &mut self.queues {
            q.retain(|w| !drop_it(&w.item));
        }
        before - self.len()
    }

    /// Takes every waiting item out, highest priority first, each class in arrival order.
    pub fn drain(&mut self) -> Vec<T> {
        self.queues
            .iter_mut()
            .flat_map(|q| q.drain(..).map(|w| w.item))
            .collect()
    }

    /// Waiting items per priority, in `Priority::ALL` order.
    pub fn depths(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|i| self.queues[i].len())
    }

    /// Every waiting item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.queues.iter().flatten().map(|w| &w.item)
    }

    /// Waiting items in all.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgent_first_then_fifo() {
        let mut q = AdmissionQueue::new([4, 4, 4, 4], Duration::ZERO);
        q.push(Priority::Low, "low").unwrap();
        q.push(Priority::Normal, "n1").unwrap();
        q.push(Priority::Critical, "crit").unwrap();
        q.push(Priority::Normal, "n2").unwrap();
        let order: Vec<_> =
            std::iter::from_fn(|| q.pop_at(Instant::now()).map(|(_, x)| x)).collect();
        assert_eq!(order, ["crit", "n1", "n2", "low"]);
    }

    #[test]
    fn each_priority_is_bounded_on_its_own() {
        let mut q = AdmissionQueue::new([1, 1, 2, 0], Duration::ZERO);
        q.push(Priority::Normal, 1).unwrap();
        q.push(Priority::Normal, 2).unwrap();
        assert_eq!(
            q.push(Priority::Normal, 3),
            Err(QueueFull {
                priority: Priority::Normal,
                limit: 2
            })
        );
        assert!(
            q.push(Priority::Low, 4).is_err(),
            "a zero limit refuses everything"
        );
        q.push(Priority::High, 5).unwrap();
        assert_eq!(q.depths(), [0, 1, 2, 0]);
        assert_eq!(
            QueueFull {
                priority: Priority::Normal,
                limit: 2
            }
            .to_string(),
            "the normal queue is full (2 waiting)"
        );
    }

    #[test]
    fn preempted_work_goes_back_to_the_head_and_cancelled_work_leaves() {
        let mut q = AdmissionQueue::new([8; 4], Duration::ZERO);
        q.push(Priority::Normal, 1).unwrap();
        q.push(Priority::Normal, 2).unwrap();
        q.push_front(Priority::Normal, 0, Instant::now());
        assert_eq!(q.peek_at(Instant::now()), Some(&0));
        assert_eq!(q.remove_where(|x| *x == 1), 1);
        assert_eq!(
            std::iter::from_fn(|| q.pop_at(Instant::now()).map(|(_, x)| x)).collect::<Vec<_>>(),
            [0, 2]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiting_item_rises_one_class_per_aging_period() {
        let aging = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = AdmissionQueue::new([8; 4], aging);
        q.push_at(Priority::Low, "low", t0).unwrap();
        q.push_at(Priority::Critical, "critical", at(15)).unwrap();
        // At 15 s low has risen to normal: critical goes first.
        assert_eq!(q.pop_at(at(15)), Some((Priority::Critical, "critical")));
        // At 25 s low has risen to high: it passes a normal request that just came.
        q.push_at(Priority::Normal, "normal", at(25)).unwrap();
        assert_eq!(q.pop_at(at(25)), Some((Priority::Low, "low")));
        assert_eq!(q.pop_at(at(25)), Some((Priority::Normal, "normal")));
    }

    #[test]
    fn under_steady_critical_traffic_low_waits_at_most_three_aging_periods() {
        let aging = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut q = AdmissionQueue::new([64; 4], aging);
        q.push_at(Priority::Low, "low", t0).unwrap();
        // A new critical request every second, one served every second.
        for s in 0..60 {
            let now = t0 + Duration::from_secs(s);
            q.push_at(Priority::Critical, "critical", now).unwrap();
            if q.pop_at(now) == Some((Priority::Low, "low")) {
                assert!(s <= 30, "low waited {s} s");
                return;
            }
        }
        panic!("low was never served");
    }

    #[test]
    fn time_spent_running_does_not_count_as_waiting() {
        let aging = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = AdmissionQueue::new([8; 4], aging);
        q.push_at(Priority::Critical, "critical", at(100)).unwrap();
        // A low sequence that ran for 100 s comes back preempted: it is low again.
        q.push_front(Priority::Low, "preempted", at(100));
        assert_eq!(q.pop_at(at(100)), Some((Priority::Critical, "critical")));
        // Put before a low request that has waited, it takes that request's age.
        q.push_at(Priority::Low, "waiting", at(110)).unwrap();
        q.push_front(Priority::Low, "again", at(140));
        assert_eq!(q.peek_at(at(140)), Some(&"again"));
        q.push_at(Priority::High, "high", at(140)).unwrap();
        assert_eq!(
            q.pop_at(at(140)),
            Some((Priority::Low, "again")),
            "risen to critical"
        );
    }

    #[test]
    fn without_aging_priority_alone_decides() {
        let t0 = Instant::now();
        let mut q = AdmissionQueue::new([8; 4], Duration::ZERO);
        q.push_at(Priority::Low, "low", t0).unwrap();
        q.push_at(Priority::Normal, "normal", t0 + Duration::from_secs(3600))
            .unwrap();
        let later = t0 + Duration::from_secs(7200);
        assert_eq!(q.pop_at(later), Some((Priority::Normal, "normal")));
    }
}
