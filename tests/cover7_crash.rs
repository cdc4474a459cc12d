//! kill -9 inside the calls the earlier crash tests left out: the
//! borrowed `Queue<String>` forms with timeouts and without waiting
//! (`put_ref_timeout`, `put_ref_nowait`, `get_into_timeout`,
//! `get_into_nowait`, bounded and unbounded), a `JoinableQueue` joiner
//! killed inside `join` / `join_timeout`, `BoundedSemaphore` holders
//! killed; and the "wake reaches a sleeper killed before it runs" rounds
//! (see `cover6_crash::woken_then_killed`) for the one-sleeper wakes of
//! the queues (bounded get and put, unbounded get), `BoundedSemaphore`,
//! and for the wake-all objects (`Event`, `Barrier`, `JoinableQueue::join`)
//! as a guard.
//!
//! Rounds are few by default (the suite's time budget); more with
//! `SHMPROC_TEST_FULL=1 cargo test --release --test cover7_crash`.

mod common;

use std::time::{Duration, Instant};

use common::crash::{
    assert_no_segment_left, kill_within, killer, pin_to, rand_below, reap_killed, short, start, this_cpu, unpin,
};
use shmproc::queue::{ByteQueue, SpscQueue};
use shmproc::{
    Barrier, BoundedSemaphore, Event, GetTimeoutError, JoinableQueue, Process, PutTimeoutError, Queue, TryGetError,
    TryPutError, Value,
};

const T: Duration = Duration::from_secs(30);

fn rounds() -> u64 {
    common::count(3, 40)
}

/// Item `i` of a string stream: its number (8 digits), then text whose
/// length and content depend on it (0..400 bytes, so on both sides of the
/// small-frame bound; every third has non-ASCII characters).
fn item(i: u64) -> String {
    let mut s = format!("{i:08}");
    let fill = if i.is_multiple_of(3) { 'é' } else { 'a' };
    s.extend(std::iter::repeat_n(fill, (i * 37 % 400) as usize / fill.len_utf8()));
    s
}

/// The number of an [`item`], or an error naming a torn one.
fn item_number(s: &str) -> Result<u64, String> {
    let i: u64 = s.get(..8).and_then(|d| d.parse().ok()).ok_or_else(|| format!("torn item {s:?}"))?;
    if s == item(i) { Ok(i) } else { Err(format!("torn item {i} ({} bytes)", s.len())) }
}

// ---- Queue<String> borrowed forms: put_ref_timeout / put_ref_nowait ----

shmproc::entry! {
    /// Puts items 0.. from one reused `String` with `put_ref_timeout`
    /// (short random timeouts) and, every third, `put_ref_nowait`,
    /// retrying the same item when it did not go in, until killed.
    fn put_ref_loop(args: (Queue<String>, Event)) -> Result<(), String> {
        let (q, started) = args;
        started.set();
        let (mut i, mut s) = (0u64, item(0));
        loop {
            let went = if i % 3 == 2 {
                match q.put_ref_nowait(&s) {
                    Ok(()) => true,
                    Err(TryPutError::Full(())) => false,
                    Err(e) => return Err(e.to_string()),
                }
            } else {
                match q.put_ref_timeout(&s, short()) {
                    Ok(()) => true,
                    Err(PutTimeoutError::TimedOut(())) => false,
                    Err(e) => return Err(e.to_string()),
                }
            };
            if went {
                i += 1;
                s.clear();
                s.push_str(&item(i));
            }
        }
    }
}

