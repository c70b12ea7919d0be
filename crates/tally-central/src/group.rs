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

/// What a waiting request is told.
enum Wake<R> {
    /// Still queued.
    Waiting,
    /// The previous leader is done: take the queue (this request first).
    Lead,
    /// The committed outcome of this request; `None` when the leader
    /// running it panicked (nothing is known of its transaction).
    Done(Option<R>),
}

struct Slot<R> {
    wake: Mutex<Wake<R>>,
    cv: Condvar,
}

impl<R> Slot<R> {
    fn new() -> Arc<Self> {
        Arc::new(Slot {
            wake: Mutex::new(Wake::Waiting),
            cv: Condvar::new(),
        })
    }
    fn set(&self, w: Wake<R>) {
        *lock(&self.wake) = w;
        self.cv.notify_one();
    }
}

struct Queue<J, R> {
    /// A leader is running a group (or has been chosen).
    leader: bool,
    pending: VecDeque<(J, Arc<Slot<R>>)>,
}

/// Requests of type `J` answered with `R`, committed in groups.
pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Queue<J, R>>,
    /// Most requests in one transaction.
    cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (every
    // change is one assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<J, R> GroupCommit<J, R> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0);
        GroupCommit {
            queue: Mutex::new(Queue {
                leader: false,
                pending: VecDeque::new(),
            }),
            cap,
        }
    }

    /// Runs `job` in a group: `run` gets the group's jobs in arrival order
    /// and returns one result per job, in the same order, after its one
    /// commit. Returns this job's result, or `None` when the leader that
    /// ran it panicked.
    pub(crate) fn submit(&self, job: J, run: impl Fn(Vec<J>) -> Vec<R>) -> Option<R> {
        let slot = Slot::new();
        {
            let mut q = lock(&self.queue);
            q.pending.push_back((job, slot.clone()));
            if q.leader {
                drop(q);
                let mut w = lock(&slot.wake);
                loop {
                    match std::mem::replace(&mut *w, Wake::Waiting) {
                        Wake::Waiting => {
                            w = slot.cv.wait(w).unwrap_or_else(PoisonError::into_inner)
                        }
                        Wake::Done(r) => return r,
                        Wake::Lead => break,
                    }
                }
            } else {
                q.leader = true;
            }
        }
        // The leader: this job is first in the queue (a lone request, or
        // the one the previous leader handed the queue to), so the first
        // group holds it.
        let mut handover = Handover {
            group: self,
            taken: Vec::new(),
        };
        let jobs: Vec<J> = {
            let mut q = lock(&self.queue);
            let n = q.pending.len().min(self.cap);
            q.pending
                .drain(..n)
                .map(|(j, s)| {
                    handover.taken.push(s);
                    j
                })
                .collect()
        };
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
/// and did not answer learns that (`Done(None)`), and the queue passes to
/// the first request still waiting, or is left without a leader.
struct Handover<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    taken: Vec<Arc<Slot<R>>>,
}

impl<J, R> Drop for Handover<'_, J, R> {
    fn drop(&mut self) {
        // The first taken slot is the leader's own: it is unwinding.
        for s in self.taken.iter().skip(1) {
            s.set(Wake::Done(None));
        }
        let mut q = lock(&self.group.queue);
        match q.pending.front() {
            Some((_, next)) => next.set(Wake::Lead),
            None => q.leader = false,
        }
    }
}

/// At most `n` holders at once: bounds the CPU-heavy part of requests
/// (opening and verifying uploads) to the cores given to it, so the
/// commit leader is not starved by more verifications than cores.
pub(crate) struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    pub(crate) fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }
    pub(crate) fn take(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
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
    fn permits_bound_concurrent_holders() {
        let p = Permits::new(2);
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _permit = p.take();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(*lock(&p.free), 2, "every permit came back");
    }
}
