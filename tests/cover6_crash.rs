//! kill -9 at random points inside the `_timeout` forms the older crash
//! tests left out (`Queue` put/get timeouts bounded and unbounded,
//! `MpmcQueue` and `SpscQueue` push/pop timeouts, `ByteQueue` send/recv
//! timeouts and their loans, `Connection` send/recv timeouts, `Lock`,
//! `RLock`, `Semaphore`, `Condition`, `Barrier` and `Event` timeouts) and
//! a crash test for `Event` setters and waiters. Each test: a child killed
//! at a random instant while it loops on short timeouts (so the kill lands
//! in the fast path, the sleep or the timed-out return), then the
//! invariants checked (nothing lost or duplicated beyond the dead
//! process's own item, exact counts, the object still works, no hang, no
//! segment left). Every wait has a deadline.
//!
//! Rounds are few by default (the suite's time budget); more with
//! `SHMPROC_TEST_FULL=1 cargo test --release --test cover6_crash`.

mod common;

use std::time::{Duration, Instant};

use common::crash::{
    assert_no_segment_left, kill_within as kill_at_random, killer, pin_to, rand_below, reap_killed, short, start,
    this_cpu, unpin,
};
use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{
    Barrier, BarrierError, Condition, Event, GetTimeoutError, Lock, LockError, PopTimeoutError, Process,
    PushTimeoutError, PutTimeoutError, Queue, RLock, RecvTimeoutError, Semaphore, SendTimeoutError, Value,
};

const T: Duration = Duration::from_secs(30);
const MS: Duration = Duration::from_millis(1);

fn rounds() -> u64 {
    common::count(3, 40)
}

