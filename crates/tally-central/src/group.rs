//! Group commit: concurrent requests share one transaction.
//!
//! A request's durable commit (SQLite's `fsync`, PostgreSQL's WAL flush
//! and round trips) costs more than settling its few packages. Requests
//! that arrive while a commit is running wait in a queue; when it ends,
//! one of them — the leader — takes every waiting request (up to a cap)
//! and runs them in one transaction, each in its own savepoint so a
//! refused request rolls back only itself, then commits once for all.
//! The others are woken with their own answers. Nothing is acknowledged
//! before the commit that made it durable: a follower returns only what
//! the leader's committed transaction produced.
//!
//! This is the leader/follower scheme of database group commit (and of
//! TigerBeetle's batching of client requests): no thread of its own, no
//! timer; a lone request commits at once, and the batch grows exactly
//! with the load.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Queued jobs with the slots their requests wait on.
type Jobs<J, R> = Vec<(J, Arc<Slot<J, R>>)>;

/// What a waiting request is told.
enum Wake<J, R> {
    /// Still queued.
    Waiting,
    /// A leader is done: run this group (this request's job first).
    Lead(Jobs<J, R>),
    /// The committed outcome of this request; `None` when the leader
    /// running it panicked (nothing is known of its transaction).
    Done(Option<R>),
}

struct Slot<J, R> {
    wake: Mutex<Wake<J, R>>,
    cv: Condvar,
}

impl<J, R> Slot<J, R> {
    fn new() -> Arc<Self> {
        Arc::new(Slot {
            wake: Mutex::new(Wake::Waiting),
            cv: Condvar::new(),
        })
    }
    fn set(&self, w: Wake<J, R>) {
        *lock(&self.wake) = w;
        self.cv.notify_one();
    }
}

struct Queue<J, R> {
    /// Leaders running a group (or chosen to). Requests queue only while
    /// every leader is busy: `pending` is empty unless `leaders` is at
    /// its most.
    leaders: usize,
    pending: VecDeque<(J, Arc<Slot<J, R>>)>,
}

/// Requests of type `J` answered with `R`, run in groups by at most
/// `leaders_max` leaders at once (one for a commit: the groups'
/// transactions are one after the other; the cores given to it for
/// CPU-bound work such as verification).
pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Queue<J, R>>,
    /// Most requests in one group.
    cap: usize,
    leaders_max: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (every
    // change is one assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<J, R> GroupCommit<J, R> {
    /// One leader at a time.
    pub(crate) fn new(cap: usize) -> Self {
        Self::with_leaders(cap, 1)
    }

    /// At most `leaders_max` groups running at once.
    pub(crate) fn with_leaders(cap: usize, leaders_max: usize) -> Self {
        assert!(cap > 0);
        GroupCommit {
            queue: Mutex::new(Queue {
                leaders: 0,
                pending: VecDeque::new(),
            }),
            cap,
            leaders_max: leaders_max.max(1),
        }
    }

    /// Runs `job` in a group: `run` gets the group's jobs in arrival order
    /// and returns one result per job, in the same order (after its one
    /// commit, for a commit). Returns this job's result, or `None` when
    /// the leader that ran it panicked.
    pub(crate) fn submit(&self, job: J, run: impl Fn(Vec<J>) -> Vec<R>) -> Option<R> {
        let slot = Slot::new();
        let group = {
            let mut q = lock(&self.queue);
            if q.leaders < self.leaders_max {
                // A lone request (nothing waits while a leader is free).
                debug_assert!(q.pending.is_empty());
                q.leaders += 1;
                vec![(job, slot.clone())]
            } else {
                q.pending.push_back((job, slot.clone()));
                drop(q);
                let mut w = lock(&slot.wake);
                loop {
                    match std::mem::replace(&mut *w, Wake::Waiting) {
                        Wake::Waiting => {
                            w = slot.cv.wait(w).unwrap_or_else(PoisonError::into_inner)
                        }
                        Wake::Done(r) => return r,
                        Wake::Lead(group) => break group,
                    }
                }
            }
        };
        // The leader: this job is first in its group (a lone request, or
        // the one a previous leader handed the next group to).
        let mut handover = Handover {
            group: self,
            taken: Vec::with_capacity(group.len()),
        };
        let jobs: Vec<J> = group
            .into_iter()
            .map(|(j, s)| {
                handover.taken.push(s);
                j
            })
            .collect();
        debug_assert!(Arc::ptr_eq(&handover.taken[0], &slot));
        let mut results = run(jobs);
        assert_eq!(
            results.len(),
            handover.taken.len(),
            "one result per grouped request"
        );
        let mine = results.remove(0);
        let taken = std::mem::take(&mut handover.taken);
        for (s, r) in taken.iter().skip(1).zip(results) {
            s.set(Wake::Done(Some(r)));
        }
        drop(handover);
        Some(mine)
    }
}

