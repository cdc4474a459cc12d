//! Model checking of the lock, semaphore, event, condition and barrier
//! algorithms with loom, heap-backed (the futex is emulated; see
//! `src/wait/futex.rs`). Run with:
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
                if !c2.take_notify(ticket) {
                    c2.leave();
                }
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

/// Two waiters, each ending its wait only with a notification it took
/// (a wake-up that finds none left re-arms and sleeps again), and two
/// `notify(1)` issued once both wait: both waits end (no notification is
/// lost between the take and the re-arm), each with one notification.
#[test]
fn condition_two_notify_one_end_two_waits_and_lose_none() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let cond = Arc::new(RawCondition::new());
        let waiting = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (c, w) = (cond.clone(), waiting.clone());
                thread::spawn(move || {
                    c.lock.lock(Wait::Forever).unwrap();
                    let mut ticket = c.prepare();
                    w.fetch_add(1, Ordering::Relaxed);
                    loop {
                        c.lock.unlock();
                        c.sleep(ticket, Wait::Forever);
                        c.lock.lock(Wait::Forever).unwrap();
                        if c.take_notify(ticket) {
                            break;
                        }
                        ticket = c.rearm();
                    }
                    c.lock.unlock();
                })
            })
            .collect();
        loop {
            cond.lock.lock(Wait::Forever).unwrap();
            if waiting.load(Ordering::Relaxed) == 2 {
                break;
            }
            cond.lock.unlock();
            thread::yield_now();
        }
        cond.notify(1);
        cond.lock.unlock();
        cond.lock.lock(Wait::Forever).unwrap();
        cond.notify(1);
        cond.lock.unlock();
        for h in waiters {
            h.join().unwrap();
        }
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

/// Heap-backed slots for the MPMC protocol (`vyukov`): sequence words and
/// loom `UnsafeCell` values, so loom reports any unsynchronised access.
struct HeapSlots {
    seq: [loom::sync::atomic::AtomicU64; 2],
    val: [loom::cell::UnsafeCell<u64>; 2],
}

impl HeapSlots {
    fn new() -> Self {
        use loom::sync::atomic::AtomicU64;
        HeapSlots { seq: [AtomicU64::new(0), AtomicU64::new(1)], val: [Default::default(), Default::default()] }
    }
}

impl shmproc::loom_models::vyukov::Slots<u64> for HeapSlots {
    fn seq(&self, pos: u64) -> &loom::sync::atomic::AtomicU64 {
        &self.seq[(pos & 1) as usize]
    }
    unsafe fn write(&self, pos: u64, v: u64) {
        // SAFETY: the caller owns the slot (protocol under test).
        self.val[(pos & 1) as usize].with_mut(|p| unsafe { *p = v });
    }
    unsafe fn read(&self, pos: u64) -> u64 {
        // SAFETY: as in `write`.
        self.val[(pos & 1) as usize].with(|p| unsafe { *p })
    }
}

// SAFETY: the values are only touched under the protocol being checked;
// loom reports any unsynchronised access.
unsafe impl Sync for HeapSlots {}

/// A 2-slot MPMC ring: indices and slots (and, for the unbounded chain's
/// count, its skip count and base word, as in `JoinWords`).
struct Mpmc {
    tail: loom::sync::atomic::AtomicU64,
    head: loom::sync::atomic::AtomicU64,
    slots: HeapSlots,
    skipped: loom::sync::atomic::AtomicU64,
    base: loom::sync::atomic::AtomicU64,
}

impl Mpmc {
    fn new() -> Arc<Self> {
        use loom::sync::atomic::AtomicU64;
        Arc::new(Mpmc {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            slots: HeapSlots::new(),
            skipped: AtomicU64::new(0),
            base: AtomicU64::new(0),
        })
    }
    fn ring(&self) -> shmproc::loom_models::vyukov::Ring<'_> {
        shmproc::loom_models::vyukov::Ring { tail: &self.tail, head: &self.head, slots: 2, limit: 2 }
    }
}

/// The model's environment: no records (owners never die by themselves
/// under loom); an unfinished claim is waited for by yielding, and with
/// `repair_dead` set, the one producer claim that nobody will finish (the
/// model's "dead" thread, which has been joined) is repaired: what the
/// record scan decides in the real queue.
struct LoomEnv {
    repair_dead: Option<(Arc<Mpmc>, u64)>,
}

