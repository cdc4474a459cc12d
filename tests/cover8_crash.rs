//! kill -9 in what the earlier crash tests left out:
//!
//! - the MPMC put's batch wait (`MpmcQueue::push_wait`: a put blocked on a
//!   full ring waits until up to 64 slots are free before it tries again)
//!   while a consumer dies between its claim and its release: exactly
//!   (the `__claim_and_stop` testing aid, then SIGKILL) and at random
//!   (a consumer killed mid-stream with large items, so the kill often
//!   lands inside the claim-to-release copy), for ring capacities that are
//!   a power of two (the producer needs the dead slot at once) and not (it
//!   needs it a lap later), both wait strategies, pod items and encoded
//!   (`Queue<String>`) items; and an unbounded queue at its memory limit
//!   (its puts never enter that wait: they wait for a ring to retire);
//! - the Manager's find-or-create of the synchronisation primitives
//!   (`lock`, `rlock`, `event`, `semaphore`, `bounded_semaphore`,
//!   `condition`, `barrier`): a child killed while creating one under a
//!   name (exactly, after the segment is made, and at random), another
//!   process looking the name up meanwhile.
//!
//! Every wait has a deadline; rounds are few by default (more with
//! `SHMPROC_TEST_FULL=1 cargo test --release --test cover8_crash`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::crash::{assert_no_segment_left, killer, reap_killed, start};
use shmproc::queue::{MpmcQueue, WaitStrategy};
use shmproc::{Event, GetTimeoutError, Process, Queue, Value};

const T: Duration = Duration::from_secs(30);

fn rounds() -> u64 {
    common::count(2, 20)
}

fn strategy(busy: bool) -> WaitStrategy {
    if busy { WaitStrategy::BusyPoll } else { WaitStrategy::Blocking }
}

// ---- exact: consumers dead between claim and release, producer waiting ----