/// Ends a leader's turn, also when `run` panics: every request it took
/// and did not answer learns that (`Done(None)`), and the next group (at
/// most `cap` of the requests waiting, taken under the queue's lock so no
/// request is in two groups) passes to its first request; with none
/// waiting, the leader's place is freed.
struct Handover<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    taken: Vec<Arc<Slot<J, R>>>,
}

impl<J, R> Drop for Handover<'_, J, R> {
    fn drop(&mut self) {
        // The first taken slot is the leader's own: it is unwinding.
        for s in self.taken.iter().skip(1) {
            s.set(Wake::Done(None));
        }
        let mut q = lock(&self.group.queue);
        let n = q.pending.len().min(self.group.cap);
        if n == 0 {
            q.leaders -= 1;
            return;
        }
        let next: Jobs<J, R> = q.pending.drain(..n).collect();
        drop(q);
        let first = next[0].1.clone();
        first.set(Wake::Lead(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lone_request_runs_at_once_in_a_group_of_one() {
        let g = GroupCommit::<u32, u32>::new(8);
        let sizes = Mutex::new(Vec::new());
        let r = g.submit(7, |jobs| {
            lock(&sizes).push(jobs.len());
            jobs.iter().map(|j| j * 2).collect()
        });
        assert_eq!(r, Some(14));
        assert_eq!(*lock(&sizes), vec![1]);
    }

    #[test]
    fn concurrent_requests_share_groups_and_each_gets_its_own_answer() {
        let g = GroupCommit::<u32, u32>::new(4);
        let groups = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let (g, groups, largest) = (&g, &groups, &largest);
                s.spawn(move || {
                    for i in 0..200u32 {
                        let job = t * 1000 + i;
                        let r = g.submit(job, |jobs| {
                            assert!(jobs.len() <= 4, "the cap holds");
                            groups.fetch_add(1, Ordering::Relaxed);
                            largest.fetch_max(jobs.len(), Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(50));
                            jobs.iter().map(|j| j + 1).collect()
                        });
                        assert_eq!(r, Some(job + 1), "each request its own answer");
                    }
                });
            }
        });
        let n = groups.load(Ordering::Relaxed);
        assert!(n < 1600, "requests were grouped ({n} groups for 1600)");
        assert!(largest.load(Ordering::Relaxed) > 1);
    }

    #[test]
    fn a_panicking_leader_fails_its_group_and_hands_the_queue_on() {
        let g = GroupCommit::<u32, u32>::new(8);
        let answered = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (g, answered, failed) = (&g, &answered, &failed);
                s.spawn(move || {
                    for i in 0..50u32 {
                        let job = t * 100 + i;
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            g.submit(job, |jobs| {
                                if jobs.contains(&13) {
                                    panic!("the store went away");
                                }
                                jobs.clone()
                            })
                        }));
                        match r {
                            Ok(Some(v)) => {
                                assert_eq!(v, job);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(None) | Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        // Every request returned (no one waits forever) and only the
        // group holding job 13 failed.
        let (a, f) = (
            answered.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        assert_eq!(a + f, 200);
        assert!((1..=8).contains(&f), "{f} failed");
        // The queue is usable afterwards.
        assert_eq!(g.submit(1, |j| j), Some(1));
    }

    #[test]
    fn at_most_leaders_max_groups_run_at_once_and_each_request_is_answered() {
        let g = GroupCommit::<u32, u32>::with_leaders(4, 2);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..6u32 {
                let (g, running, most, largest) = (&g, &running, &most, &largest);
                s.spawn(move || {
                    for i in 0..100u32 {
                        let job = t * 1000 + i;
                        let r = g.submit(job, |jobs| {
                            assert!(jobs.len() <= 4, "the cap holds");
                            let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            largest.fetch_max(jobs.len(), Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(30));
                            running.fetch_sub(1, Ordering::SeqCst);
                            jobs.iter().map(|j| j + 1).collect()
                        });
                        assert_eq!(r, Some(job + 1), "each request its own answer");
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2, "two leaders at most");
        assert!(largest.load(Ordering::SeqCst) > 1, "requests were grouped");
        assert_eq!(lock(&g.queue).leaders, 0, "every leader's place was freed");
        assert!(lock(&g.queue).pending.is_empty());
    }
}