impl shmproc::loom_models::vyukov::Env for LoomEnv {
    fn announce(&mut self, _: u64, _: u64, _: bool) {}
    fn withdraw(&mut self) {}
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool {
        if let (Some((q, dead)), false) = (&self.repair_dead, by_pop)
            && pos == *dead
        {
            shmproc::loom_models::vyukov::repair_push(&q.slots, pos);
        }
        thread::yield_now();
        true
    }
}

/// Two producers push one item each, one consumer takes both with `pop`
/// (its item, or `None` if the ring refused): every interleaving delivers
/// each item once, with no data race on a slot.
fn two_producers_one_consumer(mut pop: impl FnMut(&Mpmc, &mut LoomEnv) -> Option<u64>) {
    let q = Mpmc::new();
    let producers: Vec<_> = (1..=2u64)
        .map(|v| {
            let q = q.clone();
            thread::spawn(move || {
                let mut env = LoomEnv { repair_dead: None };
                while q.ring().push(&q.slots, &mut env, v).is_err() {
                    thread::yield_now();
                }
            })
        })
        .collect();
    let mut env = LoomEnv { repair_dead: None };
    let mut got = Vec::new();
    while got.len() < 2 {
        match pop(&q, &mut env) {
            Some(v) => got.push(v),
            None => thread::yield_now(),
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    got.sort();
    assert_eq!(got, [1, 2]);
    assert_eq!(q.ring().len(), 0);
}

#[test]
fn mpmc_ring_two_producers_one_consumer_deliver_each_item_once() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| two_producers_one_consumer(|q, env| q.ring().pop(&q.slots, env).ok().map(|(v, _)| v)));
}

/// `pop_with`'s reader for the model: copies the slot's value into a
/// destination the consumer reuses (what a queue's `get_into` does), under
/// loom's access checks.
struct IntoReader<'a>(&'a mut u64);

impl shmproc::loom_models::vyukov::SlotRead<HeapSlots> for IntoReader<'_> {
    type Via = u64;
    type Out = ();
    unsafe fn read(&mut self, s: &HeapSlots, pos: u64) {
        // SAFETY: the caller owns the slot (protocol under test).
        *self.0 = unsafe { shmproc::loom_models::vyukov::Slots::read(s, pos) };
    }
}

/// The same, the consumer reading each item into one reused destination
/// through `pop_with` (the path of `Queue::get_into`): each item once, no
/// race on the slots or the destination.
#[test]
fn mpmc_ring_pop_with_a_reader_delivers_each_item_once_into_the_destination() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let mut dst = 0u64;
        two_producers_one_consumer(|q, env| {
            q.ring().pop_with(&q.slots, env, &mut IntoReader(&mut dst)).ok()?;
            Some(dst)
        })
    });
}

/// A producer thread claims position 0 of `q` as `push` does and "dies"
/// there (the thread ends, joined): the claim is never published.
fn claim_position_0_and_die(q: Arc<Mpmc>) {
    thread::spawn(move || {
        q.tail.compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed).unwrap();
    })
    .join()
    .unwrap();
}

/// A producer claims position 0 and "dies" before publishing (its thread
/// ends there); another pushes 7 at position 1. The consumer, finding
/// position 0 unfinished, repairs it (skip) and gets 7: no hang, no race,
/// and the repair never overwrites a published item.
#[test]
fn mpmc_ring_repairs_a_dead_producers_claim() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let q = Mpmc::new();
        claim_position_0_and_die(q.clone());
        let live = {
            let q = q.clone();
            thread::spawn(move || {
                let mut env = LoomEnv { repair_dead: None };
                while q.ring().push(&q.slots, &mut env, 7).is_err() {
                    thread::yield_now();
                }
            })
        };
        let mut env = LoomEnv { repair_dead: Some((q.clone(), 0)) };
        let v = loop {
            match q.ring().pop(&q.slots, &mut env) {
                Ok((v, _)) => break v,
                Err(_) => thread::yield_now(),
            }
        };
        live.join().unwrap();
        assert_eq!(v, 7);
    });
}

/// The environment of a call that does not wait (as `qsize`'s settling
/// with a `try_` flight): the dead producer's claim is repaired, any other
/// unfinished claim is given up on at once (the model stays bounded).
struct SettleEnv {
    q: Arc<Mpmc>,
    dead: u64,
}

impl shmproc::loom_models::vyukov::Env for SettleEnv {
    fn announce(&mut self, _: u64, _: u64, _: bool) {}
    fn withdraw(&mut self) {}
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool {
        !by_pop && pos == self.dead && shmproc::loom_models::vyukov::repair_push(&self.q.slots, pos)
    }
}

