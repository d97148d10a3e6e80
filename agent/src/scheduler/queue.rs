//! The admission queue: FIFO within each priority, higher priorities first, each priority
//! bounded (a full queue refuses at once, so that the gateway can try another agent).

use std::collections::VecDeque;

/// Request priority (`x-inferpool-priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Served before everything else.
    Critical,
    /// Before normal traffic.
    High,
    /// The default.
    Normal,
    /// Background work.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    fn index(self) -> usize {
        self as usize
    }

    /// The header spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// The queue for `priority` is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {} queue is full ({limit} waiting)", priority.as_str())]
pub struct QueueFull {
    /// The refused priority.
    pub priority: Priority,
    /// Its limit.
    pub limit: usize,
}

/// A bounded multi-priority FIFO of `T`.
#[derive(Debug, Clone)]
pub struct AdmissionQueue<T> {
    queues: [VecDeque<T>; 4],
    limits: [usize; 4],
}

impl<T> AdmissionQueue<T> {
    /// A queue with a limit per priority, in `Priority::ALL` order.
    pub fn new(limits: [usize; 4]) -> Self {
        Self {
            queues: Default::default(),
            limits,
        }
    }

    /// Queues `item`, or refuses it when its priority's queue is full.
    pub fn push(&mut self, priority: Priority, item: T) -> Result<(), QueueFull> {
        let (queue, limit) = (
            &mut self.queues[priority.index()],
            self.limits[priority.index()],
        );
        if queue.len() >= limit {
            return Err(QueueFull { priority, limit });
        }
        queue.push_back(item);
        Ok(())
    }

    /// The oldest item of the most urgent non-empty priority.
    pub fn pop(&mut self) -> Option<(Priority, T)> {
        Priority::ALL
            .into_iter()
            .find_map(|p| self.queues[p.index()].pop_front().map(|item| (p, item)))
    }

    /// Puts an item back at the head of its priority (a preempted sequence keeps its turn),
    /// even past the limit: it was admitted already.
    pub fn push_front(&mut self, priority: Priority, item: T) {
        self.queues[priority.index()].push_front(item);
    }

    /// The item `pop` would return, without removing it.
    pub fn peek(&self) -> Option<&T> {
        Priority::ALL
            .into_iter()
            .find_map(|p| self.queues[p.index()].front())
    }

    /// Removes every item for which `drop_it` holds (cancelled requests); returns how many.
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&T) -> bool) -> usize {
        let before = self.len();
        for q in &mut self.queues {
            q.retain(|item| !drop_it(item));
        }
        before - self.len()
    }

    /// Waiting items per priority, in `Priority::ALL` order.
    pub fn depths(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|i| self.queues[i].len())
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
        let mut q = AdmissionQueue::new([4, 4, 4, 4]);
        q.push(Priority::Low, "low").unwrap();
        q.push(Priority::Normal, "n1").unwrap();
        q.push(Priority::Critical, "crit").unwrap();
        q.push(Priority::Normal, "n2").unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, ["crit", "n1", "n2", "low"]);
    }

    #[test]
    fn each_priority_is_bounded_on_its_own() {
        let mut q = AdmissionQueue::new([1, 1, 2, 0]);
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
        let mut q = AdmissionQueue::new([8; 4]);
        q.push(Priority::Normal, 1).unwrap();
        q.push(Priority::Normal, 2).unwrap();
        q.push_front(Priority::Normal, 0);
        assert_eq!(q.peek(), Some(&0));
        assert_eq!(q.remove_where(|x| *x == 1), 1);
        assert_eq!(
            std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect::<Vec<_>>(),
            [0, 2]
        );
        assert!(q.is_empty());
    }
}