shmproc::entry! {
    /// Claims `n` positions as pops (one per thread, each thread with its
    /// own participant record) and never releases them; then hangs until
    /// killed.
    fn claim_pops_and_hang(args: (MpmcQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, n, claimed) = args;
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (q, tx) = (q.clone(), tx.clone());
            std::thread::spawn(move || {
                let ok = q.__claim_and_stop(true);
                let _ = tx.send(ok);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        for _ in 0..n {
            if !rx.recv_timeout(T).map_err(|e| e.to_string())? {
                return Err("nothing to claim".into());
            }
        }
        claimed.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A full ring of `cap` items 0..cap; a producer thread (wait strategy
/// `busy`) blocked in `push` of the stream cap..cap + extra (so inside
/// the wait, asleep for the blocking strategy); then a child claims the
/// next `claims` positions as pops and is killed before releasing them.
/// Checked: while the claimants live, the producer fills only the free
/// slots (a ring of more slots than `cap`) and never writes over theirs;
/// once they are dead it reuses their slots with nobody consuming, and
/// then all of
/// claims..cap + extra arrive exactly once and in order (items 0..claims
/// died with the claimants), the producer finishes, the ring ends exact.
fn dead_claimants_while_a_put_waits(cap: u64, busy: bool, claims: u64) {
    let what = format!("cap {cap}, {:?}, {claims} claim(s)", strategy(busy));
    eprintln!("{what}");
    let extra = 3 * cap;
    let q = MpmcQueue::<u64>::new(cap).unwrap();
    let name = q.name().to_owned();
    for i in 0..cap {
        q.try_push(i).unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let producer = {
        let (q, done) = (q.clone().with_wait(strategy(busy)), done.clone());
        std::thread::spawn(move || {
            tid_tx.send(common::gettid()).unwrap();
            for i in cap..cap + extra {
                q.push_timeout(i, T).unwrap_or_else(|e| panic!("producer stuck at {i}: {e:?}"));
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let tid = tid_rx.recv().unwrap();
    if !busy {
        // Asleep in the put's wait on a full ring.
        common::wait_for("the producer to sleep on the full ring", || common::thread_in_futex(tid));
    }
    assert_eq!(done.load(Ordering::SeqCst), 0, "{what}: pushed into a full ring");

    let claimed = Event::new().unwrap();
    let mut p = Process::new(claim_pops_and_hang, (q.clone(), claims, claimed.clone())).with_daemon(true);
    start(&mut p, &claimed);
    // The producer may refill the slots nobody holds (a ring of more
    // slots than `cap`), and must then wait: its next slots are the live
    // claimants'.
    let free = claims.min(cap.next_power_of_two() - cap);
    common::wait_for("the producer to refill the free slots", || done.load(Ordering::SeqCst) == free);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(done.load(Ordering::SeqCst), free, "{what}: wrote over a live claimant's slot");
    assert_eq!(q.len() as u64, cap - claims + free, "{what}: the claims count as taken");
    p.kill().unwrap();
    reap_killed(&p);
    // Nobody consumes: only the repair of the dead claims lets it on.
    common::wait_for("the producer to reuse the dead claimants' slots", || done.load(Ordering::SeqCst) == claims);
    assert_eq!(q.len() as u64, cap, "{what}");

    let end = Instant::now() + T;
    let mut next = claims;
    while next < cap + extra {
        assert!(Instant::now() < end, "{what}: stuck at {next}");
        match q.pop_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                assert_eq!(v, next, "{what}: out of order, lost or duplicated");
                next += 1;
            }
            Err(GetTimeoutError::TimedOut) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    producer.join().unwrap();
    assert_eq!(q.len(), 0, "{what}");
    assert_eq!(q.try_pop(), Err(shmproc::TryGetError::Empty), "{what}");
    for i in 0..cap {
        q.try_push(i).unwrap_or_else(|e| panic!("{what}: ring wedged after the repairs: push {i}: {e}"));
    }
    for i in 0..cap {
        assert_eq!(q.try_pop(), Ok(i), "{what}");
    }
    drop((q, p));
    assert_no_segment_left(&name);
}

#[test]
fn mpmc_put_in_its_batch_wait_reuses_slots_of_consumers_killed_between_claim_and_release() {
    for busy in [false, true] {
        // 64: the batch is 16 slots; 48: a ring of 64 slots, the batch 12.
        for cap in [64, 48] {
            // One claim (the put then holds out for a batch), and more
            // claims than a batch (it finds room at once).
            for claims in [1, 20] {
                dead_claimants_while_a_put_waits(cap, busy, claims);
            }
        }
    }
}

// ---- random: a consumer killed mid-stream while the producer waits ----

/// Words per item: large, so that a pop's copy (between its claim and its
/// release) is a good part of the consumer's loop and random kills land
/// inside it.
const W: usize = 512;
type Big = [u64; W];

fn big(i: u64) -> Big {
    let mut b = [i; W];
    b[W - 1] = !i;
    b
}

/// The item's number, if it is whole.
fn number(b: &Big) -> Result<u64, String> {
    let i = b[0];
    if b[..W - 1].iter().all(|&w| w == i) && b[W - 1] == !i { Ok(i) } else { Err(format!("torn item {:?}", &b[..4])) }
}

shmproc::entry! {
    /// Pushes big(0..n) with `push` (wait strategy `busy`).
    fn push_big(args: (MpmcQueue<Big>, bool, u64)) -> Result<(), String> {
        let (q, busy, n) = args;
        let q = q.with_wait(strategy(busy));
        for i in 0..n {
            q.push(big(i)).map_err(|e| format!("push {i}: {e:?}"))?;
        }
        Ok(())
    }
}

/// What each victim consumer records: the next number it expects, and
/// the first number it got.
type Record = (Value<u64>, Value<u64>);

/// Checks the `v`th item a victim got, which started after a consumer
/// that recorded `from` (its first item is `from`, or `from + 1` if the
/// one before it died between its claim and its record), and records it.
fn took(v: u64, expect: &mut Option<u64>, from: u64, rec: &Record) -> Result<(), String> {
    match *expect {
        None if v == from || v == from + 1 => rec.1.set(v).map_err(|e| e.to_string())?,
        None => return Err(format!("first item {v} after a consumer that recorded {from}")),
        Some(x) if x != v => return Err(format!("got {v}, expected {x}: hole or duplicate")),
        Some(_) => {}
    }
    *expect = Some(v + 1);
    rec.0.set(v + 1).map_err(|e| e.to_string())
}

shmproc::entry! {
    /// Pops with `pop`, checking each item is whole and next in order
    /// (see `took`); until killed.
    fn pop_big(args: (MpmcQueue<Big>, u64, Record, Event)) -> Result<(), String> {
        let (q, from, rec, started) = args;
        started.set();
        let mut expect = None;
        loop {
            took(number(&q.pop().map_err(|e| e.to_string())?)?, &mut expect, from, &rec)?;
        }
    }
}

/// How the first item of each consumer after a killed one compares with
/// the killed one's record: the same (killed between two pops), or one
/// more (killed between its claim and its record: its item died with it).
#[derive(Default, Debug)]
struct Outcomes {
    clean: u32,
    lost_one: u32,
}

/// `victims` consumers started one after the other (`spawn(from, rec,
/// started)`), each killed at a random instant while a producer streams
/// `n` items; then `get` (an item's number, or `None` on a timeout)
/// receives the rest: every item arrives once and in order except at
/// most one per victim, the one it held when killed.
fn victims_in_turn(
    what: &str,
    n: u64,
    victims: u32,
    out: &mut Outcomes,
    mut spawn: impl FnMut(u64, Record, Event) -> Process,
    mut get: impl FnMut() -> Option<u64>,
) {
    let mut from = 0;
    for _ in 0..victims {
        let rec: Record = (Value::new(from).unwrap(), Value::new(u64::MAX).unwrap());
        let started = Event::new().unwrap();
        let mut p = spawn(from, (rec.0.clone(), rec.1.clone()), started.clone());
        start(&mut p, &started);
        killer(&p, 10).join().unwrap();
        reap_killed(&p);
        match common::read_u64(&rec.1) {
            u64::MAX => {}
            f if f == from => out.clean += 1,
            _ => out.lost_one += 1,
        }
        from = common::read_u64(&rec.0);
    }
    let end = Instant::now() + T;
    let mut next = None::<u64>;
    while from < n && next.is_none_or(|x| x < n) {
        assert!(Instant::now() < end, "{what}: stuck after {next:?} (the last victim recorded {from})");
        let Some(v) = get() else { continue };
        match next {
            None => assert!(v == from || v == from + 1, "{what}: first item {v}, the last victim recorded {from}"),
            Some(x) => assert_eq!(v, x, "{what}: hole or duplicate"),
        }
        next = Some(v + 1);
    }
}

#[test]
fn mpmc_consumers_killed_mid_pop_while_the_producer_waits_for_a_batch_lose_only_their_item() {
    const N: u64 = 30_000;
    let mut out = Outcomes::default();
    for _ in 0..rounds() {
        for busy in [false, true] {
            for cap in [64u64, 48] {
                let what = format!("cap {cap}, {:?}", strategy(busy));
                let q = MpmcQueue::<Big>::new(cap).unwrap();
                let name = q.name().to_owned();
                let mut producer = Process::new(push_big, (q.clone(), busy, N)).with_daemon(true);
                producer.start().unwrap();
                let spawn =
                    |from, rec, started| Process::new(pop_big, (q.clone(), from, rec, started)).with_daemon(true);
                victims_in_turn(&what, N, 3, &mut out, spawn, || match q.pop_timeout(Duration::from_millis(20)) {
                    Ok(b) => Some(number(&b).unwrap_or_else(|e| panic!("{what}: {e}"))),
                    Err(GetTimeoutError::TimedOut) => None,
                    Err(e) => panic!("{what}: {e}"),
                });
                if let Err(e) = common::join(&producer) {
                    panic!("{what}: producer: {e}");
                }
                assert!(q.is_empty(), "{what}");
                drop((q, producer));
                assert_no_segment_left(&name);
            }
        }
    }
    eprintln!("first item after each kill: {out:?}");
}

// ---- random: encoded items (Queue<String>, a frame ring) ----

fn text(i: u64) -> String {
    format!("{i}:{}", "x".repeat(900 + (i % 7) as usize))
}

fn text_number(s: &str) -> Result<u64, String> {
    let (n, rest) = s.split_once(':').ok_or("no number")?;
    let i: u64 = n.parse().map_err(|_| format!("bad number {n:?}"))?;
    if rest.len() == 900 + (i % 7) as usize && rest.bytes().all(|b| b == b'x') {
        Ok(i)
    } else {
        Err(format!("torn item {i}"))
    }
}

shmproc::entry! {
    /// Puts text(0..n) with `put`.
    fn put_text(args: (Queue<String>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            q.put(text(i)).map_err(|e| format!("put {i}: {e:?}"))?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Gets with `get`, checking each item (see `took`); until killed.
    fn get_text(args: (Queue<String>, u64, Record, Event)) -> Result<(), String> {
        let (q, from, rec, started) = args;
        started.set();
        let mut expect = None;
        loop {
            took(text_number(&q.get().map_err(|e| e.to_string())?)?, &mut expect, from, &rec)?;
        }
    }
}

/// As the MpmcQueue test, with `Queue<String>` (bounded: a frame ring and
/// the same batch wait; unbounded at a memory limit: a put at the limit
/// waits for a ring to retire instead).
#[test]
fn queue_string_consumers_killed_mid_get_while_the_producer_waits_lose_only_their_item() {
    const N: u64 = 150_000;
    let mut out = Outcomes::default();
    for _ in 0..rounds() {
        for bound in [64u64, 48, 0] {
            let what = format!("Queue<String> maxsize {bound}");
            let q = if bound == 0 {
                Queue::<String>::unbounded_with_limit(1 << 20).unwrap()
            } else {
                Queue::<String>::new(bound).unwrap()
            };
            let name = q.name().to_owned();
            let mut producer = Process::new(put_text, (q.clone(), N)).with_daemon(true);
            producer.start().unwrap();
            let spawn = |from, rec, started| Process::new(get_text, (q.clone(), from, rec, started)).with_daemon(true);
            victims_in_turn(&what, N, 3, &mut out, spawn, || match q.get_timeout(Duration::from_millis(20)) {
                Ok(s) => Some(text_number(&s).unwrap_or_else(|e| panic!("{what}: {e}"))),
                Err(GetTimeoutError::TimedOut) => None,
                Err(e) => panic!("{what}: {e}"),
            });
            if let Err(e) = common::join(&producer) {
                panic!("{what}: producer: {e}");
            }
            assert!(q.empty(), "{what}");
            drop((q, producer));
            assert_no_segment_left(&name);
        }
    }
    eprintln!("first item after each kill: {out:?}");
}