/// `settle_front` (what `qsize` and `empty` run first) racing a consumer
/// and a live producer: a producer claimed position 0 and "died"; another
/// pushes 7 at position 1; one thread settles the front (repairing the
/// dead claim, discarding the skipped slot) while the consumer pops. Every
/// interleaving: the consumer gets 7 exactly once (settling never takes a
/// published item or skips a live one), no slot is raced, and afterwards
/// the front settles to "empty" with both indices equal.
#[test]
fn mpmc_ring_settle_front_discards_a_dead_claim_and_never_an_item() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let q = Mpmc::new();
        claim_position_0_and_die(q.clone());
        let live = {
            let q = q.clone();
            thread::spawn(move || {
                let mut env = LoomEnv { repair_dead: None };
                while q.ring().push(&q.slots, &mut env, 7).is_err() {
                    thread::yield_now();
                }
            })
        };
        let settler = {
            let q = q.clone();
            thread::spawn(move || {
                let mut env = SettleEnv { q: q.clone(), dead: 0 };
                q.ring().settle_front(&q.slots, &mut env)
            })
        };
        let mut env = LoomEnv { repair_dead: Some((q.clone(), 0)) };
        let v = loop {
            match q.ring().pop(&q.slots, &mut env) {
                Ok((v, _)) => break v,
                Err(_) => thread::yield_now(),
            }
        };
        live.join().unwrap();
        settler.join().unwrap();
        assert_eq!(v, 7);
        let mut env = SettleEnv { q: q.clone(), dead: 0 };
        assert!(!q.ring().settle_front(&q.slots, &mut env), "an item left after the only one was taken");
        assert_eq!(q.ring().len(), 0);
    });
}

/// A batch producer pushes 1, 2, 3 through a 2-slot ring (so the batch
/// laps the ring: its third item needs the slot of its first) while a batch
/// consumer pops with `pop_batch`: every interleaving delivers 1, 2, 3 once
/// and in order, no slot is raced, no position is abandoned (the ring is
/// empty and its slots free for the next lap afterwards). (The old
/// range-claiming batches also pass this one-producer model; their loss
/// needs two producers, which `tests/mpmc.rs` shows across processes. A
/// two-producer batch model exceeded loom's branch limit: spinning
/// catch-up loops over stale Relaxed loads.)
#[test]
fn mpmc_ring_batch_push_and_batch_pop_deliver_each_item_once_in_order() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let q = Mpmc::new();
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                let items = [1u64, 2, 3];
                let mut env = LoomEnv { repair_dead: None };
                let mut done = 0;
                while done < items.len() {
                    match q.ring().push_batch(&q.slots, &mut env, &items[done..]) {
                        Ok(n) => done += n,
                        Err(_) => thread::yield_now(),
                    }
                }
            })
        };
        let mut env = LoomEnv { repair_dead: None };
        let mut got = Vec::new();
        while got.len() < 3 {
            let mut out = [0u64; 2];
            match q.ring().pop_batch(&q.slots, &mut env, &mut out) {
                Ok(n) => got.extend_from_slice(&out[..n]),
                Err(_) => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(q.ring().len(), 0);
        // Nothing abandoned: a single push and pop still work.
        assert!(q.ring().push(&q.slots, &mut env, 9).is_ok());
        assert_eq!(q.ring().pop(&q.slots, &mut env).map(|(v, _)| v), Ok(9));
    });
}

/// The unbounded queue's rings in the model: heap MPMC rings holding one
/// item each (so every second put grows the chain), made at most `MAX_RINGS`
/// times (then "the limit": not now), sealed with the ring's CLOSED bit.
struct HeapChain {
    newest: loom::sync::atomic::AtomicU64,
    oldest: loom::sync::atomic::AtomicU64,
    /// Ring `k` by index; `None`: not made yet, or retired (its name gone).
    rings: loom::sync::Mutex<Vec<Option<Arc<Mpmc>>>>,
    retired: AtomicU32,
    /// JoinableQueue: skips counted after their ring was folded, and
    /// `task_done` calls (the chain's `late` and `dones`).
    late: loom::sync::atomic::AtomicU64,
    dones: loom::sync::atomic::AtomicU64,
}

const MAX_RINGS: usize = 3;

