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
use shmproc::{Event, GetTimeoutError, Manager, Process, Queue, Value};

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
        claim_in_threads_and_hang(n, &claimed, move || q.__claim_and_stop(true))
    }
}

/// Runs `claim` in `n` threads at once (each with its own participant
/// record), each thread then sleeping for good; sets `claimed` once all
/// claimed, then hangs until killed. A `false` from `claim` is also a claim
/// lost to a sibling thread's CAS at the same position: tried again.
fn claim_in_threads_and_hang(
    n: u64,
    claimed: &Event,
    claim: impl Fn() -> bool + Clone + Send + 'static,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let (claim, tx) = (claim.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send((0..10_000).any(|_| claim() || (std::thread::yield_now(), false).1));
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
    // The victims die within their first milliseconds: a shorter stream (cargo test) takes the same paths.
    let n = common::count(8_000, 30_000);
    let mut out = Outcomes::default();
    for _ in 0..rounds() {
        for busy in [false, true] {
            for cap in [64u64, 48] {
                let what = format!("cap {cap}, {:?}", strategy(busy));
                let q = MpmcQueue::<Big>::new(cap).unwrap();
                let name = q.name().to_owned();
                let mut producer = Process::new(push_big, (q.clone(), busy, n)).with_daemon(true);
                producer.start().unwrap();
                let spawn =
                    |from, rec, started| Process::new(pop_big, (q.clone(), from, rec, started)).with_daemon(true);
                victims_in_turn(&what, n, 3, &mut out, spawn, || match q.pop_timeout(Duration::from_millis(20)) {
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
    format!("{i}:{}", "x".repeat(900 + (i % KINDS.len() as u64) as usize))
}

fn text_number(s: &str) -> Result<u64, String> {
    let (n, rest) = s.split_once(':').ok_or("no number")?;
    let i: u64 = n.parse().map_err(|_| format!("bad number {n:?}"))?;
    if rest.len() == 900 + (i % KINDS.len() as u64) as usize && rest.bytes().all(|b| b == b'x') {
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
    // As above: a shorter stream in cargo test, the full one with SHMPROC_TEST_FULL=1.
    let n = common::count(30_000, 150_000);
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
            let mut producer = Process::new(put_text, (q.clone(), n)).with_daemon(true);
            producer.start().unwrap();
            let spawn = |from, rec, started| Process::new(get_text, (q.clone(), from, rec, started)).with_daemon(true);
            victims_in_turn(&what, n, 3, &mut out, spawn, || match q.get_timeout(Duration::from_millis(20)) {
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

// ---- Manager find-or-create of the synchronisation primitives ----

/// The kinds a Manager finds or creates by name, by number: the
/// primitives, then the other objects (whose crash test in
/// `manager_registry.rs` kills the maker only after the segment is made).
const KINDS: [&str; 12] = [
    "lock",
    "rlock",
    "event",
    "semaphore",
    "bounded_semaphore",
    "condition",
    "barrier",
    "value",
    "array",
    "list",
    "dict",
    "queue",
];

/// Finds or creates `name` as `kind` (semaphores of 3 and 2, a barrier of
/// 2 parties, a value of 5, an array of 3, a queue of 4); its segment's
/// name.
fn lookup(mgr: &Manager, kind: usize, name: &str) -> Result<String, String> {
    let e = |e: shmproc::OpenError| format!("{} {name:?}: {e}", KINDS[kind]);
    Ok(match kind {
        0 => mgr.lock(name).map_err(e)?.name().to_owned(),
        1 => mgr.rlock(name).map_err(e)?.name().to_owned(),
        2 => mgr.event(name).map_err(e)?.name().to_owned(),
        3 => mgr.semaphore(name, 3).map_err(e)?.name().to_owned(),
        4 => mgr.bounded_semaphore(name, 2).map_err(e)?.name().to_owned(),
        5 => mgr.condition(name).map_err(e)?.name().to_owned(),
        6 => mgr.barrier(name, 2).map_err(e)?.name().to_owned(),
        7 => mgr.value(name, 5u64).map_err(e)?.name().to_owned(),
        8 => mgr.array::<u64>(name, 3).map_err(e)?.name().to_owned(),
        9 => mgr.list::<String>(name).map_err(e)?.name().to_owned(),
        10 => mgr.dict::<String, u64>(name).map_err(e)?.name().to_owned(),
        _ => mgr.queue::<u64>(name, 4).map_err(e)?.name().to_owned(),
    })
}

/// Finds `name` (of `kind`) and checks it is as made, untouched: the lock
/// free (not "owner died": a half-made object is never handed out), the
/// event clear, the semaphores at their value, the barrier of 2 parties,
/// the value 5, the array 3 zeros, the list, dict and queue empty.
/// Returns its segment's name.
fn check_fresh(mgr: &Manager, kind: usize, name: &str) -> String {
    let what = format!("{} {name:?}", KINDS[kind]);
    let seg = lookup(mgr, kind, name).unwrap_or_else(|e| panic!("{e}"));
    match kind {
        0 => assert!(mgr.lock(name).unwrap().try_lock().is_ok(), "{what}: not free"),
        1 => {
            let r = mgr.rlock(name).unwrap();
            assert_eq!(r.level(), 0, "{what}");
            assert!(r.try_lock().is_ok(), "{what}: not free");
        }
        2 => assert!(!mgr.event(name).unwrap().is_set(), "{what}: set"),
        3 => assert_eq!(mgr.semaphore(name, 0).unwrap().get_value(), 3, "{what}"),
        4 => {
            let b = mgr.bounded_semaphore(name, 0).unwrap();
            assert_eq!(b.get_value(), 2, "{what}");
            assert!(b.release().is_err(), "{what}: released past its bound");
        }
        5 => assert!(mgr.condition(name).unwrap().try_lock().is_ok(), "{what}: not free"),
        6 => assert_eq!(mgr.barrier(name, 5).unwrap().parties(), 2, "{what}"),
        7 => assert_eq!(mgr.value(name, 0u64).unwrap().get().unwrap(), 5, "{what}"),
        8 => assert_eq!(mgr.array::<u64>(name, 9).unwrap().to_vec().unwrap(), [0; 3], "{what}"),
        9 => assert!(mgr.list::<String>(name).unwrap().is_empty(), "{what}"),
        10 => assert!(mgr.dict::<String, u64>(name).unwrap().is_empty(), "{what}"),
        _ => {
            let q = mgr.queue::<u64>(name, 9).unwrap();
            assert!(q.empty() && q.maxsize() == 4, "{what}");
        }
    }
    seg
}

/// The files in /dev/shm of segments made by process `pid` (unique names
/// carry their maker's pid).
fn segments_of_pid(pid: u32) -> Vec<String> {
    common::crash::segments_named(&format!("anon.{pid}."))
}

shmproc::entry! {
    /// Finds or creates `name` as primitive `kind`, dying by SIGKILL at the
    /// `steps`-th write step of the registry's operations (0: never), or,
    /// with `report`, right after making the object's segment (its name
    /// written to the file `report` first).
    fn make_and_die(args: (Manager, u32, String, u64, String)) -> Result<(), String> {
        let (mgr, kind, name, steps, report) = args;
        if !report.is_empty() {
            shmproc::__crash_in_find_or_create(&report);
        }
        shmproc::__crash_after_steps(steps);
        let r = lookup(&mgr, kind as usize, &name);
        shmproc::__crash_after_steps(0);
        r.map(drop)
    }
}

shmproc::entry! {
    /// Finds or creates `name` as primitive `kind` (or, with `n > 0`, the
    /// names `name-0..n` of kinds `i % 12`) and puts each segment's name.
    fn look_up(args: (Manager, u32, String, u64, Queue<String>)) -> Result<(), String> {
        let (mgr, kind, name, n, out) = args;
        if n == 0 {
            let seg = lookup(&mgr, kind as usize, &name)?;
            return out.put(seg).map_err(|e| e.to_string());
        }
        for i in 0..n {
            let seg = lookup(&mgr, (i % KINDS.len() as u64) as usize, &format!("{name}-{i}"))?;
            out.put(seg).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// For each primitive kind, a child dies inside the Manager's
/// find-or-create of a name at each write step of the registry's
/// operations in turn (every sixth by default) (until one finds or creates it without dying), and
/// once right after making the segment, while another child looks the
/// same name up. The other child and the parent then get one object (the
/// same segment), fresh; the dead maker's half-made segment is gone; the
/// Manager lists the name once; once the Manager is dropped nothing of
/// the children is left in /dev/shm.
#[test]
fn manager_primitive_lookups_with_the_maker_killed_at_every_step_give_one_fresh_object() {
    const MAX_STEPS: u64 = 200;
    let mgr = Manager::new().unwrap();
    let out = Queue::<String>::new(4).unwrap();
    let mut pids = Vec::new();
    let (mut killed, mut raced) = (0, 0);
    for (kind, kname) in KINDS.iter().enumerate() {
        let mut completed = false;
        // Every step with SHMPROC_TEST_FULL; else every `stride`-th from a
        // random offset (each run its own).
        let stride = common::count(6, 1);
        let offset = common::crash::rand_below(stride);
        for steps in (0..MAX_STEPS).filter(|s| *s == 0 || (s + offset).is_multiple_of(stride)) {
            let name = format!("{kname}-{steps}");
            let what = format!("{kname} killed at step {steps}");
            // Step 0: the crash right after the segment is made.
            let report = if steps == 0 {
                std::env::temp_dir().join(format!("shmproc-cover8-{}-{kind}", std::process::id())).display().to_string()
            } else {
                String::new()
            };
            let mut maker = Process::new(make_and_die, (mgr.clone(), kind as u32, name.clone(), steps, report.clone()));
            let mut looker = Process::new(look_up, (mgr.clone(), kind as u32, name.clone(), 0u64, out.clone()));
            maker.start().unwrap();
            looker.start().unwrap();
            pids.extend([maker.pid().unwrap(), looker.pid().unwrap()]);
            let ended = common::join(&maker);
            let maker_pid = maker.pid().unwrap();
            if let Err(e) = common::join(&looker) {
                panic!("{what}: the other process's lookup: {e}");
            }
            let theirs = out.get_timeout(T).unwrap();
            let seg = check_fresh(&mgr, kind, &name);
            assert_eq!(theirs, seg, "{what}: two objects under one name");
            let listed: Vec<_> = mgr.names().unwrap().into_iter().filter(|e| e.name == name).collect();
            assert_eq!(listed.len(), 1, "{what}: {listed:?}");
            assert_eq!(listed[0].segment, seg, "{what}");
            // The maker made it and lived (no crash at this step: the sweep
            // is done), or it was killed, or the other process made it
            // first (the maker found it: a round lost to the race).
            let by_maker = seg.contains(&format!("anon.{maker_pid}."));
            match &ended {
                Err(shmproc::ProcessError::Signaled { signal: 9, .. }) => killed += 1,
                Ok(()) if by_maker => completed = true,
                Ok(()) => raced += 1,
                other => panic!("{what}: the maker ended with {other:?}"),
            }
            let left: Vec<_> = segments_of_pid(maker_pid).into_iter().filter(|f| !f.ends_with(&seg)).collect();
            assert!(left.is_empty(), "{what}: the dead maker's segments left: {left:?}");
            if steps == 0 {
                let made = std::fs::read_to_string(&report).unwrap_or_default();
                let _ = std::fs::remove_file(&report);
                assert!(!completed, "{what}: the injected crash did not happen");
                assert!(ended.is_ok() || !made.is_empty(), "{what}: killed, but not after making its segment");
            }
            if completed {
                break;
            }
        }
        assert!(completed, "{kname}: still killed after {MAX_STEPS} steps");
    }
    eprintln!("{killed} makers killed, {raced} found the object made by the other");
    drop((mgr, out));
    for pid in pids {
        assert_eq!(segments_of_pid(pid), Vec::<String>::new(), "left after the Manager's end");
    }
}

shmproc::entry! {
    /// Finds or creates the names `name-i` (kind `i % 12`) for i = 0, 1, ...
    /// recording how many it did, round and round until killed.
    fn make_in_turn(args: (Manager, String, u64, Value<u64>, Event)) -> Result<(), String> {
        let (mgr, name, n, made, started) = args;
        started.set();
        loop {
            for i in 0..n {
                lookup(&mgr, (i % KINDS.len() as u64) as usize, &format!("{name}-{i}"))?;
                made.set(i + 1).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// A child making primitives under a run of names, killed at a random
/// instant, while another child looks up the same names: the other never
/// hangs nor fails, and every name ends as one fresh object that both it
/// and the parent get.
#[test]
fn manager_primitive_maker_killed_at_random_while_another_looks_up_the_same_names() {
    const N: u64 = 70;
    for round in 0..rounds() {
        let mgr = Manager::new().unwrap();
        let name = format!("p{round}");
        let out = Queue::<String>::new(N).unwrap();
        let (made, started) = (Value::new(0u64).unwrap(), Event::new().unwrap());
        let mut maker =
            Process::new(make_in_turn, (mgr.clone(), name.clone(), N, made.clone(), started.clone())).with_daemon(true);
        start(&mut maker, &started);
        let mut looker = Process::new(look_up, (mgr.clone(), 0u32, name.clone(), N, out.clone()));
        looker.start().unwrap();
        let pids = [maker.pid().unwrap(), looker.pid().unwrap()];
        killer(&maker, 30).join().unwrap();
        reap_killed(&maker);
        let made = common::read_u64(&made);
        eprintln!("round {round}: the maker was killed after {made} lookups");
        if let Err(e) = common::join(&looker) {
            panic!("round {round} (the maker made {made}): the other process's lookups: {e}");
        }
        for i in 0..N {
            let n = format!("{name}-{i}");
            let seg = check_fresh(&mgr, (i % KINDS.len() as u64) as usize, &n);
            assert_eq!(out.get_timeout(T).unwrap(), seg, "{n}: two objects under one name");
        }
        assert_eq!(mgr.names().unwrap().len() as u64, N);
        drop((mgr, out, maker, looker));
        for pid in pids {
            assert_eq!(segments_of_pid(pid), Vec::<String>::new(), "left after the Manager's end");
        }
    }
}

// ---- Pool::map_async_chunked with a worker killed mid-chunk ----

/// The item that parks its worker.
const PARK: u64 = 37;

shmproc::task! {
    /// Item `park` writes its worker's pid to `slot` and parks the worker
    /// forever (the test kills it); any other item x gives 3x.
    fn park_in_chunk((x, park, slot): (u64, u64, Value<u32>)) -> u64 {
        if x == park {
            slot.set(std::process::id()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        x * 3
    }
}

/// Two `map_async_chunked` jobs in flight at once (chunk sizes 0 = the
/// default, 1, 7, 64), the first with an item that parks its worker,
/// which is then killed with SIGKILL: the first job fails with
/// `WorkerLost` naming that worker, the signal and the item; the second
/// is exact; a later job on the same pool is exact (the worker was
/// replaced), and the pool closes and joins.
#[test]
fn map_async_chunked_with_a_worker_killed_mid_chunk_fails_only_its_job() {
    const N: u64 = 120;
    for chunk in [0usize, 1, 7, 64] {
        let pool = shmproc::Pool::new(2).unwrap();
        let slot = Value::new(0u32).unwrap();
        let items = |park: u64| (0..N).map(|x| (x, park, slot.clone())).collect::<Vec<_>>();
        let bad = pool.map_async_chunked(park_in_chunk, items(PARK), chunk).unwrap();
        let good = pool.map_async_chunked(park_in_chunk, items(u64::MAX), chunk).unwrap();
        common::wait_for("the parked item to start", || slot.get().unwrap() != 0);
        let victim = slot.get().unwrap();
        // SAFETY: kill has no memory preconditions; `victim` is a worker of our pool, parked.
        assert_eq!(unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) }, 0);
        let want: Vec<u64> = (0..N).map(|x| x * 3).collect();
        match bad.get_timeout(T) {
            Err(shmproc::PoolGetTimeoutError::Failed(shmproc::PoolError::Task(e))) => assert_eq!(
                e,
                shmproc::TaskError::WorkerLost { pid: victim, signal: Some(9), index: PARK },
                "chunk {chunk}"
            ),
            other => panic!("chunk {chunk}: the job with the killed item gave {:?}", other.map(|v| v.len())),
        }
        assert_eq!(good.get_timeout(T).map_err(|e| e.to_string()), Ok(want.clone()), "chunk {chunk}");
        let again = pool.map_async_chunked(park_in_chunk, items(u64::MAX), chunk).unwrap();
        assert_eq!(again.get_timeout(T).map_err(|e| e.to_string()), Ok(want), "chunk {chunk}: after the kill");
        close_and_join(pool);
    }
}

/// Closes `pool` and joins it within a deadline (the test fails otherwise).
fn close_and_join(pool: shmproc::Pool) {
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = pool.join().map_err(|e| e.to_string());
        // Dropped here, before the test can end (its names go with it).
        drop(pool);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(T) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("pool.join() did not return within {T:?}"),
    }
    h.join().unwrap();
}

// ---- Array / Value: a writer killed with the lock held ----

/// Elements of the array under test.
const LEN: usize = 256;

shmproc::entry! {
    /// Writes round i into every element of `arr` under one guard, then
    /// `i` into `val` (one-shot `set`, or a guard's `update`, in turn),
    /// for i = 1, 2, ... until killed.
    fn write_rounds(args: (shmproc::Array<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (arr, val, started) = args;
        started.set();
        for i in 1u64.. {
            {
                let mut g = arr.get_lock().map_err(|e| e.to_string())?;
                for j in 0..LEN {
                    g.set(j, i);
                }
            }
            if i % 2 == 0 {
                val.set(i).map_err(|e| e.to_string())?;
            } else {
                val.get_lock().map_err(|e| e.to_string())?.update(|v| *v = i);
            }
        }
        Ok(())
    }
}

/// Whether `a` is one round's write cut short: rounds i then i - 1
/// (a prefix of the new round over the previous one), or all one round.
fn one_round_or_a_cut(a: &[u64]) -> bool {
    let (first, last) = (a[0], a[a.len() - 1]);
    let cut = a.iter().position(|&x| x != first).unwrap_or(a.len());
    a[cut..].iter().all(|&x| x == last) && (cut == a.len() || first == last + 1)
}

/// A writer killed at a random instant, often with the Array's lock held
/// mid-round (or the Value's). The repair path: `get_lock` gives either
/// the whole last round (killed outside the lock) or `OwnerDied` with the
/// round cut short, never anything else; after `make_consistent` and a
/// rewrite every form works again. The one-shot path: `to_vec` / `get`
/// give a whole round, or `OwnerDied` once and `NotRecoverable` from
/// then on for every form (guard forms too, timed or not), never a hang.
#[test]
fn array_and_value_writers_killed_with_the_lock_held_report_owner_died_then_repair_or_refuse() {
    use shmproc::LockError;
    let (mut died, mut clean) = (0, 0);
    for round in 0..rounds() * 4 {
        let arr = shmproc::Array::<u64>::new(LEN as u64).unwrap();
        let val = Value::new(0u64).unwrap();
        let started = Event::new().unwrap();
        let mut p = Process::new(write_rounds, (arr.clone(), val.clone(), started.clone())).with_daemon(true);
        start(&mut p, &started);
        killer(&p, 20).join().unwrap();
        reap_killed(&p);
        let repair = round % 2 == 0;
        if repair {
            match arr.get_lock() {
                Ok(g) => {
                    let a: Vec<u64> = (0..LEN).map(|j| g.get(j).unwrap()).collect();
                    assert!(a.iter().all(|&x| x == a[0]), "killed outside the lock, yet {a:?}");
                    clean += 1;
                }
                Err(LockError::OwnerDied(mut g)) => {
                    let a: Vec<u64> = (0..LEN).map(|j| g.get(j).unwrap()).collect();
                    assert!(one_round_or_a_cut(&a), "torn other than by a cut round: {a:?}");
                    assert!(!g.is_consistent());
                    for j in 0..LEN {
                        g.set(j, 7);
                    }
                    g.make_consistent();
                    died += 1;
                }
                Err(e) => panic!("{e}"),
            }
            let a = arr.to_vec().unwrap();
            assert!(a.iter().all(|&x| x == a[0]), "after the repair: {a:?}");
            arr.set(3, 9).unwrap();
            assert_eq!(arr.get(3).unwrap(), 9);
            assert!(arr.try_get_lock().is_ok());
            let v = match val.get_lock() {
                Ok(g) => g.value(),
                Err(LockError::OwnerDied(mut g)) => {
                    g.make_consistent();
                    g.value()
                }
                Err(e) => panic!("{e}"),
            };
            val.set(v + 1).unwrap();
            assert_eq!(val.get().unwrap(), v + 1);
        } else {
            match arr.to_vec() {
                Ok(a) => {
                    assert!(a.iter().all(|&x| x == a[0]), "killed outside the lock, yet {a:?}");
                    assert!(arr.get_lock().is_ok());
                    clean += 1;
                }
                Err(LockError::OwnerDied(())) => {
                    for _ in 0..2 {
                        assert!(matches!(arr.to_vec(), Err(LockError::NotRecoverable)));
                        assert!(matches!(arr.get(0), Err(shmproc::ArrayError::Lock(LockError::NotRecoverable))));
                        assert!(matches!(arr.set(0, 1), Err(shmproc::ArrayError::Lock(LockError::NotRecoverable))));
                        assert!(matches!(arr.get_lock(), Err(LockError::NotRecoverable)));
                        assert!(matches!(arr.try_get_lock(), Err(LockError::NotRecoverable)));
                        assert!(matches!(arr.get_lock_timeout(T), Err(LockError::NotRecoverable)));
                    }
                    died += 1;
                }
                Err(e) => panic!("{e}"),
            }
            match val.get() {
                Ok(_) => assert!(val.set(1).is_ok()),
                Err(LockError::OwnerDied(())) => {
                    assert!(matches!(val.get(), Err(LockError::NotRecoverable)));
                    assert!(matches!(val.get_lock(), Err(LockError::NotRecoverable)));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let names = [arr.name().to_owned(), val.name().to_owned()];
        drop((arr, val, p));
        for n in names {
            assert_no_segment_left(&n);
        }
    }
    eprintln!("writer died holding the Array lock in {died} rounds, outside it in {clean}");
}

// ---- exact: an unbounded queue at its memory limit, a consumer dead mid-get ----

shmproc::entry! {
    /// Claims the next get of an unbounded queue (in its oldest ring) and
    /// never finishes it; then hangs until killed.
    fn claim_get_and_hang(args: (Queue<u64>, Event)) -> Result<(), String> {
        let (q, claimed) = args;
        if !q.__claim_and_stop(true) {
            return Err("nothing to claim".into());
        }
        claimed.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// An unbounded queue filled to its memory limit (its puts never enter
/// the MPMC batch wait: at the limit a put waits for a ring to retire),
/// a producer blocked in `put`, a consumer that claims the first item and
/// is killed before it releases it: the producer is never stuck for good,
/// and items 1.. arrive exactly once and in order (item 0 died with the
/// consumer); the queue ends empty and leaves no segment. (The dead
/// claim is in the oldest ring, which retires once drained whether or not
/// its slot was released: this passes with the dead consumer's slot
/// repair disabled too. What it guards is the chain's own handling of the
/// claim: no hang at the limit, no item lost or repeated around it.)
#[test]
fn unbounded_queue_at_its_limit_with_a_consumer_killed_between_claim_and_release() {
    let q = Queue::<u64>::unbounded_with_limit(1 << 18).unwrap();
    let name = q.name().to_owned();
    let mut n = 0u64;
    while q.put_nowait(n).is_ok() {
        n += 1;
        assert!(n < 10_000_000, "no limit");
    }
    let extra = n;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in n..n + extra {
                q.put_timeout(i, T).unwrap_or_else(|e| panic!("producer stuck at {i}: {e:?}"));
            }
        })
    };
    let claimed = Event::new().unwrap();
    let mut p = Process::new(claim_get_and_hang, (q.clone(), claimed.clone())).with_daemon(true);
    start(&mut p, &claimed);
    std::thread::sleep(Duration::from_millis(20));
    p.kill().unwrap();
    reap_killed(&p);
    let end = Instant::now() + T;
    let mut next = 1;
    while next < n + extra {
        assert!(Instant::now() < end, "stuck at {next} of {}", n + extra);
        match q.get_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                assert_eq!(v, next, "out of order, lost or duplicated");
                next += 1;
            }
            Err(GetTimeoutError::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    producer.join().unwrap();
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.get_nowait(), Err(shmproc::TryGetError::Empty));
    drop((q, p));
    assert_no_segment_left(&name);
}

// ---- exact: JoinableQueue counts past consumers dead between claim and release ----

shmproc::entry! {
    /// Claims `n` gets of a JoinableQueue (one per thread) and never
    /// finishes them; then hangs until killed.
    fn claim_jq_gets_and_hang(args: (shmproc::JoinableQueue<u64>, u64, Event)) -> Result<(), String> {
        let (q, n, claimed) = args;
        claim_in_threads_and_hang(n, &claimed, move || q.__claim_and_stop(true))
    }
}

/// A full JoinableQueue (bounded, 64 and 48), a producer blocked in `put`
/// (its batch wait), `claims` gets claimed by a child killed before it
/// releases them: the producer goes on, every other item arrives once and
/// in order, and after a `task_done` for each of them exactly `claims`
/// tasks stay unfinished (the dead consumer's, as documented), so
/// `join_timeout` times out and one more `task_done` per claim lets `join`
/// return; a further `task_done` is refused.
#[test]
fn joinable_queue_put_waiting_past_consumers_dead_between_claim_and_release_leaves_their_tasks_unfinished() {
    for cap in [64u64, 48] {
        for claims in [1u64, 20] {
            let what = format!("cap {cap}, {claims} claim(s)");
            let q = shmproc::JoinableQueue::<u64>::new(cap).unwrap();
            let name = q.name().to_owned();
            for i in 0..cap {
                q.put_nowait(i).unwrap();
            }
            let extra = 2 * cap;
            let producer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in cap..cap + extra {
                        q.put_timeout(i, T).unwrap_or_else(|e| panic!("producer stuck at {i}: {e:?}"));
                    }
                })
            };
            let claimed = Event::new().unwrap();
            let mut p = Process::new(claim_jq_gets_and_hang, (q.clone(), claims, claimed.clone())).with_daemon(true);
            start(&mut p, &claimed);
            p.kill().unwrap();
            reap_killed(&p);
            let end = Instant::now() + T;
            let mut next = claims;
            while next < cap + extra {
                assert!(Instant::now() < end, "{what}: stuck at {next}");
                match q.get_timeout(Duration::from_millis(20)) {
                    Ok(v) => {
                        assert_eq!(v, next, "{what}: out of order, lost or duplicated");
                        q.task_done().unwrap();
                        next += 1;
                    }
                    Err(GetTimeoutError::TimedOut) => {}
                    Err(e) => panic!("{what}: {e}"),
                }
            }
            producer.join().unwrap();
            assert_eq!(q.unfinished_tasks(), claims, "{what}");
            assert!(!q.join_timeout(Duration::from_millis(5)), "{what}: join returned with tasks unfinished");
            for _ in 0..claims {
                q.task_done().unwrap();
            }
            assert!(q.join_timeout(T), "{what}");
            assert!(q.task_done().is_err(), "{what}: task_done past zero");
            drop((q, p));
            assert_no_segment_left(&name);
        }
    }
}

/// Two producers (one of each wait strategy) blocked in `push` on a full
/// ring while `claims` pops are claimed by a child killed before their
/// release: together they reuse the dead slots with nobody consuming,
/// then each one's stream arrives once and in order.
#[test]
fn two_mpmc_puts_in_their_batch_wait_share_the_slots_of_dead_consumers() {
    for cap in [64u64, 48] {
        for claims in [1u64, 20] {
            let what = format!("cap {cap}, {claims} claim(s)");
            let q = MpmcQueue::<u64>::new(cap).unwrap();
            let name = q.name().to_owned();
            for i in 0..cap {
                q.try_push((2 << 32) | i).unwrap();
            }
            let per = 2 * cap;
            let done = Arc::new(AtomicU64::new(0));
            let producers: Vec<_> = (0..2u64)
                .map(|tag| {
                    let (q, done) = (q.clone().with_wait(strategy(tag == 1)), done.clone());
                    std::thread::spawn(move || {
                        for i in 0..per {
                            q.push_timeout((tag << 32) | i, T)
                                .unwrap_or_else(|e| panic!("producer {tag} stuck at {i}: {e:?}"));
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            let claimed = Event::new().unwrap();
            let mut p = Process::new(claim_pops_and_hang, (q.clone(), claims, claimed.clone())).with_daemon(true);
            start(&mut p, &claimed);
            p.kill().unwrap();
            reap_killed(&p);
            // Nobody consumes: the producers fill the freed and repaired slots.
            common::wait_for("the producers to reuse the dead claimants' slots", || {
                done.load(Ordering::SeqCst) == claims
            });
            assert_eq!(q.len() as u64, cap, "{what}");
            let end = Instant::now() + T;
            let mut next = [0u64; 2];
            let mut first = claims;
            while next != [per, per] || first < cap {
                assert!(Instant::now() < end, "{what}: stuck at {next:?}, {first}");
                match q.pop_timeout(Duration::from_millis(20)) {
                    Ok(v) => {
                        let (tag, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                        if tag == 2 {
                            assert_eq!(i, first, "{what}: the first fill out of order");
                            first += 1;
                        } else {
                            assert_eq!(i, next[tag], "{what}: producer {tag} out of order, lost or duplicated");
                            next[tag] += 1;
                        }
                    }
                    Err(GetTimeoutError::TimedOut) => {}
                    Err(e) => panic!("{what}: {e}"),
                }
            }
            for h in producers {
                h.join().unwrap();
            }
            assert!(q.is_empty(), "{what}");
            drop((q, p));
            assert_no_segment_left(&name);
        }
    }
}