/// Takes the role `claim` gives (a ring's consumer end), retrying until
/// the dead holder's is freed; fails the test after the deadline.
fn take_role<R, E: std::fmt::Display>(mut claim: impl FnMut() -> Result<R, E>) -> R {
    let end = Instant::now() + T;
    loop {
        match claim() {
            Ok(r) => return r,
            Err(e) => {
                assert!(Instant::now() < end, "the dead consumer's role was never freed: {e}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Kills the consumer `cvictim` (which records in `recorded` the next
/// item it expects) at random, takes its role over (`claim`), then kills
/// the producer `pvictim` at random (by then often asleep and timing out
/// on a ring nobody drains) and receives the rest of its stream (`recv`
/// gives an item's number, `None` once disconnected): it must start at
/// the dead consumer's record or one past (its own item), with no hole or
/// duplicate after. Returns the consumer end and where an heir producer
/// goes on.
fn replace_dead_ends<R, E: std::fmt::Display>(
    cvictim: &Process,
    pvictim: &Process,
    recorded: &Value<u64>,
    claim: impl FnMut() -> Result<R, E>,
    mut recv: impl FnMut(&mut R) -> Option<u64>,
) -> (R, u64) {
    kill_at_random(cvictim, 10);
    let mut rx = take_role(claim);
    let theirs = common::read_u64(recorded);
    kill_at_random(pvictim, 10);
    let mut next = None::<u64>;
    while let Some(i) = recv(&mut rx) {
        match next {
            None => assert!(i == theirs || i == theirs + 1, "first item {i}, the dead consumer recorded {theirs}"),
            Some(n) => assert_eq!(i, n, "hole or duplicate"),
        }
        next = Some(i + 1);
    }
    (rx, next.unwrap_or(theirs + 1))
}

// ---- Queue put_timeout / get_timeout, bounded and unbounded ----

shmproc::entry! {
    /// Puts 0.. with put_timeout (short random timeouts, retrying the same
    /// item on TimedOut) until killed.
    fn q_put_timeout(args: (Queue<u64>, Event)) -> Result<(), String> {
        let (q, started) = args;
        started.set();
        let mut i = 0u64;
        loop {
            match q.put_timeout(i, short()) {
                Ok(()) => i += 1,
                Err(PutTimeoutError::TimedOut(v)) if v == i => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

shmproc::entry! {
    /// Gets with get_timeout (short random timeouts) until killed, checking
    /// the order and recording how many it got.
    fn q_get_timeout(args: (Queue<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (q, got, started) = args;
        started.set();
        let (mut n, mut last) = (0u64, None::<u64>);
        loop {
            match q.get_timeout(short()) {
                Ok(v) => {
                    if last.is_some_and(|l| l >= v) {
                        return Err(format!("{v} after {last:?}"));
                    }
                    last = Some(v);
                    n += 1;
                    got.set(n).map_err(|e| e.to_string())?;
                }
                Err(GetTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Gets from `q` (slowly now and then, so a bounded queue stays full)
/// until `kill` has fired, the victim is reaped and one more get finds
/// nothing (the dead producer's claim is seen as dead once it is reaped);
/// `check(item, k)` checks the k-th item got.
fn get_until_dead<T: shmproc::Handoff>(
    q: &Queue<T>,
    kill: &std::thread::JoinHandle<()>,
    victim: &Process,
    mut check: impl FnMut(T, u64),
) {
    let mut next = 0u64;
    let mut reaped = false;
    let end = Instant::now() + T;
    loop {
        assert!(Instant::now() < end, "stuck at {next}");
        if next.is_multiple_of(16) {
            std::thread::sleep(Duration::from_micros(300));
        }
        match q.get_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                check(v, next);
                next += 1;
            }
            Err(GetTimeoutError::TimedOut) if kill.is_finished() && reaped => break,
            Err(GetTimeoutError::TimedOut) if kill.is_finished() => {
                reap_killed(victim);
                reaped = true;
            }
            Err(GetTimeoutError::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// A producer killed inside `put_timeout` (a bounded queue kept full so it
/// often sleeps and times out; an unbounded one): the consumer gets a
/// hole-free prefix, then nothing; qsize is exact; the queue still works;
/// no segment is left once the last handle drops (the dead producer held
/// the unbounded queue's rings too).
#[test]
fn queue_producer_killed_inside_put_timeout_leaves_a_clean_prefix() {
    for cap in [2u64, 0] {
        for _round in 0..rounds() {
            let q = Queue::<u64>::new(cap).unwrap();
            let name = q.name().to_owned();
            let started = Event::new().unwrap();
            let mut victim = Process::new(q_put_timeout, (q.clone(), started.clone())).with_daemon(true);
            start(&mut victim, &started);
            let kill = killer(&victim, 20);
            get_until_dead(&q, &kill, &victim, |v, k| assert_eq!(v, k, "hole or duplicate (cap {cap})"));
            kill.join().unwrap();
            reap_killed(&victim);
            assert_eq!(q.qsize(), 0, "cap {cap}");
            assert!(q.empty());
            q.put_timeout(7, T).unwrap();
            assert_eq!(q.qsize(), 1);
            assert_eq!(q.get_timeout(T), Ok(7));
            drop((q, victim));
            assert_no_segment_left(&name);
        }
    }
}

/// A consumer killed inside `get_timeout` (mostly asleep on an empty
/// queue, the producer trickling): at most the dead consumer's own item is
/// unaccounted for, nothing is duplicated, the survivor's items come in
/// order, qsize is exact, and the producer is never stalled by the dead.
#[test]
fn queue_consumer_killed_inside_get_timeout_loses_at_most_its_own_item() {
    for cap in [2u64, 0] {
        // Unbounded: a first burst of 5 000 items outgrows the first ring
        // (64 KiB, 16 B a slot), so the victim may die following the chain.
        let (n, burst) = if cap == 0 { (6_000u64, 5_000u64) } else { (2_000, 0) };
        for _round in 0..rounds() {
            let q = Queue::<u64>::new(cap).unwrap();
            let name = q.name().to_owned();
            let got = Value::new(0u64).unwrap();
            let started = Event::new().unwrap();
            let mut victim = Process::new(q_get_timeout, (q.clone(), got.clone(), started.clone())).with_daemon(true);
            start(&mut victim, &started);
            let producer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..n {
                        if i >= burst && i % 64 == 0 {
                            std::thread::sleep(Duration::from_micros(500));
                        }
                        let mut v = i;
                        loop {
                            match q.put_timeout(v, Duration::from_millis(5)) {
                                Ok(()) => break,
                                Err(PutTimeoutError::TimedOut(back)) => v = back,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            };
            kill_at_random(&victim, 20);
            let (mut mine, mut last) = (0u64, None::<u64>);
            let end = Instant::now() + T;
            loop {
                assert!(Instant::now() < end, "stuck after {mine} (cap {cap})");
                match q.get_timeout(Duration::from_millis(20)) {
                    Ok(v) => {
                        assert!(v < n, "garbage {v}");
                        assert!(last.is_none_or(|l| l < v), "{v} after {last:?}");
                        last = Some(v);
                        mine += 1;
                    }
                    Err(GetTimeoutError::TimedOut) if producer.is_finished() && q.empty() => break,
                    Err(GetTimeoutError::TimedOut) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            producer.join().unwrap();
            let theirs = common::read_u64(&got);
            assert!(mine + theirs <= n, "duplicates: {mine} + {theirs} > {n} (cap {cap})");
            assert!(mine + theirs + 1 >= n, "lost more than the dead consumer's item: {mine} + {theirs} of {n}");
            assert_eq!(q.qsize(), 0);
            q.put_timeout(9, T).unwrap();
            assert_eq!(q.get_timeout(T), Ok(9));
            drop((q, victim));
            assert_no_segment_left(&name);
        }
    }
}

shmproc::entry! {
    /// Puts (i, text of i) with put_timeout until killed.
    fn qs_put_timeout(args: (Queue<(u64, String)>, Event)) -> Result<(), String> {
        let (q, started) = args;
        started.set();
        let mut i = 0u64;
        loop {
            match q.put_timeout((i, "s".repeat((i % 300) as usize)), short()) {
                Ok(()) => i += 1,
                Err(PutTimeoutError::TimedOut(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// The same with encoded items (frames, some past the inline 240 bytes):
/// the consumer gets intact values, a hole-free prefix; qsize exact.
#[test]
fn queue_of_encoded_items_producer_killed_inside_put_timeout_leaves_intact_values() {
    for cap in [2u64, 0] {
        for _round in 0..rounds() {
            let q = Queue::<(u64, String)>::new(cap).unwrap();
            let name = q.name().to_owned();
            let started = Event::new().unwrap();
            let mut victim = Process::new(qs_put_timeout, (q.clone(), started.clone())).with_daemon(true);
            start(&mut victim, &started);
            let kill = killer(&victim, 20);
            get_until_dead(&q, &kill, &victim, |(i, text), k| {
                assert_eq!(i, k, "hole or duplicate (cap {cap})");
                assert_eq!(text, "s".repeat((i % 300) as usize), "torn value {i}");
            });
            kill.join().unwrap();
            reap_killed(&victim);
            assert_eq!(q.qsize(), 0);
            q.put_timeout((1, "x".repeat(500)), T).unwrap();
            assert_eq!(q.get_timeout(T).unwrap(), (1, "x".repeat(500)));
            drop((q, victim));
            assert_no_segment_left(&name);
        }
    }
}

// ---- MpmcQueue push_timeout / pop_timeout ----

shmproc::entry! {
    /// Pushes (1 << 32 | i) with push_timeout, or (`pop`) pops with
    /// pop_timeout, recording its count after each success, until killed.
    fn mpmc_timeouts(args: (MpmcQueue<u64>, bool, Value<u64>, Event)) -> Result<(), String> {
        let (q, pop, count, started) = args;
        started.set();
        let mut i = 0u64;
        loop {
            let moved = if pop {
                match q.pop_timeout(short()) {
                    Ok(_) => true,
                    Err(GetTimeoutError::TimedOut) => false,
                    Err(e) => return Err(e.to_string()),
                }
            } else {
                match q.push_timeout((1 << 32) | i, short()) {
                    Ok(()) => true,
                    Err(PutTimeoutError::TimedOut(_)) => false,
                    Err(e) => return Err(e.to_string()),
                }
            };
            if moved {
                i += 1;
                count.set(i).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// An `MpmcQueue` with a producer and a consumer, each killed at a random
/// point inside `push_timeout` / `pop_timeout`, beside a live producer and
/// the parent consuming: each producer's items arrive in order, the
/// totals balance up to the dead ones' own last item (a dead producer's
/// claimed slot is skipped, a dead consumer's item goes with it), the
/// ring is exact and not wedged afterwards.
#[test]
fn mpmc_ends_killed_inside_push_timeout_and_pop_timeout_lose_at_most_their_own_item() {
    const N: u64 = 3_000;
    for _round in 0..rounds() {
        let q = MpmcQueue::<u64>::new(4).unwrap();
        let name = q.name().to_owned();
        let (pushed, popped) = (Value::new(0u64).unwrap(), Value::new(0u64).unwrap());
        let (s1, s2) = (Event::new().unwrap(), Event::new().unwrap());
        let mut pvictim = Process::new(mpmc_timeouts, (q.clone(), false, pushed.clone(), s1.clone())).with_daemon(true);
        let mut cvictim = Process::new(mpmc_timeouts, (q.clone(), true, popped.clone(), s2.clone())).with_daemon(true);
        start(&mut pvictim, &s1);
        start(&mut cvictim, &s2);
        let live = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    let mut v = i;
                    loop {
                        match q.push_timeout(v, Duration::from_millis(5)) {
                            Ok(()) => break,
                            Err(PutTimeoutError::TimedOut(back)) => v = back,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        };
        let (kc, kp) = (killer(&cvictim, 20), killer(&pvictim, 30));
        let (mut last, mut mine) = ([None::<u64>; 2], 0u64);
        let end = Instant::now() + T;
        loop {
            assert!(Instant::now() < end, "stuck at {last:?}");
            match q.pop_timeout(Duration::from_millis(20)) {
                Ok(v) => {
                    let (tag, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                    assert!(tag < 2, "garbage {v:#x}");
                    assert!(last[tag].is_none_or(|l| l < i), "producer {tag}: {i} after {:?}", last[tag]);
                    last[tag] = Some(i);
                    mine += 1;
                }
                Err(GetTimeoutError::TimedOut) if kc.is_finished() && kp.is_finished() && live.is_finished() => {
                    reap_killed(&cvictim);
                    reap_killed(&pvictim);
                    if q.is_empty() {
                        break;
                    }
                }
                Err(GetTimeoutError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        kc.join().unwrap();
        kp.join().unwrap();
        live.join().unwrap();
        // In: N + the dead producer's (its record, or one more if killed
        // between its push and the record). Out: the parent's + the dead
        // consumer's (its record, or one more).
        let (put, got) = (common::read_u64(&pushed), common::read_u64(&popped));
        let out = mine + got;
        assert!(out <= N + put + 1, "duplicates: {mine} + {got} out of {N} + {put} (+1) in");
        assert!(out + 1 >= N + put, "lost more than the dead consumer's item: {mine} + {got} out of {N} + {put} in");
        assert_eq!(q.len(), 0);
        for i in 0..4 {
            q.try_push(i).unwrap_or_else(|e| panic!("ring wedged after the kills: push {i}: {e}"));
        }
        assert!(q.is_full());
        for i in 0..4 {
            assert_eq!(q.pop_timeout(T), Ok(i));
        }
        drop((q, pvictim, cvictim));
        assert_no_segment_left(&name);
    }
}

// ---- SpscQueue push_timeout / pop_timeout ----

shmproc::entry! {
    /// Produces from.. with push_timeout (short timeouts) until killed.
    fn spsc_push_timeout(args: (SpscQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, from, started) = args;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        started.set();
        let mut i = from;
        loop {
            match tx.push_timeout(i, short()) {
                Ok(()) => i += 1,
                Err(PushTimeoutError::TimedOut(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

shmproc::entry! {
    /// Consumes with pop_timeout (short timeouts), recording the next item
    /// it expects, until killed.
    fn spsc_pop_timeout(args: (SpscQueue<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (q, next, started) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        started.set();
        let mut want = 0u64;
        loop {
            match rx.pop_timeout(short()) {
                Ok(v) if v == want => {
                    want += 1;
                    next.set(want).map_err(|e| e.to_string())?;
                }
                Ok(v) => return Err(format!("{v} where {want} was due")),
                Err(PopTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// An SPSC consumer killed inside `pop_timeout`, then its producer killed
/// inside `push_timeout` (kept full by a slow consumer): the parent takes
/// the consumer role over and gets the rest in order, starting at most one
/// item past what the dead consumer recorded, then `Disconnected`; an heir
/// producer takes the producer role over; nothing is wedged.
#[test]
fn spsc_ends_killed_inside_push_timeout_and_pop_timeout_and_replaced_lose_at_most_one_item() {
    for _round in 0..rounds() {
        let q = SpscQueue::<u64>::new(4).unwrap();
        let name = q.name().to_owned();
        let recorded = Value::new(0u64).unwrap();
        let (s1, s2) = (Event::new().unwrap(), Event::new().unwrap());
        let mut cvictim = Process::new(spsc_pop_timeout, (q.clone(), recorded.clone(), s1.clone())).with_daemon(true);
        start(&mut cvictim, &s1);
        let mut pvictim = Process::new(spsc_push_timeout, (q.clone(), 0u64, s2.clone())).with_daemon(true);
        start(&mut pvictim, &s2);
        let (mut rx, from) = replace_dead_ends(
            &cvictim,
            &pvictim,
            &recorded,
            || q.consumer(),
            |rx| match rx.pop_timeout(T) {
                Ok(v) => Some(v),
                Err(PopTimeoutError::Disconnected) => None,
                Err(e) => panic!("{e}"),
            },
        );
        assert_eq!(q.len(), 0);
        let started = Event::new().unwrap();
        let mut heir = Process::new(spsc_push_timeout, (q.clone(), from, started.clone())).with_daemon(true);
        start(&mut heir, &started);
        for want in from..from + 100 {
            assert_eq!(rx.pop_timeout(T), Ok(want), "after the takeover");
        }
        heir.kill().unwrap();
        reap_killed(&heir);
        drop((rx, q, heir, cvictim, pvictim));
        assert_no_segment_left(&name);
    }
}

// ---- ByteQueue send_timeout / recv_timeout and their loans ----

shmproc::entry! {
    /// Sends frames from.. with send_timeout and send_loan_timeout
    /// alternately (short timeouts) until killed.
    fn bq_send_timeout(args: (ByteQueue, u64, Event)) -> Result<(), String> {
        let (q, from, started) = args;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        started.set();
        let mut i = from;
        loop {
            let f = common::byte_frame(i);
            let r = if i % 2 == 0 {
                tx.send_timeout(&f, short())
            } else {
                tx.send_loan_timeout(f.len(), short()).map(|mut l| {
                    l.write_at(0, &f);
                    l.commit().expect("commit");
                })
            };
            match r {
                Ok(()) => i += 1,
                Err(SendTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

shmproc::entry! {
    /// Receives with recv_timeout and recv_loan_timeout alternately,
    /// recording the next frame it expects, until killed.
    fn bq_recv_timeout(args: (ByteQueue, Value<u64>, Event)) -> Result<(), String> {
        let (q, next, started) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        started.set();
        let mut k = 0u64;
        loop {
            k += 1;
            let r = if k.is_multiple_of(2) {
                rx.recv_timeout(short())
            } else {
                rx.recv_loan_timeout(short()).map(|l| {
                    let v = l.to_vec();
                    l.release();
                    v
                })
            };
            match r {
                Ok(f) => {
                    let i = u64::from_le_bytes(f[..8].try_into().map_err(|_| "short frame")?);
                    if f != common::byte_frame(i) {
                        return Err(format!("torn frame {i}"));
                    }
                    next.set(i + 1).map_err(|e| e.to_string())?;
                }
                Err(RecvTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A ByteQueue consumer killed inside `recv_timeout`/`recv_loan_timeout`
/// and its producer killed inside `send_timeout`/`send_loan_timeout`, each
/// replaced: frames stay intact and in order, none duplicated, only the
/// dead consumer's own frame may be missing (a read loan held at death
/// is not lost: the next consumer gets that frame).
#[test]
fn byte_queue_ends_killed_inside_timeouts_and_loans_and_replaced_lose_at_most_one_frame() {
    for _round in 0..rounds() {
        let q = ByteQueue::new(2048, 512).unwrap();
        let name = q.name().to_owned();
        let recorded = Value::new(0u64).unwrap();
        let (s1, s2) = (Event::new().unwrap(), Event::new().unwrap());
        let mut cvictim = Process::new(bq_recv_timeout, (q.clone(), recorded.clone(), s1.clone())).with_daemon(true);
        start(&mut cvictim, &s1);
        let mut pvictim = Process::new(bq_send_timeout, (q.clone(), 0u64, s2.clone())).with_daemon(true);
        start(&mut pvictim, &s2);
        let (mut rx, from) = replace_dead_ends(
            &cvictim,
            &pvictim,
            &recorded,
            || q.consumer(),
            |rx| match rx.recv_timeout(T) {
                Ok(f) => Some(common::frame_number(&f)),
                Err(RecvTimeoutError::Disconnected) => None,
                Err(e) => panic!("{e}"),
            },
        );
        let started = Event::new().unwrap();
        let mut heir = Process::new(bq_send_timeout, (q.clone(), from, started.clone())).with_daemon(true);
        start(&mut heir, &started);
        for want in from..from + 100 {
            let f = rx.recv_timeout(T).unwrap_or_else(|e| panic!("frame {want}: {e}"));
            assert_eq!(common::frame_number(&f), want, "hole or duplicate after the takeover");
        }
        heir.kill().unwrap();
        reap_killed(&heir);
        drop((rx, q, heir, cvictim, pvictim));
        assert_no_segment_left(&name);
    }
}

// ---- Connection send/recv with timeouts ----

shmproc::entry! {
    /// Sends (i, text) values with send_value_timeout and raw bytes with
    /// send_bytes_timeout alternately, until killed.
    fn pipe_send_timeout(args: (shmproc::Connection, Event)) -> Result<(), String> {
        let (mut c, started) = args;
        started.set();
        let mut i = 0u64;
        loop {
            let r = if i.is_multiple_of(2) {
                c.send_value_timeout(&(i, "p".repeat((i % 200) as usize)), short())
            } else {
                c.send_bytes_timeout(&common::byte_frame(i), short())
            };
            match r {
                Ok(()) => i += 1,
                Err(shmproc::PipeSendTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

shmproc::entry! {
    /// Receives with recv_value_timeout / recv_bytes_timeout alternately
    /// (short timeouts), checking order, until killed.
    fn pipe_recv_timeout(args: (shmproc::Connection, Event)) -> Result<(), String> {
        let (mut c, started) = args;
        started.set();
        let mut i = 0u64;
        loop {
            let r = if i.is_multiple_of(2) {
                c.recv_value_timeout::<(u64, String)>(short()).map(|(k, s)| (k, s.len() as u64))
            } else {
                c.recv_bytes_timeout(short()).map_err(Into::into).map(|f| (frame_number_or_max(&f), 0))
            };
            match r {
                Ok((k, _)) if k == i => i += 1,
                Ok((k, _)) => return Err(format!("{k} where {i} was due")),
                Err(shmproc::PipeRecvValueTimeoutError::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn frame_number_or_max(f: &[u8]) -> u64 {
    match f.get(..8) {
        Some(h) if f == common::byte_frame(u64::from_le_bytes(h.try_into().unwrap())) => {
            u64::from_le_bytes(h.try_into().unwrap())
        }
        _ => u64::MAX,
    }
}

/// A pipe's sender killed inside `send_value_timeout`/`send_bytes_timeout`
/// (the pipe kept full): the receiver gets a hole-free prefix of intact
/// messages, then `Disconnected`. A receiver killed inside its timed recv
/// forms: the sender's timed sends end with `Disconnected`, not a hang.
#[test]
fn pipe_ends_killed_inside_timed_send_and_recv_give_a_clean_prefix_then_disconnected() {
    for _round in 0..rounds() {
        let (mut a, b) = shmproc::pipe_with(false, 2048, 512).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(pipe_send_timeout, (b, started.clone())).with_daemon(true);
        start(&mut victim, &started);
        let kill = killer(&victim, 20);
        let mut next = 0u64;
        loop {
            if next.is_multiple_of(8) {
                std::thread::sleep(Duration::from_micros(300));
            }
            if next.is_multiple_of(2) {
                match a.recv_value_timeout::<(u64, String)>(T) {
                    Ok((i, s)) => {
                        assert_eq!(i, next, "hole or duplicate");
                        assert_eq!(s, "p".repeat((i % 200) as usize), "torn value {i}");
                    }
                    Err(shmproc::PipeRecvValueTimeoutError::Disconnected) => break,
                    Err(e) => panic!("after {next}: {e}"),
                }
            } else {
                match a.recv_bytes_timeout(T) {
                    Ok(f) => assert_eq!(common::frame_number(&f), next, "hole or duplicate"),
                    Err(shmproc::PipeRecvBytesTimeoutError::Disconnected) => break,
                    Err(e) => panic!("after {next}: {e}"),
                }
            }
            next += 1;
        }
        kill.join().unwrap();
        reap_killed(&victim);

        // The other way round: the receiver dies.
        let (a, mut b) = shmproc::pipe_with(false, 2048, 512).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(pipe_recv_timeout, (a, started.clone())).with_daemon(true);
        start(&mut victim, &started);
        let kill = killer(&victim, 20);
        let end = Instant::now() + T;
        let mut i = 0u64;
        loop {
            assert!(Instant::now() < end, "the sender never saw the dead receiver (sent {i})");
            if i.is_multiple_of(8) {
                std::thread::sleep(Duration::from_micros(300));
            }
            let r = if i.is_multiple_of(2) {
                b.send_value_timeout(&(i, "p".repeat((i % 200) as usize)), Duration::from_millis(20))
            } else {
                b.send_bytes_timeout(&common::byte_frame(i), Duration::from_millis(20))
            };
            match r {
                Ok(()) => i += 1,
                Err(shmproc::PipeSendTimeoutError::TimedOut) => {}
                Err(shmproc::PipeSendTimeoutError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        kill.join().unwrap();
        reap_killed(&victim);
    }
}

// ---- Lock / RLock lock_timeout ----

shmproc::entry! {
    /// Loops: lock_timeout (short), hold a moment, release; with `rlock`
    /// the RLock three levels deep (the deeper levels also timed).
    fn lock_timeout_loop(args: (Lock, RLock, bool, Event)) -> Result<(), String> {
        let (lock, rlock, use_rlock, started) = args;
        started.set();
        loop {
            if use_rlock {
                let mut gs = Vec::new();
                for _ in 0..3 {
                    match rlock.lock_timeout(short()) {
                        Ok(g) => gs.push(g),
                        Err(LockError::TimedOut) => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                std::hint::black_box(&gs);
            } else {
                match lock.lock_timeout(short()) {
                    Ok(g) => drop(std::hint::black_box(g)),
                    Err(LockError::TimedOut) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
}

/// A process killed inside `Lock::lock_timeout` / `RLock::lock_timeout`
/// (contending with the parent, who holds the lock often): the parent then
/// takes the lock within the deadline, `OwnerDied` only if the dead one
/// held it (the RLock then at level 1), and after `make_consistent` the
/// lock is free for another thread.
#[test]
fn lock_and_rlock_taken_over_after_a_kill_inside_lock_timeout() {
    for use_rlock in [false, true] {
        for _round in 0..rounds() {
            let (lock, rlock) = (Lock::new().unwrap(), RLock::new().unwrap());
            let started = Event::new().unwrap();
            let mut victim = Process::new(lock_timeout_loop, (lock.clone(), rlock.clone(), use_rlock, started.clone()))
                .with_daemon(true);
            start(&mut victim, &started);
            let kill = killer(&victim, 20);
            // Contend until the kill: hold the lock for short spells so the
            // victim sleeps and times out.
            let mut owner_died = 0;
            while !kill.is_finished() {
                if use_rlock {
                    match rlock.lock_timeout(short()) {
                        Ok(g) => {
                            std::thread::sleep(Duration::from_micros(200));
                            drop(g);
                        }
                        Err(LockError::TimedOut) => {}
                        Err(LockError::OwnerDied(mut g)) => {
                            owner_died += 1;
                            g.make_consistent();
                        }
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match lock.lock_timeout(short()) {
                        Ok(g) => {
                            std::thread::sleep(Duration::from_micros(200));
                            drop(g);
                        }
                        Err(LockError::TimedOut) => {}
                        Err(LockError::OwnerDied(mut g)) => {
                            owner_died += 1;
                            g.make_consistent();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            kill.join().unwrap();
            reap_killed(&victim);
            if use_rlock {
                match rlock.lock_timeout(T) {
                    Ok(g) => drop(g),
                    Err(LockError::OwnerDied(mut g)) => {
                        owner_died += 1;
                        assert_eq!(rlock.level(), 1, "taken over at the dead owner's depth");
                        g.make_consistent();
                    }
                    Err(e) => panic!("the dead one's RLock was not taken over: {e}"),
                }
                assert_eq!(rlock.level(), 0);
                let r2 = rlock.clone();
                let other = std::thread::spawn(move || {
                    let level = r2.lock_timeout(T).map(|g| {
                        let l = r2.level();
                        drop(g);
                        l
                    });
                    matches!(level, Ok(1))
                });
                assert!(other.join().unwrap(), "RLock not free after the takeover");
            } else {
                match lock.lock_timeout(T) {
                    Ok(g) => drop(g),
                    Err(LockError::OwnerDied(mut g)) => {
                        owner_died += 1;
                        g.make_consistent();
                    }
                    Err(e) => panic!("the dead one's Lock was not taken over: {e}"),
                }
                let l2 = lock.clone();
                assert!(
                    std::thread::spawn(move || l2.lock_timeout(T).is_ok()).join().unwrap(),
                    "Lock not free after the takeover"
                );
            }
            assert!(owner_died <= 1, "OwnerDied reported {owner_died} times for one death");
            let names = [lock.name().to_owned(), rlock.name().to_owned()];
            drop((lock, rlock, victim));
            names.iter().for_each(|n| assert_no_segment_left(n));
        }
    }
}

// ---- Semaphore acquire_timeout ----

shmproc::entry! {
    /// Loops: acquire_timeout (short), release, until killed.
    fn sem_timeout_loop(args: (Semaphore, Event)) -> Result<(), String> {
        let (sem, started) = args;
        started.set();
        loop {
            if sem.acquire_timeout(short()) {
                sem.release().map_err(|e| e.to_string())?;
            }
        }
    }
}

/// Processes killed inside `Semaphore::acquire_timeout`: asleep on an
/// empty semaphore they swallow no release (a live waiter gets it, the
/// value is exact after); contending for one unit, the value afterwards
/// is 1, or 0 when the dead one held the unit (lost, as documented) and a
/// release for the dead makes it whole.
#[test]
fn semaphore_waiters_killed_inside_acquire_timeout_swallow_no_release_and_lose_at_most_their_unit() {
    for _round in 0..rounds() {
        // Sleepers on an empty semaphore.
        let sem = Semaphore::new(0).unwrap();
        let started = Event::new().unwrap();
        let mut victims: Vec<Process> = (0..2)
            .map(|_| {
                let mut p = Process::new(sem_timeout_loop, (sem.clone(), started.clone())).with_daemon(true);
                start(&mut p, &started);
                p
            })
            .collect();
        for v in &mut victims {
            kill_at_random(v, 10);
        }
        assert_eq!(sem.get_value(), 0, "units appeared out of nothing");
        let s2 = sem.clone();
        let live = std::thread::spawn(move || s2.acquire_timeout(T));
        std::thread::sleep(Duration::from_millis(5));
        sem.release().unwrap();
        assert!(live.join().unwrap(), "the live waiter did not get the release");
        assert_eq!(sem.get_value(), 0);

        // One unit, contended.
        let sem = Semaphore::new(1).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(sem_timeout_loop, (sem.clone(), started.clone())).with_daemon(true);
        start(&mut victim, &started);
        let kill = killer(&victim, 20);
        while !kill.is_finished() {
            if sem.acquire_timeout(short()) {
                sem.release().unwrap();
            }
        }
        kill.join().unwrap();
        reap_killed(&victim);
        let v = sem.get_value();
        assert!(v <= 1, "value {v} > 1 after a kill");
        if v == 0 {
            sem.release().unwrap(); // for the dead
        }
        assert!(sem.acquire_timeout(T));
        assert!(!sem.try_acquire());
        sem.release().unwrap();
        assert_eq!(sem.get_value(), 1);
        let name = sem.name().to_owned();
        drop((sem, victim));
        assert_no_segment_left(&name);
    }
}

// ---- Condition wait_timeout / wait_for_timeout ----

shmproc::entry! {
    /// Loops: lock, wait_timeout or wait_for_timeout (short), unlock.
    fn cond_timeout_loop(args: (Condition, Event)) -> Result<(), String> {
        let (cond, started) = args;
        started.set();
        let mut k = 0u64;
        loop {
            k += 1;
            let mut g = match cond.lock_timeout(short()) {
                Ok(g) => g,
                Err(LockError::TimedOut) => continue,
                Err(LockError::OwnerDied(mut g)) => {
                    g.make_consistent();
                    g
                }
                Err(e) => return Err(e.to_string()),
            };
            let r = if k.is_multiple_of(2) {
                cond.wait_timeout(&mut g, short()).map(|_| ())
            } else {
                cond.wait_for_timeout(&mut g, short(), || false).map(|_| ())
            };
            r.map_err(|e| e.to_string())?;
        }
    }
}

/// Processes killed inside `Condition::wait_timeout` / `wait_for_timeout`
/// (or holding its lock between waits): the parent takes the lock
/// (`OwnerDied` if the dead held it), a live waiter then gets a notify,
/// and the condition's lock is free afterwards.
#[test]
fn condition_waiters_killed_inside_wait_timeout_leave_it_working() {
    for _round in 0..rounds() {
        let cond = Condition::new().unwrap();
        let started = Event::new().unwrap();
        let mut victims: Vec<Process> = (0..2)
            .map(|_| {
                let mut p = Process::new(cond_timeout_loop, (cond.clone(), started.clone())).with_daemon(true);
                start(&mut p, &started);
                p
            })
            .collect();
        for v in &mut victims {
            // Notify now and then so some are woken, not timed out.
            for _ in 0..rand_below(5) {
                if let Ok(g) = cond.lock_timeout(MS) {
                    cond.notify(&g, 1);
                }
            }
            kill_at_random(v, 10);
        }
        let mut g = match cond.lock_timeout(T) {
            Ok(g) => g,
            Err(LockError::OwnerDied(mut g)) => {
                g.make_consistent();
                g
            }
            Err(e) => panic!("condition lock not taken over: {e}"),
        };
        drop(g);
        let c2 = cond.clone();
        let live = std::thread::spawn(move || {
            let mut g = c2.lock_timeout(T).expect("lock");
            c2.wait_timeout(&mut g, T).expect("wait")
        });
        let end = Instant::now() + T;
        while !live.is_finished() {
            assert!(Instant::now() < end, "the live waiter never woke");
            g = cond.lock_timeout(T).expect("lock");
            cond.notify(&g, 1);
            drop(g);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(live.join().unwrap(), "the live waiter timed out instead of being notified");
        let c3 = cond.clone();
        assert!(std::thread::spawn(move || c3.lock_timeout(T).is_ok()).join().unwrap());
        let name = cond.name().to_owned();
        drop((cond, victims));
        assert_no_segment_left(&name);
    }
}

// ---- Barrier wait_timeout ----

shmproc::entry! {
    /// Loops: wait_timeout (short); on Broken, reset.
    fn barrier_timeout_loop(args: (Barrier, Event)) -> Result<(), String> {
        let (b, started) = args;
        started.set();
        loop {
            if let Err(BarrierError::Broken) = b.wait_timeout(short()) { b.reset() }
        }
    }
}

/// A process killed inside `Barrier::wait_timeout` (with the parent also
/// waiting, so some generations complete, some break): afterwards the
/// barrier has its parties, a `reset` makes it usable and two live
/// parties pass it, more than once.
#[test]
fn barrier_party_killed_inside_wait_timeout_leaves_it_resettable() {
    for _round in 0..rounds() {
        let b = Barrier::new(2).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(barrier_timeout_loop, (b.clone(), started.clone())).with_daemon(true);
        start(&mut victim, &started);
        let kill = killer(&victim, 20);
        let mut passed = 0u32;
        while !kill.is_finished() {
            match b.wait_timeout(short()) {
                Ok(_) => passed += 1,
                Err(BarrierError::Broken) => b.reset(),
                Err(_) => {}
            }
        }
        kill.join().unwrap();
        reap_killed(&victim);
        std::hint::black_box(passed);
        assert_eq!(b.parties(), 2);
        b.reset();
        assert!(!b.is_broken());
        assert_eq!(b.n_waiting(), 0, "a dead arrival counted after reset");
        for _ in 0..3 {
            let b2 = b.clone();
            let other = std::thread::spawn(move || b2.wait_timeout(T));
            let mine = b.wait_timeout(T).expect("barrier unusable after the kill and reset");
            let theirs = other.join().unwrap().expect("barrier unusable after the kill and reset");
            assert_eq!(mine + theirs, 1, "arrival indices {mine} and {theirs}");
        }
        let name = b.name().to_owned();
        drop((b, victim));
        assert_no_segment_left(&name);
    }
}

// ---- Event: setters and waiters killed ----

shmproc::entry! {
    /// `setter`: set/clear in a loop; else wait_timeout (short) in a loop.
    fn event_loop(args: (Event, bool, Event)) -> Result<(), String> {
        let (e, setter, started) = args;
        started.set();
        loop {
            if setter {
                e.set();
                e.clear();
            } else {
                std::hint::black_box(e.wait_timeout(short()));
            }
        }
    }
}

/// An `Event` whose setter (set/clear loop) and waiters (wait_timeout
/// loop) are killed at random points: the survivors see a consistent
/// event: `is_set` agrees with `wait_timeout`, a `set` wakes a live
/// sleeper, a `clear` makes waits time out, and repeated set/clear keep
/// working.
#[test]
fn event_setter_and_waiters_killed_mid_operation_leave_a_consistent_event() {
    for _round in 0..rounds() {
        let e = Event::new().unwrap();
        let started = Event::new().unwrap();
        let mut procs: Vec<Process> = [true, false, false]
            .into_iter()
            .map(|setter| {
                let mut p = Process::new(event_loop, (e.clone(), setter, started.clone())).with_daemon(true);
                start(&mut p, &started);
                p
            })
            .collect();
        for p in &mut procs {
            kill_at_random(p, 10);
        }
        // Whatever state the dead setter left: it is one of the two, and
        // waits agree with it.
        if e.is_set() {
            assert!(e.wait_timeout(Duration::ZERO), "is_set but wait_timeout(0) is false");
        } else {
            assert!(!e.wait_timeout(MS), "clear but wait_timeout returned true");
        }
        e.clear();
        assert!(!e.is_set());
        assert!(!e.wait_timeout(MS));
        // A live sleeper is woken by a set.
        let e2 = e.clone();
        let tid = std::sync::mpsc::channel();
        let live = std::thread::spawn(move || {
            tid.0.send(common::gettid()).unwrap();
            e2.wait_timeout(T)
        });
        let tid = tid.1.recv().unwrap();
        common::wait_for("the live waiter asleep", || common::thread_in_futex(tid) || live.is_finished());
        e.set();
        assert!(live.join().unwrap(), "set did not wake the live waiter");
        assert!(e.is_set());
        for _ in 0..3 {
            e.clear();
            assert!(!e.wait_timeout(Duration::ZERO));
            e.set();
            assert!(e.wait_timeout(Duration::ZERO));
        }
        let name = e.name().to_owned();
        drop((e, procs));
        assert_no_segment_left(&name);
    }
}

// ---- a sleeper woken, then killed before it runs ----

/// What the sleepers of [`woken_then_killed`] sleep on.
type SleepOn = (Semaphore, Condition, MpmcQueue<u64>, Lock);

shmproc::entry! {
    /// Pinned to `cpu` at the idle scheduling class (it never preempts the
    /// parent there), sleeps in one blocking call: `Semaphore::acquire`,
    /// `Condition::wait`, `MpmcQueue::pop` or `Lock::lock`.
    fn idle_sleeper(args: (String, usize, SleepOn, Event)) -> Result<(), String> {
        let (what, cpu, (sem, cond, q, lock), started) = args;
        pin_to(cpu);
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system call on the calling thread with a valid param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err("sched_setscheduler(SCHED_IDLE) refused".into());
        }
        let mut g = cond.lock().map_err(|e| e.to_string())?;
        started.set();
        if what.contains("condition") {
            cond.wait(&mut g).map_err(|e| e.to_string())?;
        } else if what.contains("queue") {
            drop(g);
            q.pop().map_err(|e| e.to_string())?;
        } else if what == "lock" {
            drop(g);
            drop(lock.lock().map_err(|e| e.to_string())?);
        } else {
            drop(g);
            sem.acquire();
        }
        // Woken: a parent that killed us in time never sees this.
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    }
}

/// One round: a victim process and then a live thread asleep on the same
/// object (`what`: "semaphore", "condition", "queue", "lock", or "wait on
/// a ..." for a live thread in the multi-object `wait`); the parent, on the
/// victim's CPU (where the victim, at the idle scheduling class, cannot
/// run before it), wakes one sleeper (`release`, `notify(1)`, `push`, the
/// unlock of a lock it held) and
/// kills the victim at once. The futex queue is FIFO, so the wake goes to
/// the victim, which dies before it can act on it. The live sleeper, in an
/// untimed call as a program would wait, must still return.
fn woken_then_killed(what: &str) {
    let on: SleepOn =
        (Semaphore::new(0).unwrap(), Condition::new().unwrap(), MpmcQueue::new(4).unwrap(), Lock::new().unwrap());
    let held = (what == "lock").then(|| on.3.lock().unwrap());
    let started = Event::new().unwrap();
    let cpu = this_cpu();
    pin_to(cpu);
    let args = (what.to_string(), cpu, on.clone(), started.clone());
    let mut victim = Process::new(idle_sleeper, args).with_daemon(true);
    victim.start().unwrap();
    assert!(started.wait_timeout(T), "victim never started");
    let vpid = victim.pid().unwrap();
    common::wait_for("the victim asleep", || common::threads_in_futex(vpid) > 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let live = {
        let (mut sem, cond, mut q, lock) = on.clone();
        let what = what.to_string();
        std::thread::spawn(move || {
            unpin();
            tx.send(common::gettid()).unwrap();
            match what.as_str() {
                "semaphore" => sem.acquire(),
                "wait on a semaphore" => drop(shmproc::wait(&mut [&mut sem], None).unwrap()),
                "queue" => assert_eq!(q.pop(), Ok(1)),
                "wait on a queue" => drop(shmproc::wait(&mut [&mut q], None).unwrap()),
                "lock" => drop(lock.lock().unwrap()),
                _ => {
                    // Sleeps only once the parent's notify can follow: the
                    // parent takes the lock after we are in the futex wait.
                    let mut g = cond.lock().unwrap();
                    cond.wait(&mut g).unwrap();
                }
            }
        })
    };
    let tid = rx.recv().unwrap();
    common::wait_for("the live sleeper asleep", || common::thread_in_futex(tid));
    let (sem, cond, q, _) = &on;
    match what {
        "lock" => drop(held),
        "condition" => {
            let g = cond.lock().unwrap();
            cond.notify(&g, 1);
            drop(g);
        }
        w if w.contains("queue") => q.push(1).unwrap(),
        _ => sem.release().unwrap(),
    }
    victim.kill().unwrap();
    unpin();
    reap_killed(&victim);
    let end = Instant::now() + T;
    while !live.is_finished() {
        assert!(Instant::now() < end, "{what}: the live sleeper never woke (the wake went to the killed one)");
        std::thread::sleep(Duration::from_millis(2));
    }
    live.join().unwrap();
    match what {
        "semaphore" => assert_eq!(sem.get_value(), 0),
        "wait on a semaphore" => assert_eq!(sem.get_value(), 1, "wait() takes no unit"),
        "queue" => assert_eq!(q.len(), 0),
        "wait on a queue" => assert_eq!(q.len(), 1, "wait() takes no item"),
        _ => {}
    }
}

common::crash::woken_then_killed_tests! {
    /// A `Semaphore::release` whose futex wake reaches a sleeper that is
    /// killed before it runs: the unit is still there (value 1) and another
    /// sleeper must get it, not sleep on beside it until its deadline.
    semaphore_release_whose_wake_reaches_a_killed_sleeper_still_reaches_a_live_one => "semaphore";

    /// A `Condition::notify(1)` whose wake reaches a waiter that is killed
    /// before it runs: the notify must still wake a live waiter (notifiers
    /// never wait for waiters, so a dead waiter must not eat the notify).
    condition_notify_whose_wake_reaches_a_killed_waiter_still_reaches_a_live_one => "condition";

    /// An `MpmcQueue` push whose one wake reaches a consumer killed before it
    /// runs: a live consumer asleep in `pop` still gets the item.
    queue_push_whose_wake_reaches_a_killed_consumer_still_reaches_a_live_one => "queue";

    /// A `Lock` unlock whose one wake reaches a locker killed before it runs
    /// (it never took the lock): a live locker asleep in `lock` still gets it.
    lock_unlock_whose_wake_reaches_a_killed_locker_still_reaches_a_live_one => "lock";

    /// The same through the multi-object `wait` on a `Semaphore`: a
    /// `release` whose one wake reaches an acquirer killed before it runs
    /// leaves the unit there; a live `wait(&[sem], None)` beside it must
    /// return (it is ready), not sleep on forever.
    wait_on_a_semaphore_whose_release_wake_reaches_a_killed_acquirer_still_returns => "wait on a semaphore";

    /// The same with the live consumer in the multi-object `wait` on the
    /// queue: it must return (the queue is ready).
    wait_on_a_queue_whose_push_wake_reaches_a_killed_consumer_still_returns => "wait on a queue";
}