impl HeapChain {
    fn new() -> Arc<Self> {
        use loom::sync::atomic::AtomicU64;
        let rings = (0..MAX_RINGS).map(|k| (k == 0).then(Mpmc::new)).collect();
        Arc::new(HeapChain {
            newest: AtomicU64::new(0),
            oldest: AtomicU64::new(0),
            rings: loom::sync::Mutex::new(rings),
            retired: AtomicU32::new(0),
            late: AtomicU64::new(0),
            dones: AtomicU64::new(0),
        })
    }
    fn links(&self) -> shmproc::loom_models::links::Links<'_> {
        shmproc::loom_models::links::Links { newest: &self.newest, oldest: &self.oldest }
    }
    fn ring(&self, k: u64) -> Option<Arc<Mpmc>> {
        self.rings.lock().unwrap().get(k as usize).cloned().flatten()
    }
    fn limited(q: &Mpmc) -> shmproc::loom_models::vyukov::Ring<'_> {
        shmproc::loom_models::vyukov::Ring { limit: 1, ..q.ring() }
    }

    /// `Chain::put` (try mode): the newest ring, else grow the chain.
    fn put(&self, v: u64) -> Result<(), u64> {
        use shmproc::loom_models::links::CLOSED;
        loop {
            let n = self.newest.load(Ordering::Acquire);
            assert_eq!(n & CLOSED, 0);
            let Some(ring) = self.ring(n) else {
                // Retired meanwhile: `newest` has moved on.
                assert_ne!(self.newest.load(Ordering::Acquire), n, "the newest ring is gone");
                continue;
            };
            let mut env = LoomEnv { repair_dead: None };
            if Self::limited(&ring).push(&ring.slots, &mut env, v).is_ok() {
                return Ok(());
            }
            if !self.links().advance(self, n, &ring, 0).unwrap() {
                return Err(v); // the limit: Full
            }
        }
    }

    /// `Chain::get` (try mode): the oldest ring, following the chain.
    fn get(&self) -> Option<u64> {
        self.get_repairing(None)
    }

    /// `Chain::unfinished`: items landed (from the rings), less late
    /// skips, less `task_done` calls.
    fn unfinished(&self) -> u64 {
        let done = self.dones.load(Ordering::Acquire) + self.late.load(Ordering::Acquire);
        self.links().landed(self, MAX_RINGS as u64).saturating_sub(done)
    }

    /// `get`, repairing the claim `dead` = (ring, position) of a dead
    /// producer when it finds it unfinished, and counting the skip as
    /// `MpmcQueue::repair` and `Chain::get` do (in the ring, or, refused
    /// there because the ring was folded meanwhile, in `late`).
    fn get_repairing(&self, dead: Option<(u64, u64)>) -> Option<u64> {
        use shmproc::loom_models::links::Drained;
        use shmproc::loom_models::vyukov::Refused;
        loop {
            let o = self.oldest.load(Ordering::Acquire);
            let Some(ring) = self.ring(o) else {
                assert_ne!(self.oldest.load(Ordering::Acquire), o, "the oldest ring is gone");
                continue;
            };
            let dead = dead.filter(|&(k, _)| k == o).map(|(_, pos)| pos);
            let mut env = ChainEnv { ring: ring.clone(), dead, late: &self.late };
            match Self::limited(&ring).pop(&ring.slots, &mut env) {
                Ok((v, _)) => return Some(v),
                Err(Refused::Now) => return None,
                Err(Refused::Closed) => match self.links().drained(o) {
                    Drained::Closed => unreachable!("nobody closes the queue here"),
                    Drained::Unlinked => {
                        if !self.links().advance(self, o, &ring, 0).unwrap() {
                            return None;
                        }
                    }
                    Drained::Retire => {
                        self.links().retire(self, o, &ring);
                    }
                },
            }
        }
    }
}

/// The chain model's environment for a pop: as `LoomEnv`, the dead
/// producer's claim of `dead` repaired, its skip counted as
/// `MpmcQueue::repair` counts it (in the ring, or, refused by the folded
/// ring, in the chain's `late` word: the `LateSink` of `Chain::get`).
struct ChainEnv<'a> {
    ring: Arc<Mpmc>,
    dead: Option<u64>,
    late: &'a loom::sync::atomic::AtomicU64,
}

impl shmproc::loom_models::vyukov::Env for ChainEnv<'_> {
    fn announce(&mut self, _: u64, _: u64, _: bool) {}
    fn withdraw(&mut self) {}
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool {
        if !by_pop
            && self.dead == Some(pos)
            && shmproc::loom_models::vyukov::repair_push(&self.ring.slots, pos)
            && !shmproc::loom_models::links::count_skip(&self.ring.skipped)
        {
            self.late.fetch_add(1, Ordering::Release);
        }
        thread::yield_now();
        true
    }
}

