//! The lock-free MPMC queue across processes: participants that die in the
//! middle of an operation, between claiming a slot and finishing it (made
//! exact with the hidden `__claim_and_stop` testing aid) and at random
//! instants (kill -9 mid-stream); more threads than the record table
//! holds; the CPU a blocked caller uses.

mod common;

use std::time::{Duration, Instant};

use shmproc::queue::MpmcQueue;
use shmproc::{Event, JoinableQueue, Process};
use shmproc::{GetTimeoutError, PutTimeoutError, TryGetError, TryPutError};

shmproc::entry! {
    /// Claims one position (a pop if `pop`) and never finishes it; then
    /// sleeps until killed.
    fn claim_and_hang(args: (MpmcQueue<u64>, bool, Event)) -> Result<(), String> {
        let (q, pop, claimed) = args;
        if !q.__claim_and_stop(pop) {
            return Err("nothing to claim".into());
        }
        claimed.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Starts a daemon child that claims a position of `q` and hangs.
fn hanging_claimant(q: &MpmcQueue<u64>, pop: bool) -> Process {
    let claimed = Event::new().unwrap();
    let mut p = Process::new(claim_and_hang, (q.clone(), pop, claimed.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(claimed.wait_timeout(Duration::from_secs(30)), "child did not claim");
    p
}

#[test]
fn a_producer_dead_between_claim_and_publish_is_skipped_but_never_while_alive() {
    let jq = JoinableQueue::<u64>::new(8).unwrap();
    let q = jq.as_mpmc().clone();
    let p = hanging_claimant(&q, false);
    q.push(7).unwrap();
    assert_eq!(q.len(), 2, "the claimed slot counts as an item");

    // Alive: its slot comes first, so nobody may take 7 yet, nor skip it.
    assert_eq!(q.pop_timeout(Duration::from_millis(300)), Err(GetTimeoutError::TimedOut));
    assert_eq!(q.try_pop(), Err(TryGetError::Empty));
    assert_eq!(q.len(), 2);

    p.kill().unwrap();
    let _ = common::join(&p);
    // Repaired while we wait (the bound only keeps a broken build from hanging).
    assert_eq!(q.pop_timeout(Duration::from_secs(30)), Ok(7));
    assert!(q.is_empty());

    // The skipped slot is not an unfinished task; 7 is, until task_done.
    assert_eq!(jq.unfinished_tasks(), 1);
    jq.task_done().unwrap();
    assert!(jq.join_timeout(Duration::from_secs(1)));
    assert!(jq.task_done().is_err());

    // The queue works on as before.
    q.push_slice(&[1, 2, 3]);
    let mut out = [0; 4];
    assert_eq!(q.pop_into(&mut out), 3);
    assert_eq!(out[..3], [1, 2, 3]);
}

#[test]
fn a_consumer_dead_between_claim_and_release_frees_its_slot_but_never_while_alive() {
    let q = MpmcQueue::<u64>::new(2).unwrap();
    q.push(1).unwrap();
    q.push(2).unwrap();
    let p = hanging_claimant(&q, true); // takes 1, never releases its slot
    assert_eq!(q.len(), 1);

    // Alive: it may still be reading 1, so its slot cannot be reused.
    assert_eq!(q.try_push(3), Err(TryPutError::Full(3)));
    assert_eq!(q.push_timeout(3, Duration::from_millis(300)), Err(PutTimeoutError::TimedOut(3)));

    p.kill().unwrap();
    let _ = common::join(&p);
    q.push_timeout(3, Duration::from_secs(30)).unwrap();
    // 1 died with the consumer; 2 and 3 are there, in order.
    assert_eq!(q.pop(), Ok(2));
    assert_eq!(q.pop(), Ok(3));
    assert!(q.is_empty());
}

#[test]
fn a_blocking_pop_repairs_a_dead_producer_slot_while_it_waits() {
    let q = MpmcQueue::<u64>::new(4).unwrap();
    let p = hanging_claimant(&q, false);
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.pop_timeout(Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(100));
    q.push(9).unwrap();
    p.kill().unwrap();
    let _ = common::join(&p);
    assert_eq!(getter.join().unwrap(), Ok(9));
}

shmproc::entry! {
    /// Pushes (tag << 32 | i) for i = 0, 1, ... until killed or `n`.
    fn push_tagged(args: (MpmcQueue<u64>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        for i in 0..n {
            q.push((tag << 32) | i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Two producers; one is killed at a random instant. Every item of the
/// survivor arrives exactly once and in order; the victim's items are a
/// prefix 0..k of its stream (its in-flight one is there or not), with no
/// duplicate and no hole; nobody blocks.
#[test]
fn killing_a_producer_mid_stream_loses_nothing_of_the_others() {
    const N: u64 = 100_000;
    for round in 0..6u64 {
        let q = MpmcQueue::<u64>::new(64).unwrap();
        let mut victim = Process::new(push_tagged, (q.clone(), 1u64, u64::MAX)).with_daemon(true);
        let mut survivor = Process::new(push_tagged, (q.clone(), 0u64, N));
        victim.start().unwrap();
        survivor.start().unwrap();
        let mut next = [0u64; 2];
        let kill_after = 1_000 + round * 7_919;
        let mut popped = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while next[0] < N {
            assert!(Instant::now() < deadline, "stuck at {next:?}");
            if popped == kill_after {
                victim.kill().unwrap();
            }
            let v = match q.pop_timeout(Duration::from_millis(100)) {
                Ok(v) => v,
                Err(GetTimeoutError::TimedOut) => continue,
                Err(e) => panic!("{e}"),
            };
            popped += 1;
            let (tag, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
            assert!(tag < 2, "garbage {v:#x}");
            assert_eq!(i, next[tag], "producer {tag}: hole or duplicate");
            next[tag] += 1;
        }
        common::join(&survivor).unwrap();
        let _ = common::join(&victim);
        // What the victim put before it died drains in order too.
        while let Ok(v) = q.try_pop() {
            assert_eq!(v, (1 << 32) | next[1], "victim: hole or duplicate");
            next[1] += 1;
        }
        assert!(q.is_empty());
    }
}

/// More threads than the record table has places (128) use one queue at
/// once: the extra ones share the overflow record under its lock, and every
/// item arrives exactly once.
#[test]
fn more_threads_than_records_all_get_through() {
    const THREADS: u64 = 160;
    const EACH: u64 = 200;
    let q = MpmcQueue::<u64>::new(256).unwrap();
    let all_in = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize + 1));
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (q, all_in) = (q.clone(), all_in.clone());
            std::thread::spawn(move || {
                q.push((t << 32) | u64::MAX as u32 as u64).unwrap(); // every thread holds a record now
                all_in.wait();
                for i in 0..EACH {
                    q.push((t << 32) | i).unwrap();
                }
            })
        })
        .collect();
    let mut seen = vec![0u64; THREADS as usize];
    let mut got = 0;
    let mut popped_markers = 0;
    // Drain the markers so every thread gets past its first push.
    while popped_markers < THREADS {
        let v = q.pop_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(v as u32, u32::MAX);
        popped_markers += 1;
    }
    all_in.wait();
    while got < THREADS * EACH {
        let v = q.pop_timeout(Duration::from_secs(30)).unwrap();
        let (t, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
        assert_eq!(i, seen[t], "thread {t}: out of order or duplicated");
        seen[t] += 1;
        got += 1;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(q.is_empty());
}

// ---- Batches (push_slice / pop_into): issue 9, items 1 and 2 ----

/// Sentinel a consumer stops at (never a producer's item).
const STOP: u64 = u64::MAX;

/// A 64-bit mix, so that the checksum of a multiset is not fooled by a
/// lost item plus a duplicated one that happen to sum alike.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    (x ^ (x >> 27)).wrapping_mul(0x81da_def4_bc2d_d44d)
}

/// Runs `f(0)` and `f(1)` on two threads of this process (two threads of
/// one process interleave far more finely than two processes under load);
/// returns both results.
fn on_two_threads<R: Send>(f: impl Fn(u64) -> Result<R, String> + Sync) -> Result<[R; 2], String> {
    std::thread::scope(|s| {
        let h = s.spawn(|| f(1));
        let a = f(0);
        let b = h.join().map_err(|_| "thread panicked".to_string())?;
        Ok([a?, b?])
    })
}

shmproc::entry! {
    /// Pushes (tag << 32 | i) for i in 0..n with push_slice from two
    /// threads (thread t: the i with i % 2 == t), in batches of 1..=37
    /// items, pushing the rest of a batch again when only part fit.
    fn push_batches(args: (MpmcQueue<u64>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        let deadline = Instant::now() + Duration::from_secs(60);
        on_two_threads(|t| {
            let mut mine = (t..n).step_by(2).map(|i| (tag << 32) | i);
            let mut size = 1 + t as usize;
            let mut batch = Vec::new();
            loop {
                batch.clear();
                batch.extend(mine.by_ref().take(size));
                if batch.is_empty() {
                    return Ok(());
                }
                let mut done = 0;
                while done < batch.len() {
                    if Instant::now() > deadline {
                        return Err(format!("push_slice stuck at {:#x}", batch[done]));
                    }
                    let got = q.push_slice(&batch[done..]);
                    if got == 0 {
                        std::thread::yield_now();
                    }
                    done += got;
                }
                size = size % 37 + 1;
            }
        })?;
        Ok(())
    }
}

shmproc::entry! {
    /// Pops with pop_into (1..=29 at a time) from two threads, each until
    /// it meets a STOP; stores the total count, sum and sum of `mix` at
    /// `out[3 * slot ..]`.
    fn pop_batches(args: (MpmcQueue<u64>, shmproc::Array<u64>, usize)) -> Result<(), String> {
        let (q, out, slot) = args;
        let deadline = Instant::now() + Duration::from_secs(60);
        let sums = on_two_threads(|t| {
            let (mut count, mut sum, mut mixed) = (0u64, 0u64, 0u64);
            let mut size = 1 + t as usize;
            let mut buf = [0u64; 29];
            loop {
                if Instant::now() > deadline {
                    return Err(format!("pop_into stuck after {count} items"));
                }
                let n = q.pop_into(&mut buf[..size]);
                size = size % 29 + 1;
                if n == 0 {
                    std::thread::yield_now();
                    continue;
                }
                for (i, &v) in buf[..n].iter().enumerate() {
                    if v == STOP {
                        // Other threads' STOPs that came in the same batch: hand them back.
                        for _ in buf[i + 1..n].iter().filter(|&&v| v == STOP) {
                            q.push_timeout(STOP, Duration::from_secs(30)).map_err(|e| e.to_string())?;
                        }
                        return Ok([count, sum, mixed]);
                    }
                    count += 1;
                    sum = sum.wrapping_add(v);
                    mixed = mixed.wrapping_add(mix(v));
                }
            }
        })?;
        for (i, (a, b)) in sums[0].iter().zip(&sums[1]).enumerate() {
            out.set(3 * slot + i, a.wrapping_add(*b)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Joins `p` within 60 s, or kills it and fails.
fn join_within_a_minute(p: &Process, what: &str) {
    if !p.join_timeout(Duration::from_secs(60)).unwrap() {
        let _ = p.kill();
        let _ = p.join();
        panic!("{what} did not finish within 60 s");
    }
    p.join().unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Two processes push_slice while two pop_into (two threads in each):
/// every item arrives exactly
/// once (count, sum and a mixed checksum of what the consumers got equal
/// those of what was pushed), and afterwards the ring is neither wedged nor
/// miscounted: `len` is 0, a full ring's worth of `try_push` succeeds, and
/// `len` then says full. With range-claiming batches, items were lost in
/// most rounds and `try_push` failed for good.
#[test]
fn batches_from_two_processes_each_way_deliver_every_item_exactly_once() {
    const N: u64 = 60_000;
    for cap in [3u64, 8, 64] {
        let q = MpmcQueue::<u64>::new(cap).unwrap();
        let out = shmproc::Array::<u64>::from_slice(&[0; 6]).unwrap();
        let mut consumers: Vec<_> =
            (0..2).map(|slot| Process::new(pop_batches, (q.clone(), out.clone(), slot)).with_daemon(true)).collect();
        let mut producers: Vec<_> =
            (1..=2u64).map(|tag| Process::new(push_batches, (q.clone(), tag, N)).with_daemon(true)).collect();
        for p in consumers.iter_mut().chain(producers.iter_mut()) {
            p.start().unwrap();
        }
        for p in &producers {
            join_within_a_minute(p, "a producer");
        }
        for _ in 0..4 {
            q.push_timeout(STOP, Duration::from_secs(30)).expect("room for a STOP");
        }
        for p in &consumers {
            join_within_a_minute(p, "a consumer");
        }
        let got = out.to_vec().unwrap();
        let (mut count, mut sum, mut mixed) = (0u64, 0u64, 0u64);
        for tag in 1..=2u64 {
            for i in 0..N {
                let v = (tag << 32) | i;
                count += 1;
                sum = sum.wrapping_add(v);
                mixed = mixed.wrapping_add(mix(v));
            }
        }
        assert_eq!(got[0] + got[3], count, "capacity {cap}: items lost or duplicated");
        assert_eq!(got[1].wrapping_add(got[4]), sum, "capacity {cap}: wrong items");
        assert_eq!(got[2].wrapping_add(got[5]), mixed, "capacity {cap}: wrong items");

        // Still usable, and counted right.
        assert_eq!(q.len(), 0, "capacity {cap}");
        for i in 0..cap {
            q.try_push(i).unwrap_or_else(|e| panic!("capacity {cap}: try_push {i}: {e}"));
        }
        assert_eq!(q.len() as u64, cap);
        assert!(q.try_push(99).is_err());
        let mut all = vec![0; cap as usize + 1];
        assert_eq!(q.pop_into(&mut all), cap as usize);
        assert_eq!(all[..cap as usize], (0..cap).collect::<Vec<_>>()[..]);
        assert!(q.is_empty());
    }
}

/// Runs `f` in a thread and returns its result; fails (after killing
/// `p`) if it has not returned within 10 s.
fn within_10_s<R: Send + 'static>(p: &Process, what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r,
        Err(_) => {
            let _ = p.kill();
            let _ = common::join(p);
            panic!("{what} blocked for 10 s on a stalled live claimant");
        }
    }
}

/// A live consumer has claimed the oldest item and stalls (it never
/// releases the slot). A push_slice that needs that slot returns at once
/// with what it could push (nothing), and the item is not lost: it goes in
/// later, once the slot is free, and comes out in order.
#[test]
fn push_slice_returns_promptly_past_a_stalled_consumer_and_loses_nothing() {
    let q = MpmcQueue::<u64>::new(2).unwrap();
    q.push(1).unwrap();
    q.push(2).unwrap();
    let p = hanging_claimant(&q, true); // takes 1, never releases its slot
    let q2 = q.clone();
    let n = within_10_s(&p, "push_slice", move || q2.push_slice(&[3]));
    assert_eq!(n, 0, "the only free position's slot is still being read");
    assert_eq!(q.len(), 1);
    p.kill().unwrap();
    let _ = common::join(&p);
    // The dead consumer's slot is repaired by a later push; 3 goes in once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.push_slice(&[3]) == 0 {
        assert!(Instant::now() < deadline, "the dead consumer's slot was never repaired");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut out = [0; 4];
    assert_eq!(q.pop_into(&mut out), 2);
    assert_eq!(out[..2], [2, 3]);
    assert!(q.is_empty());
}

/// A live producer has claimed the next position and stalls before
/// publishing; an item is pushed after it. pop_into returns at once with
/// nothing (FIFO: the stalled item comes first); after the producer dies
/// its slot is skipped and the item behind it comes out, once.
#[test]
fn pop_into_returns_promptly_past_a_stalled_producer() {
    let q = MpmcQueue::<u64>::new(4).unwrap();
    let p = hanging_claimant(&q, false);
    q.push(7).unwrap();
    let q2 = q.clone();
    let n = within_10_s(&p, "pop_into", move || q2.pop_into(&mut [0; 4]));
    assert_eq!(n, 0);
    p.kill().unwrap();
    let _ = common::join(&p);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = [0; 4];
    let n = loop {
        let n = q.pop_into(&mut out);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "the dead producer's slot was never repaired");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(out[..n], [7]);
    assert!(q.is_empty());
    assert!(q.try_push(8).is_ok());
}

/// A hostile peer rewrites the `tail` index so it claims positions far
/// past a ring ahead of `head` (phantom claims nobody made). Non-blocking
/// calls must return as for an empty queue, not walk and "repair" the 2^48
/// phantom positions one by one (found by the hostile_segment fuzz target).
#[test]
fn a_tail_corrupted_far_past_the_ring_does_not_hang_non_blocking_calls() {
    use std::io::{Seek, SeekFrom, Write};
    let q = MpmcQueue::<u32>::new(8).unwrap();
    assert_eq!(q.push_slice(&[1, 2, 3]), 3);
    // The control block follows the 128-byte header; `tail` is its first word.
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{}", q.name())).unwrap();
    f.seek(SeekFrom::Start(128 + 4)).unwrap();
    f.write_all(&[0xff, 0xff]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let q2 = q.clone();
    std::thread::spawn(move || {
        let mut out = [0u32; 32];
        let first = q2.pop_into(&mut out);
        let _ = tx.send((first, out[..first].to_vec(), q2.try_pop()));
    });
    let (n, got, next) = rx.recv_timeout(Duration::from_secs(30)).expect("pop_into/try_pop hung on a corrupted tail");
    assert_eq!((n, got), (3, vec![1, 2, 3]), "the real items come out first");
    assert_eq!(next, Err(TryGetError::Empty));
}

shmproc::entry! {
    /// Pops one item of `q`, says so, then sleeps until killed (its
    /// consumer never frees another slot).
    fn pop_one_and_hang(args: (MpmcQueue<u64>, Event)) -> Result<(), String> {
        let (q, popped) = args;
        q.pop_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
        popped.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A put blocked on a full ring waits for a batch of free slots while it
/// spins (`FULL_BATCH`, a quarter of this ring), but never for good: when
/// the consumer (another process) frees one slot and stops, the put still
/// goes in, with either wait strategy, and nothing is lost or reordered.
/// (The new wait path of the full-ring hysteresis; the 30 s bound is a
/// hang guard, not a timing claim.)
#[test]
fn a_put_blocked_on_a_full_ring_goes_in_when_a_single_slot_frees() {
    for wait in [shmproc::queue::WaitStrategy::Blocking, shmproc::queue::WaitStrategy::BusyPoll] {
        const CAP: u64 = 256;
        let q = MpmcQueue::<u64>::new(CAP).unwrap();
        for i in 0..CAP {
            q.try_push(i).unwrap();
        }
        let pusher = q.clone().with_wait(wait);
        let blocked = std::thread::spawn(move || pusher.push_timeout(CAP, Duration::from_secs(30)));
        let popped = Event::new().unwrap();
        let mut p = Process::new(pop_one_and_hang, (q.clone(), popped.clone())).with_daemon(true);
        p.start().unwrap();
        let ok = popped.wait_timeout(Duration::from_secs(30));
        let pushed = blocked.join().unwrap();
        let _ = p.kill();
        let _ = common::join(&p);
        assert!(ok, "the child did not pop");
        assert_eq!(pushed, Ok(()), "{wait:?}: the put did not go into the one free slot");
        assert_eq!(q.len() as u64, CAP);
        let mut all = vec![0; CAP as usize];
        assert_eq!(q.pop_into(&mut all), CAP as usize);
        assert_eq!(all, (1..=CAP).collect::<Vec<_>>(), "{wait:?}");
    }
}