/// One `get_into_timeout` (`nowait` for `get_into_nowait`) into `out`:
/// true if an item came, false if none did.
fn get_into_either(q: &Queue<String>, out: &mut String, nowait: bool, timeout: Duration) -> Result<bool, String> {
    if nowait {
        match q.get_into_nowait(out) {
            Ok(()) => Ok(true),
            Err(TryGetError::Empty) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    } else {
        match q.get_into_timeout(out, timeout) {
            Ok(()) => Ok(true),
            Err(GetTimeoutError::TimedOut) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A producer killed inside `put_ref_timeout` / `put_ref_nowait` (a
/// bounded queue kept full, so it often sleeps and times out or is
/// refused; an unbounded one): the consumer, reading with
/// `get_into_timeout` and `get_into_nowait` into one reused `String`, gets
/// whole items, a hole-free prefix, then nothing; qsize is exact; the
/// queue still works; no segment is left.
#[test]
fn queue_string_producer_killed_inside_put_ref_timeout_and_nowait_leaves_a_clean_prefix() {
    for cap in [2u64, 0] {
        for _round in 0..rounds() {
            let q = Queue::<String>::new(cap).unwrap();
            let name = q.name().to_owned();
            let started = Event::new().unwrap();
            let mut victim = Process::new(put_ref_loop, (q.clone(), started.clone())).with_daemon(true);
            start(&mut victim, &started);
            let kill = killer(&victim, 20);
            let (mut next, mut reaped, mut out) = (0u64, false, String::new());
            let end = Instant::now() + T;
            for attempt in 0u64.. {
                assert!(Instant::now() < end, "stuck at {next} (cap {cap})");
                if next.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(300));
                }
                let nowait = attempt % 4 == 1;
                if get_into_either(&q, &mut out, nowait, Duration::from_millis(20)).unwrap() {
                    assert_eq!(item_number(&out).unwrap(), next, "hole or duplicate (cap {cap})");
                    next += 1;
                } else if kill.is_finished() && reaped && !nowait {
                    break;
                } else if kill.is_finished() && !reaped {
                    reap_killed(&victim);
                    reaped = true;
                }
            }
            kill.join().unwrap();
            assert_eq!(q.qsize(), 0, "cap {cap}");
            q.put_ref_timeout(&item(7), T).unwrap();
            assert_eq!(q.qsize(), 1);
            q.get_into_timeout(&mut out, T).unwrap();
            assert_eq!(out, item(7));
            drop((q, victim));
            assert_no_segment_left(&name);
        }
    }
}

// ---- Queue<String> borrowed forms: get_into_timeout / get_into_nowait ----

shmproc::entry! {
    /// Gets into one reused `String` with `get_into_timeout` (short random
    /// timeouts) and, every third attempt, `get_into_nowait`, checking each
    /// item whole and in order and recording how many it got, until killed.
    fn get_into_loop(args: (Queue<String>, Value<u64>, Event)) -> Result<(), String> {
        let (q, got, started) = args;
        started.set();
        let (mut n, mut last, mut out) = (0u64, None::<u64>, String::new());
        for attempt in 0u64.. {
            if get_into_either(&q, &mut out, attempt % 3 == 2, short())? {
                let v = item_number(&out)?;
                if last.is_some_and(|l| l >= v) {
                    return Err(format!("{v} after {last:?}"));
                }
                last = Some(v);
                n += 1;
                got.set(n).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// A consumer killed inside `get_into_timeout` / `get_into_nowait` (often
/// asleep on an empty queue, the producer trickling with
/// `put_ref_timeout`): at most its own item is unaccounted for, nothing is
/// duplicated or torn, the survivor's items come in order, qsize is exact.
#[test]
fn queue_string_consumer_killed_inside_get_into_timeout_and_nowait_loses_at_most_its_own_item() {
    let n = 1_500u64;
    for cap in [2u64, 0] {
        for _round in 0..rounds() {
            let q = Queue::<String>::new(cap).unwrap();
            let name = q.name().to_owned();
            let got = Value::new(0u64).unwrap();
            let started = Event::new().unwrap();
            let mut victim = Process::new(get_into_loop, (q.clone(), got.clone(), started.clone())).with_daemon(true);
            start(&mut victim, &started);
            let producer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut s = String::new();
                    for i in 0..n {
                        if i % 64 == 0 {
                            std::thread::sleep(Duration::from_micros(500));
                        }
                        s.clear();
                        s.push_str(&item(i));
                        loop {
                            match q.put_ref_timeout(&s, Duration::from_millis(5)) {
                                Ok(()) => break,
                                Err(PutTimeoutError::TimedOut(())) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            };
            kill_within(&victim, 20);
            let (mut mine, mut last, mut out) = (0u64, None::<u64>, String::new());
            let end = Instant::now() + T;
            for attempt in 0u64.. {
                assert!(Instant::now() < end, "stuck after {mine} (cap {cap})");
                if get_into_either(&q, &mut out, attempt % 5 == 4, Duration::from_millis(20)).unwrap() {
                    let v = item_number(&out).unwrap();
                    assert!(v < n, "garbage {v}");
                    assert!(last.is_none_or(|l| l < v), "{v} after {last:?}");
                    last = Some(v);
                    mine += 1;
                } else if producer.is_finished() && q.empty() {
                    break;
                }
            }
            producer.join().unwrap();
            let theirs = common::read_u64(&got);
            assert!(mine + theirs <= n, "duplicates: {mine} + {theirs} > {n} (cap {cap})");
            assert!(mine + theirs + 1 >= n, "lost more than the dead consumer's item: {mine} + {theirs} of {n}");
            assert_eq!(q.qsize(), 0);
            q.put_ref_timeout(&item(9), T).unwrap();
            q.get_into_timeout(&mut out, T).unwrap();
            assert_eq!(out, item(9));
            drop((q, victim));
            assert_no_segment_left(&name);
        }
    }
}

// ---- JoinableQueue: joiners killed inside join / join_timeout ----

shmproc::entry! {
    /// `forever`: one untimed `join` (the queue never finishes before the
    /// kill); else `join_timeout` with short random timeouts in a loop.
    fn joiner(args: (JoinableQueue<u64>, bool, Event)) -> Result<(), String> {
        let (q, forever, started) = args;
        started.set();
        if forever {
            q.join();
            return Err("join returned while tasks were unfinished".into());
        }
        loop {
            if q.join_timeout(short()) {
                return Err("join_timeout returned true while tasks were unfinished".into());
            }
        }
    }
}

/// Joiners killed inside `join` (asleep) and `join_timeout` (anywhere in
/// its registration, sleep or timed-out return): the unfinished count is
/// exact (the items put), a live `join` beside them still returns once the
/// last `task_done` comes, the count ends at 0 and one `task_done` more is
/// refused; the queue still joins afterwards.
#[test]
fn joinable_queue_joiners_killed_inside_join_and_join_timeout_leave_exact_counts() {
    for cap in [4u64, 0] {
        for _round in 0..rounds() {
            let q = JoinableQueue::<u64>::new(cap).unwrap();
            let name = q.name().to_owned();
            for i in 0..3 {
                q.put(i).unwrap();
            }
            let started = Event::new().unwrap();
            let mut victims: Vec<Process> = [true, false, false]
                .into_iter()
                .map(|forever| {
                    let mut p = Process::new(joiner, (q.clone(), forever, started.clone())).with_daemon(true);
                    start(&mut p, &started);
                    p
                })
                .collect();
            if rand_below(2) == 0 {
                common::wait_until_asleep(victims[0].pid().unwrap(), 1);
            }
            for v in &mut victims {
                kill_within(v, 10);
            }
            assert_eq!(q.unfinished_tasks(), 3, "cap {cap}");
            let q2 = q.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let live = std::thread::spawn(move || {
                tx.send(common::gettid()).unwrap();
                q2.join();
            });
            let tid = rx.recv().unwrap();
            common::wait_for("the live joiner asleep", || common::thread_in_futex(tid));
            for i in 0..3 {
                assert_eq!(q.get_timeout(T), Ok(i));
                assert!(!live.is_finished(), "join returned with {} tasks unfinished", 3 - i);
                q.task_done().unwrap();
            }
            let end = Instant::now() + T;
            while !live.is_finished() {
                assert!(Instant::now() < end, "the live joiner never returned (cap {cap})");
                std::thread::sleep(Duration::from_millis(2));
            }
            live.join().unwrap();
            assert_eq!(q.unfinished_tasks(), 0);
            assert!(q.task_done().is_err(), "a task_done beyond the items put was accepted");
            q.put(5).unwrap();
            assert!(!q.join_timeout(Duration::from_millis(1)));
            assert_eq!(q.get_timeout(T), Ok(5));
            q.task_done().unwrap();
            assert!(q.join_timeout(T));
            drop((q, victims));
            assert_no_segment_left(&name);
        }
    }
}

// ---- BoundedSemaphore: holders killed ----

shmproc::entry! {
    /// acquire_timeout (short), and if it got a unit, release it; a release
    /// refused (past the bound) fails the child.
    fn bounded_loop(args: (BoundedSemaphore, Event)) -> Result<(), String> {
        let (sem, started) = args;
        started.set();
        loop {
            if sem.acquire_timeout(short()) {
                sem.release().map_err(|e| format!("release of a unit it held refused: {e}"))?;
            }
        }
    }
}

/// Processes killed inside `BoundedSemaphore::acquire_timeout` / `release`
/// (each may die holding a unit, which is lost as documented): the value
/// never passes the bound, the parent may release for the dead at most one
/// unit per victim, the release past the bound is refused (the value stays
/// at the bound), and exactly `bound` units can then be taken.
#[test]
fn bounded_semaphore_holders_killed_then_releases_past_the_bound_are_refused() {
    const BOUND: u32 = 2;
    for _round in 0..rounds() {
        let sem = BoundedSemaphore::new(BOUND).unwrap();
        let started = Event::new().unwrap();
        let mut victims: Vec<Process> = (0..3)
            .map(|_| {
                let mut p = Process::new(bounded_loop, (sem.clone(), started.clone())).with_daemon(true);
                start(&mut p, &started);
                p
            })
            .collect();
        for v in &mut victims {
            kill_within(v, 10);
            assert!(sem.get_value() <= BOUND, "value {} past the bound", sem.get_value());
        }
        let left = sem.get_value();
        let mut released = 0;
        while sem.release().is_ok() {
            released += 1;
            assert!(released <= BOUND, "released {released} units past the value {left} left");
        }
        assert_eq!(sem.get_value(), BOUND, "a release refused below the bound");
        assert_eq!(left + released, BOUND);
        let err = sem.release().unwrap_err();
        assert_eq!(sem.get_value(), BOUND, "a refused release changed the value ({err})");
        for _ in 0..BOUND {
            assert!(sem.try_acquire());
        }
        assert!(!sem.try_acquire(), "more units than the bound");
        sem.release_n(BOUND).unwrap();
        let name = sem.name().to_owned();
        drop((sem, victims));
        assert_no_segment_left(&name);
    }
}

// ---- a sleeper woken, then killed before it runs ----

/// What the sleepers of [`woken_then_killed`] sleep on: a bounded queue
/// (capacity 2, empty), a full bounded queue (capacity 1, holding 0), an
/// unbounded queue, a `BoundedSemaphore` at 0 (bound 1), an `Event`, a
/// `Barrier` of 3 and a `JoinableQueue` with one task unfinished.
type SleepOn = (Queue<u64>, Queue<u64>, Queue<u64>, BoundedSemaphore, Event, Barrier, JoinableQueue<u64>);

/// One blocking call on `on` as `what` names it (the victim's and the live
/// sleeper's); an error if it returned otherwise than it should.
fn sleep_on(what: &str, on: &SleepOn, mine: u64) -> Result<(), String> {
    let (get, full, unbounded, sem, event, barrier, joinable) = on;
    match what {
        "get" => common::ensure(get.get() == Ok(1), "get returned no 1"),
        "put" => full.put(mine).map_err(|e| e.to_string()),
        "unbounded get" => common::ensure(unbounded.get() == Ok(1), "get returned no 1"),
        "bounded semaphore" => {
            sem.acquire();
            Ok(())
        }
        "event" => {
            event.wait();
            Ok(())
        }
        "barrier" => barrier.wait().map(drop).map_err(|e| e.to_string()),
        "join" => {
            joinable.join();
            Ok(())
        }
        _ => Err(format!("unknown sleeper {what}")),
    }
}

shmproc::entry! {
    /// Pinned to `cpu` at the idle scheduling class (it never preempts the
    /// parent there), sleeps in the one blocking call `what` names.
    fn idle_sleeper(args: (String, usize, SleepOn, Event)) -> Result<(), String> {
        let (what, cpu, on, started) = args;
        pin_to(cpu);
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system call on the calling thread with a valid param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err("sched_setscheduler(SCHED_IDLE) refused".into());
        }
        started.set();
        sleep_on(&what, &on, 100)?;
        // Woken: a parent that killed us in time never sees this.
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    }
}

/// One round, as `cover6_crash::woken_then_killed`: a victim process and
/// then a live thread asleep in the same blocking call (`what`, see
/// [`sleep_on`]); the parent, on the victim's CPU (where the victim, at
/// the idle scheduling class, cannot run before it), makes the one change
/// that wakes one sleeper (a put, a get from the full queue, a release) or
/// all (a set, the last barrier arrival, the last `task_done`) and kills
/// the victim at once. The futex queue is FIFO, so a one-sleeper wake goes
/// to the victim, which dies before it can act on it. The live sleeper, in
/// an untimed call as a program would wait, must still return, and the
/// object's state must be exact afterwards.
fn woken_then_killed(what: &str) {
    let on: SleepOn = (
        Queue::new(2).unwrap(),
        Queue::new(1).unwrap(),
        Queue::new(0).unwrap(),
        BoundedSemaphore::new(1).unwrap(),
        Event::new().unwrap(),
        Barrier::new(3).unwrap(),
        JoinableQueue::new(2).unwrap(),
    );
    let (get, full, unbounded, sem, event, barrier, joinable) = &on;
    full.put(0).unwrap();
    sem.acquire();
    joinable.put(0).unwrap();
    assert_eq!(joinable.get(), Ok(0));
    let started = Event::new().unwrap();
    let cpu = this_cpu();
    pin_to(cpu);
    let mut victim = Process::new(idle_sleeper, (what.to_string(), cpu, on.clone(), started.clone())).with_daemon(true);
    victim.start().unwrap();
    assert!(started.wait_timeout(T), "victim never started");
    let vpid = victim.pid().unwrap();
    common::wait_for("the victim asleep", || common::main_thread_in_futex(vpid));
    let (tx, rx) = std::sync::mpsc::channel();
    let live = {
        let (on, what) = (on.clone(), what.to_string());
        std::thread::spawn(move || {
            unpin();
            tx.send(common::gettid()).unwrap();
            sleep_on(&what, &on, 1)
        })
    };
    let tid = rx.recv().unwrap();
    common::wait_for("the live sleeper asleep", || common::thread_in_futex(tid));
    match what {
        "get" => get.put(1).unwrap(),
        "put" => assert_eq!(full.get(), Ok(0)),
        "unbounded get" => unbounded.put(1).unwrap(),
        "bounded semaphore" => sem.release().unwrap(),
        "event" => event.set(),
        "barrier" => drop(barrier.wait().unwrap()),
        _ => joinable.task_done().unwrap(),
    }
    victim.kill().unwrap();
    unpin();
    reap_killed(&victim);
    let end = Instant::now() + T;
    while !live.is_finished() {
        assert!(Instant::now() < end, "{what}: the live sleeper never woke (the wake went to the killed one)");
        std::thread::sleep(Duration::from_millis(2));
    }
    live.join().unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
    match what {
        "get" => assert_eq!(get.qsize(), 0),
        "put" => {
            assert_eq!(full.qsize(), 1, "the live producer's item, not the dead one's");
            assert_eq!(full.get_nowait(), Ok(1));
        }
        "unbounded get" => assert_eq!(unbounded.qsize(), 0),
        "bounded semaphore" => assert_eq!(sem.get_value(), 0),
        "barrier" => assert_eq!(barrier.n_waiting(), 0),
        "join" => assert_eq!(joinable.unfinished_tasks(), 0),
        _ => assert!(event.is_set()),
    }
}

common::crash::woken_then_killed_tests! {
    /// A bounded `Queue::put` whose one wake reaches a consumer killed
    /// before it runs: a live consumer asleep in `get` still gets the item.
    queue_put_whose_wake_reaches_a_killed_consumer_still_reaches_a_live_one => "get";

    /// A `get` from a full bounded `Queue` whose one wake reaches a
    /// producer killed before it runs: a live producer asleep in `put`
    /// still puts (its item, not the dead one's, is in the queue).
    queue_get_whose_wake_reaches_a_killed_producer_still_reaches_a_live_one => "put";

    /// The same as the first for an unbounded `Queue`.
    unbounded_queue_put_whose_wake_reaches_a_killed_consumer_still_reaches_a_live_one => "unbounded get";

    /// A `BoundedSemaphore::release` whose one wake reaches an acquirer
    /// killed before it runs: a live acquirer still gets the unit.
    bounded_semaphore_release_whose_wake_reaches_a_killed_acquirer_still_reaches_a_live_one => "bounded semaphore";

    /// `Event::set` (wakes all) with a waiter killed before it runs: a
    /// live waiter returns.
    event_set_with_a_waiter_killed_before_it_runs_still_wakes_a_live_one => "event";

    /// The last arrival at a `Barrier` (wakes all) with a party killed
    /// before it runs: the live party returns, nobody is left waiting.
    barrier_last_arrival_with_a_party_killed_before_it_runs_still_releases_a_live_one => "barrier";

    /// The last `task_done` of a `JoinableQueue` (wakes the joiners) with a
    /// joiner killed before it runs: a live `join` returns.
    joinable_queue_last_task_done_with_a_joiner_killed_before_it_runs_still_wakes_a_live_one => "join";
}

// ---- a waker killed between its state change and its futex wake ----

/// Makes the kernel kill this process (`SECCOMP_RET_KILL_PROCESS`, as a
/// `kill -9` at that instruction) when the calling thread next enters a
/// `FUTEX_WAKE`: the state change a waker makes before its wake is done,
/// the wake is not.
fn die_at_next_futex_wake() -> Result<(), String> {
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const KILL_PROCESS: u32 = 0x8000_0000;
    const ALLOW: u32 = 0x7fff_0000;
    const FUTEX_WAKE: u32 = 1;
    let f = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let prog = [
        // seccomp_data: nr at 0, arch at 4, ip at 8, args at 16 (8 bytes each).
        f(LD_W_ABS, 0, 0, 0),
        f(JEQ_K, 0, 3, libc::SYS_futex as u32),
        f(LD_W_ABS, 0, 0, 16 + 8), // the low half of args[1], the op
        f(AND_K, 0, 0, 0x7f),      // without FUTEX_PRIVATE_FLAG / CLOCK_REALTIME
        f(JEQ_K, 1, 0, FUTEX_WAKE),
        f(RET_K, 0, 0, ALLOW),
        f(RET_K, 0, 0, KILL_PROCESS),
    ];
    let fprog = SockFprog { len: prog.len() as u16, filter: prog.as_ptr() };
    // SAFETY: prctl with integer arguments; then with a pointer to a filter
    // program that lives across the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err("PR_SET_NO_NEW_PRIVS refused".into());
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const SockFprog) != 0 {
            return Err(format!("PR_SET_SECCOMP refused: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// What [`killed_at_wake`] wakes: an `Event`, a `Barrier` of 3, a
/// `Semaphore`, a `Condition`, a bounded queue, a `JoinableQueue` with
/// one task unfinished, a `Lock` (held by the waker), an `SpscQueue` and a
/// `ByteQueue` (the rings of `Pipe`).
type WakeOn = (
    (Event, Barrier, shmproc::Semaphore, shmproc::Condition),
    (Queue<u64>, JoinableQueue<u64>, shmproc::Lock),
    (SpscQueue<u64>, ByteQueue),
);

shmproc::entry! {
    /// Makes the change `what` names on `on`, dying at its futex wake.
    fn waker_dies_at_wake(args: (String, WakeOn, Event)) -> Result<(), String> {
        let (what, ((event, barrier, sem, cond), (q, joinable, lock), (spsc, bytes)), started) = args;
        let held = (what == "lock").then(|| lock.lock().map_err(|e| e.to_string())).transpose()?;
        let mut spsc_tx = (what == "spsc").then(|| spsc.producer().map_err(|e| e.to_string())).transpose()?;
        let mut bytes_tx = (what == "bytes").then(|| bytes.producer().map_err(|e| e.to_string())).transpose()?;
        started.set();
        // Go on only once the parent says its sleepers are asleep: it
        // clears `started`, which may happen before this line runs (a
        // loaded machine; waiting for the flag to be set, as this once
        // did, then waited for a set that never came: "never told to go").
        let end = std::time::Instant::now() + T;
        while started.is_set() {
            if std::time::Instant::now() > end {
                return Err("never told to go".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        die_at_next_futex_wake()?;
        match what.as_str() {
            "event" => event.set(),
            "barrier" => drop(barrier.wait()),
            "semaphore" => sem.release().map_err(|e| e.to_string())?,
            "condition" => cond.notify(&cond.lock().map_err(|e| e.to_string())?, 1),
            "queue" => q.put(1).map_err(|e| e.to_string())?,
            "join" => joinable.task_done().map_err(|e| e.to_string())?,
            "spsc" => spsc_tx.as_mut().expect("claimed").push(1).map_err(|e| e.to_string())?,
            "bytes" => bytes_tx.as_mut().expect("claimed").send(&[1]).map_err(|e| e.to_string())?,
            _ => drop(held),
        }
        Err(format!("{what}: made its change without a futex wake (no sleeper seen)"))
    }
}

/// One round: live threads asleep in an untimed blocking call on an
/// object, a child process makes the change that wakes them and is killed
/// by the kernel as it enters the futex wake (after the change, before the
/// wake: a `kill -9` at that instruction). The sleepers must still return.
fn killed_at_wake(what: &str) {
    let on: WakeOn = (
        (
            Event::new().unwrap(),
            Barrier::new(3).unwrap(),
            shmproc::Semaphore::new(0).unwrap(),
            shmproc::Condition::new().unwrap(),
        ),
        (Queue::new(2).unwrap(), JoinableQueue::new(2).unwrap(), shmproc::Lock::new().unwrap()),
        (SpscQueue::new(4).unwrap(), ByteQueue::new(1024, 64).unwrap()),
    );
    on.1.1.put(0).unwrap();
    assert_eq!(on.1.1.get(), Ok(0));
    let started = Event::new().unwrap();
    let mut waker = Process::new(waker_dies_at_wake, (what.to_string(), on.clone(), started.clone())).with_daemon(true);
    start(&mut waker, &started);
    let sleepers = if what == "barrier" { 2 } else { 1 };
    let live: Vec<_> = (0..sleepers)
        .map(|_| {
            let (on, what) = (on.clone(), what.to_string());
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                tx.send(common::gettid()).unwrap();
                let ((event, barrier, sem, cond), (q, joinable, lock), (spsc, bytes)) = &on;
                match what.as_str() {
                    "event" => event.wait(),
                    "barrier" => drop(barrier.wait().unwrap()),
                    "semaphore" => sem.acquire(),
                    // The waker dies holding the condition's lock: the
                    // live waiter returns with `OwnerDied` (it has the lock).
                    "condition" => {
                        let mut g = cond.lock().unwrap();
                        if let Err(e) = cond.wait(&mut g) {
                            assert!(matches!(e, shmproc::LockError::OwnerDied(_)), "{e}");
                        }
                    }
                    "queue" => assert_eq!(q.get(), Ok(1)),
                    "join" => joinable.join(),
                    "spsc" => assert_eq!(spsc.consumer().unwrap().pop(), Ok(1)),
                    "bytes" => assert_eq!(bytes.consumer().unwrap().recv(), Ok(vec![1])),
                    _ => drop(lock.lock()),
                }
            });
            let tid = rx.recv().unwrap();
            common::wait_for("the live sleeper asleep", || common::thread_in_futex(tid) || t.is_finished());
            t
        })
        .collect();
    started.clear();
    match common::join(&waker) {
        Err(shmproc::ProcessError::Signaled { signal, .. }) if signal == libc::SIGSYS => {}
        other => panic!("{what}: the waker was not killed at its wake but ended with {other:?}"),
    }
    let end = Instant::now() + T;
    for t in live {
        while !t.is_finished() {
            assert!(Instant::now() < end, "{what}: a live sleeper never woke (its waker died at the wake)");
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().unwrap();
    }
}

/// One test per object: `name => what` (see [`killed_at_wake`]).
macro_rules! killed_at_wake_tests {
    ($($(#[$attr:meta])* $name:ident => $what:literal;)*) => {$(
        $(#[$attr])*
        #[test]
        fn $name() {
            killed_at_wake($what);
        }
    )*};
}

killed_at_wake_tests! {
    /// `Event::set` killed after setting the flag, before its wake: a live
    /// waiter must still see the flag and return.
    event_setter_killed_between_set_and_wake_still_releases_a_live_waiter => "event";

    /// The last arrival at a `Barrier` killed after ending the generation,
    /// before its wake: the live parties must still pass.
    barrier_last_arrival_killed_between_release_and_wake_still_releases_live_parties => "barrier";

    /// `Semaphore::release` killed after adding the unit, before its wake.
    semaphore_releaser_killed_between_release_and_wake_still_releases_a_live_acquirer => "semaphore";

    /// `Condition::notify(1)` killed after counting the notify, before its
    /// wake (holding the condition's lock: the waiter returns with it,
    /// marked `OwnerDied`).
    condition_notifier_killed_between_notify_and_wake_still_releases_a_live_waiter => "condition";

    /// `Queue::put` killed after publishing the item, before its wake.
    queue_producer_killed_between_put_and_wake_still_releases_a_live_consumer => "queue";

    /// The last `task_done` killed after the count reached 0, before its wake.
    joinable_queue_last_task_done_killed_before_its_wake_still_releases_a_live_joiner => "join";

    /// `SpscQueue` push killed after publishing, before its wake.
    spsc_producer_killed_between_push_and_wake_still_releases_the_consumer => "spsc";

    /// `ByteQueue` send (a `Pipe` direction) killed after publishing the
    /// frame, before its wake.
    byte_queue_producer_killed_between_send_and_wake_still_releases_the_consumer => "bytes";

    /// `Lock` unlock killed after freeing the word, before its wake.
    lock_unlock_killed_before_its_wake_still_releases_a_live_locker => "lock";
}

// ---- Pool: a worker killed at its first futex wake after a task ----

shmproc::task! {
    /// Returns `x * 3`, with the worker set to die at its next futex wake
    /// (its result's wake of the manager, or a later one).
    fn triple_then_die_at_wake(x: u64) -> u64 {
        die_at_next_futex_wake().expect("seccomp filter");
        x * 3
    }
}

shmproc::task! { fn triple_and_pid(x: u64) -> (u64, u32) { (x * 3, std::process::id()) } }

/// A pool worker that runs a task and is killed by the kernel as it
/// enters its next futex wake (after writing its result, often the wake of
/// a sleeping manager): the call returns (the result, or `WorkerLost` for
/// that task), the pool replaces the worker and goes on, and it closes
/// and joins. The manager is the only sleeper on the words workers wake
/// (`Ctl::bump`), so this is the pool's "waker killed at its wake" case.
#[test]
fn pool_worker_killed_at_its_wake_after_a_task_still_answers_and_goes_on() {
    let pool = shmproc::Pool::new(1).unwrap();
    let worker = |round| match pool.apply_async(triple_and_pid, 7).unwrap().get_timeout(T) {
        Ok((v, pid)) => {
            assert_eq!(v, 21);
            pid
        }
        Err(e) => panic!("round {round}: the pool did not go on: {e}"),
    };
    for round in 0..rounds() {
        let before = worker(round);
        // Let the manager go idle (asleep) first, so the result wakes it.
        std::thread::sleep(Duration::from_millis(50));
        match pool.apply_async(triple_then_die_at_wake, round).unwrap().get_timeout(T) {
            Ok(v) => {
                assert_eq!(v, round * 3);
                eprintln!("round {round}: the result came (the worker died at its wake or later)");
            }
            Err(shmproc::pool::GetTimeoutError::Failed(shmproc::PoolError::Task(shmproc::TaskError::WorkerLost {
                signal,
                ..
            }))) => {
                assert_eq!(signal, Some(libc::SIGSYS), "round {round}");
                eprintln!("round {round}: the worker died before its result was taken (WorkerLost)");
            }
            Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("round {round}: no answer within {T:?}"),
            Err(e) => panic!("round {round}: {e}"),
        }
        // Diagnostic only: the worker wakes nobody while the manager is
        // busy, and then dies at a later wake (or not before this task).
        eprintln!("round {round}: worker replaced: {}", worker(round) != before);
    }
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(pool.join()).unwrap());
    rx.recv_timeout(T).expect("pool.join() did not return").unwrap();
}