impl shmproc::loom_models::links::Rings for HeapChain {
    type Ring = Arc<Mpmc>;
    type Error = ();
    fn open(&self, k: u64) -> Option<Arc<Mpmc>> {
        self.ring(k)
    }
    fn visit(&self, from: u64, to: u64, mut f: impl FnMut(&Arc<Mpmc>)) -> u64 {
        (from..=to).map_while(|k| self.ring(k)).map(|r| f(&r)).count() as u64
    }
    fn tally<'r>(&self, ring: &'r Arc<Mpmc>) -> shmproc::loom_models::links::Tally<'r> {
        shmproc::loom_models::links::Tally { claims: &ring.tail, skipped: &ring.skipped, base: &ring.base }
    }
    fn make(&self, k: u64, _: u64) -> Result<Option<Arc<Mpmc>>, ()> {
        let mut rings = self.rings.lock().unwrap();
        // Made once (the real chain links a complete ring under its name,
        // never replacing one); a retired index is never made again.
        if k < self.oldest.load(Ordering::Acquire) {
            return Ok(None);
        }
        Ok(rings.get_mut(k as usize).map(|r| r.get_or_insert_with(Mpmc::new).clone()))
    }
    fn seal(&self, ring: &Arc<Mpmc>) {
        ring.tail.fetch_or(shmproc::loom_models::vyukov::CLOSED, Ordering::SeqCst);
    }
    fn linked(&self, _: u64) {}
    fn retired(&self, k: u64, ring: &Arc<Mpmc>) {
        assert_eq!(HeapChain::limited(ring).len(), 0, "a retired ring holds an item");
        self.rings.lock().unwrap()[k as usize] = None;
        self.retired.fetch_add(1, Ordering::Relaxed);
    }
}

/// The unbounded chain's successor protocol (`src/queue/links.rs`: the
/// successor made before the ring is sealed, `newest` moved by CAS, the
/// drained oldest ring retired by CAS, a consumer that finds a sealed
/// ring not linked on yet linking it): a producer puts 1, 2, 3 through
/// rings of one item each while a consumer follows. Every item arrives
/// once and in order, no ring is retired holding an item, no ring is
/// used after it was retired, and the chain never passes its ring limit.
#[test]
fn unbounded_chain_producer_and_consumer_follow_the_successor_rings_in_order() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let c = HeapChain::new();
        let producer = {
            let c = c.clone();
            thread::spawn(move || {
                for v in 1..=3 {
                    while c.put(v).is_err() {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.get() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(c.get(), None);
        assert!(c.retired.load(Ordering::Relaxed) <= 2);
    });
}

/// Two consumers race to retire the same drained ring and to link a
/// sealed ring's successor (as a producer killed between sealing and
/// linking leaves it): exactly one retirement per ring, both items
/// delivered once.
#[test]
fn unbounded_chain_consumers_race_to_link_and_retire() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let c = HeapChain::new();
        c.put(1).unwrap();
        c.put(2).unwrap(); // ring 0: 1, ring 1: 2
        // Ring 1 sealed with no successor linked (a producer died there).
        let r1 = c.ring(1).unwrap();
        shmproc::loom_models::links::Rings::seal(&*c, &r1);
        let other = {
            let c = c.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(v) = c.get() {
                    got.push(v);
                }
                got
            })
        };
        let mut mine = Vec::new();
        while let Some(v) = c.get() {
            mine.push(v);
        }
        mine.extend(other.join().unwrap());
        mine.sort();
        assert_eq!(mine, [1, 2]);
        // Both drained rings retired, once each; ring 2 linked and open.
        assert_eq!(c.retired.load(Ordering::Relaxed), 2);
        assert_eq!(c.newest.load(Ordering::Relaxed), 2);
        c.put(3).unwrap();
        assert_eq!(c.get(), Some(3));
    });
}

