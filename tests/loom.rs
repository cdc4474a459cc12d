//! Model checking of the lock, semaphore, event, condition and barrier
//! algorithms with loom, heap-backed (the futex is emulated; see
//! `src/sync/platform.rs`). Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use shmproc::loom_models::{RawBarrier, RawCondition, RawEvent, RawLock, RawSemaphore, Wait};

/// A non-atomic read-modify-write: loses updates unless excluded.
fn racy_increment(counter: &AtomicU32) {
    let v = counter.load(Ordering::Relaxed);
    counter.store(v + 1, Ordering::Relaxed);
}

/// `n` threads each take the lock once and do a racy increment.
fn contend(n: u32) {
    let lock = Arc::new(RawLock::new());
    let counter = Arc::new(AtomicU32::new(0));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (lock, counter) = (lock.clone(), counter.clone());
            thread::spawn(move || {
                lock.lock(Wait::Forever).unwrap();
                racy_increment(&counter);
                lock.unlock();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), n);
    assert!(!lock.is_locked());
}

#[test]
fn lock_gives_mutual_exclusion_and_no_lost_wakeup() {
    loom::model(|| contend(2));
}

#[test]
fn lock_try_lock_fails_while_held() {
    loom::model(|| {
        let lock = Arc::new(RawLock::new());
        lock.lock(Wait::Forever).unwrap();
        let l2 = lock.clone();
        let t = thread::spawn(move || l2.lock(Wait::No).is_err());
        assert!(t.join().unwrap());
        lock.unlock();
    });
}

#[test]
fn semaphore_admits_at_most_its_value() {
    loom::model(|| {
        let sem = Arc::new(RawSemaphore::new(1, u32::MAX));
        let counter = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (sem, counter) = (sem.clone(), counter.clone());
                thread::spawn(move || {
                    assert!(sem.acquire(Wait::Forever));
                    racy_increment(&counter);
                    sem.release(1).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        assert_eq!(sem.value(), 1);
    });
}

#[test]
fn semaphore_release_wakes_blocked_acquirer() {
    loom::model(|| {
        let sem = Arc::new(RawSemaphore::new(0, 1));
        let s2 = sem.clone();
        let t = thread::spawn(move || s2.acquire(Wait::Forever));
        sem.release(1).unwrap();
        assert!(t.join().unwrap());
        assert!(sem.release(2).is_err(), "bound exceeded");
    });
}

#[test]
fn event_set_wakes_waiter() {
    loom::model(|| {
        let ev = Arc::new(RawEvent::new());
        let data = Arc::new(AtomicU32::new(0));
        let (e2, d2) = (ev.clone(), data.clone());
        let t = thread::spawn(move || {
            assert!(e2.wait(Wait::Forever));
            // The setter's write before set() is visible after wait().
            assert_eq!(d2.load(Ordering::Relaxed), 7);
        });
        data.store(7, Ordering::Relaxed);
        ev.set();
        t.join().unwrap();
    });
}

#[test]
fn condition_notify_is_not_lost() {
    loom::model(|| {
        let cond = Arc::new(RawCondition::new());
        let flag = Arc::new(AtomicU32::new(0));
        let (c2, f2) = (cond.clone(), flag.clone());
        let t = thread::spawn(move || {
            c2.lock.lock(Wait::Forever).unwrap();
            while f2.load(Ordering::Relaxed) == 0 {
                let ticket = c2.prepare();
                c2.lock.unlock();
                c2.sleep(ticket, Wait::Forever);
                c2.lock.lock(Wait::Forever).unwrap();
            }
            c2.lock.unlock();
        });
        cond.lock.lock(Wait::Forever).unwrap();
        flag.store(1, Ordering::Relaxed);
        cond.notify(1);
        cond.lock.unlock();
        t.join().unwrap();
    });
}

#[test]
fn barrier_releases_all_parties_with_distinct_indices() {
    loom::model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(Wait::Forever).unwrap());
        let mine = b.wait(Wait::Forever).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 1);
        assert_eq!(b.n_waiting(), 0);
    });
}

#[test]
fn barrier_abort_breaks_waiter() {
    loom::model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(Wait::Forever));
        b.abort();
        // Either the waiter arrived before the abort (woken, broken) or
        // after it (refused at once): both are Broken.
        assert!(t.join().unwrap().is_err());
        assert!(b.is_broken());
    });
}

#[test]
fn lock_with_three_contenders_wakes_every_sleeper() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| contend(3));
}

/// A heap-backed SPSC ring of capacity 2 driven by the crate's index
/// protocol (`ring::free`, `ring::available`, `ring::publish`): loom checks
/// every interleaving for FIFO order, no loss, and no data race on a slot
/// (the slots are loom `UnsafeCell`s).
#[test]
fn spsc_ring_protocol_is_fifo_and_race_free() {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;
    use shmproc::loom_models::ring;

    struct Ring {
        head: AtomicU64,
        tail: AtomicU64,
        slots: [UnsafeCell<u32>; 2],
    }
    // SAFETY: the slots are only touched under the ring protocol being
    // checked; loom reports any unsynchronised access.
    unsafe impl Sync for Ring {}

    const ITEMS: u32 = 3;
    loom::model(|| {
        let r = Arc::new(Ring {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
        });
        let p = r.clone();
        let producer = thread::spawn(move || {
            let (mut tail, mut head_cache) = (0u64, 0u64);
            for v in 0..ITEMS {
                while ring::free(tail, &mut head_cache, &p.head, 2, 1) == 0 {
                    thread::yield_now();
                }
                // SAFETY: the slot is free (protocol under test).
                p.slots[(tail & 1) as usize].with_mut(|s| unsafe { *s = v });
                tail += 1;
                ring::publish(&p.tail, tail);
            }
        });
        let (mut head, mut tail_cache) = (0u64, 0u64);
        for expected in 0..ITEMS {
            while ring::available(head, &mut tail_cache, &r.tail, 2, 1) == 0 {
                thread::yield_now();
            }
            // SAFETY: the slot is published (protocol under test).
            let v = r.slots[(head & 1) as usize].with(|s| unsafe { *s });
            assert_eq!(v, expected);
            head += 1;
            ring::publish(&r.head, head);
        }
        producer.join().unwrap();
    });
}