/// The unbounded JoinableQueue's count (`links::Tally`): a producer
/// claimed ring 0's only slot and died; a put of 1 then grows the chain
/// to ring 1. Two consumers race: one repairs the dead claim (skip, then
/// its count) while the other may drain ring 0 meanwhile, retire it and
/// fold its count into ring 1's base; each that gets an item finds it
/// counted (a `task_done` for it would be accepted) and marks it done.
/// In every interleaving the dead claim is uncounted exactly once (in
/// ring 0's skip count, or in the chain's late count when the fold came
/// first): the count ends at 0, the landed total at 1. (The chain counted
/// puts beside the rings before, and a producer killed mid put left the
/// count one too high for good: `tests/cover5_crash.rs`.)
#[test]
fn unbounded_chain_counts_a_dead_producers_claim_once_across_retirement() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let c = HeapChain::new();
        claim_position_0_and_die(c.ring(0).unwrap());
        c.put(1).unwrap(); // ring 0 full (the dead claim): into ring 1
        assert_eq!(c.unfinished(), 2, "the dead claim counts until repaired");
        let consumer = |c: Arc<HeapChain>| {
            move || {
                for _ in 0..4 {
                    if let Some(v) = c.get_repairing(Some((0, 0))) {
                        assert_eq!(v, 1);
                        assert!(c.unfinished() >= 1, "an item got is not counted");
                        c.dones.fetch_add(1, Ordering::AcqRel);
                        return true;
                    }
                    thread::yield_now();
                }
                false
            }
        };
        let other = thread::spawn(consumer(c.clone()));
        let mine = consumer(c.clone())();
        let theirs = other.join().unwrap();
        if !mine && !theirs {
            // Both gave up (bounded tries): finish the drain here.
            while c.get_repairing(Some((0, 0))).is_none() {
                thread::yield_now();
            }
            c.dones.fetch_add(1, Ordering::AcqRel);
        }
        assert!(!(mine && theirs), "item 1 delivered twice");
        assert_eq!(
            c.unfinished(),
            0,
            "late {}, dones {}",
            c.late.load(Ordering::Relaxed),
            c.dones.load(Ordering::Relaxed)
        );
        assert_eq!(c.links().landed(&*c, MAX_RINGS as u64), 1 + c.late.load(Ordering::Relaxed));
    });
}

/// Review 6: the count read while the rings it sums are retired. Items
/// 1, 2, 3 in rings 0, 1, 2; item 1 got and done. A reader reads the
/// count while the consumer gets 2 (retiring ring 0), marks it done and
/// gets 3 (retiring ring 1), and holds it: at every instant one item is
/// unfinished (2 until its `task_done`, then 3). A reader that loaded
/// `oldest` = 0, summed ring 0, then found ring 1 gone (retired meanwhile)
/// and returned the sum so far (rings 0 only: 1, less the 1 done it read
/// first) said 0 before the fix: `join` returned, and a `task_done` for
/// item 3 would have been refused.
#[test]
fn unbounded_chain_count_read_across_two_retirements_never_misses_a_ring() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let c = HeapChain::new();
        for v in 1..=3 {
            c.put(v).unwrap();
        }
        assert_eq!(c.get(), Some(1));
        c.dones.fetch_add(1, Ordering::AcqRel);
        let reader = {
            let c = c.clone();
            thread::spawn(move || c.unfinished())
        };
        assert_eq!(c.get(), Some(2));
        c.dones.fetch_add(1, Ordering::AcqRel);
        assert_eq!(c.get(), Some(3));
        let seen = reader.join().unwrap();
        assert!(seen >= 1, "the count read as {seen} with an item unfinished throughout");
        assert_eq!(c.unfinished(), 1);
    });
}

/// The holder table (`links::attach` / `detach` / `held`): two holders
/// leave concurrently (one in the table, whose one entry is taken, the
/// other counted in the overflow word): at least one of them finds no
/// holder left and removes the rings (nothing is leaked). With
/// Acquire/Release detaches and loads, both could read the other's word
/// from before its detach (store buffering) and the rings leaked: this
/// model failed until they became SeqCst.
#[test]
fn unbounded_chain_the_last_holder_to_leave_removes_the_rings() {
    use loom::sync::atomic::AtomicU64;
    use shmproc::loom_models::links::{attach, detach, held};
    loom::model(|| {
        let table = Arc::new(([AtomicU64::new(0)], AtomicU32::new(0), AtomicU32::new(0)));
        let entries: Vec<_> = (1..=2u64).map(|me| (me, attach(&table.0, &table.1, me, |_| false))).collect();
        assert_eq!(entries.iter().map(|(_, e)| e.is_some()).collect::<Vec<_>>(), [true, false]);
        let handles: Vec<_> = entries
            .into_iter()
            .map(|(me, entry)| {
                let t = table.clone();
                thread::spawn(move || {
                    detach(&t.0, &t.1, entry, me);
                    if !held(&t.0, &t.1, |_| false) {
                        t.2.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(table.2.load(Ordering::Relaxed) >= 1, "the rings were leaked");
        assert!(!held(&table.0, &table.1, |_| false));
    });
}
