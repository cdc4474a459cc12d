//! `shmproc::wait` on many objects: readiness of every kind, timeouts,
//! real processes (including SIGKILL), wake-ups not stolen from blocked
//! callers, and a waiter that uses no CPU (read from /proc).

mod common;

use std::time::{Duration, Instant};

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{Event, Process, Queue, Semaphore, WaitError, Waitable, wait};

use common::DEADLINE;

fn indices(objects: &mut [&mut dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    wait(objects, timeout).unwrap().iter().collect()
}

/// Whether this run forces `wait`'s fallback for kernels without
/// `futex_waitv` (see `the_fallback_without_futex_waitv_works_too`).
fn fallback() -> bool {
    std::env::var_os("SHMPROC_WAITV_FALLBACK").is_some()
}

/// Whether thread `tid` of this process sleeps in `wait` (in `futex_waitv`;
/// in a futex wait under the fallback).
fn asleep_in_wait(tid: u32) -> bool {
    if fallback() { common::thread_in_futex(tid) } else { common::blocked_in(std::process::id(), tid) == Some(449) }
}

/// Runs `f` on another thread once thread `tid` sleeps in `wait`.
fn when_asleep(tid: u32, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        common::wait_for("the waiter to sleep in wait", || asleep_in_wait(tid));
        f();
    })
}

/// The thread of process `pid` asleep in `futex_waitv`, once there is one
/// (bounded by DEADLINE).
fn thread_in_waitv(pid: u32) -> u32 {
    let end = Instant::now() + DEADLINE;
    loop {
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
            let tid: u32 = t.file_name().to_str().unwrap().parse().unwrap();
            if common::blocked_in(pid, tid) == Some(449) {
                return tid;
            }
        }
        assert!(Instant::now() < end, "no thread of {pid} went to sleep in futex_waitv within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Context switches (voluntary + involuntary) of every thread of `pid`,
/// and the CPU time (user + system, ns) the whole process used so far:
/// both only ever move when a thread of it runs. The CPU time is read
/// from the process's CPU-time clock (`clock_getcpuclockid`), exact to
/// the nanosecond: `/proc/<pid>/stat`'s utime + stime are whole ticks
/// (10 ms) rounded down, so a few microseconds of legitimate re-checks
/// that happen to cross a tick boundary moved them (a rare false failure).
fn activity(pid: u32) -> (u64, u64) {
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) =
                line.strip_prefix("voluntary_ctxt_switches:").or(line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += n.trim().parse::<u64>().unwrap();
            }
        }
    }
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer for the call's duration.
    let r = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(r, 0, "clock_getcpuclockid({pid})");
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer for the call's duration.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime of {pid}'s CPU clock: {}", std::io::Error::last_os_error());
    (switches, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// One clock tick (`USER_HZ` 100): the CPU time the no-CPU test used to
/// allow in /proc's whole ticks (none), now held in nanoseconds.
const ONE_TICK_NS: u64 = 10_000_000;

#[test]
fn no_objects_or_too_many_are_errors() {
    assert_eq!(wait(&mut [], None), Err(WaitError::NoObjects));
    let mut evs: Vec<Event> = (0..129).map(|_| Event::new().unwrap()).collect();
    let mut objs: Vec<&mut dyn Waitable> = evs.iter_mut().map(|e| e as &mut dyn Waitable).collect();
    assert_eq!(wait(&mut objs, Some(Duration::ZERO)), Err(WaitError::TooMany { count: 129, max: 128 }));
    drop(objs);
    // 128 is fine; the last one is set.
    evs[127].set();
    let mut objs: Vec<&mut dyn Waitable> = evs.iter_mut().take(128).map(|e| e as &mut dyn Waitable).collect();
    assert_eq!(indices(&mut objs, Some(Duration::ZERO)), [127]);
}

#[test]
fn each_kind_is_ready_when_its_call_would_return() {
    let mut ev = Event::new().unwrap();
    let mut sem = Semaphore::new(0).unwrap();
    let mut q = Queue::<u32>::new(2).unwrap();
    let mut mq = MpmcQueue::<u32>::new(2).unwrap();
    let spsc = SpscQueue::<u32>::new(4).unwrap();
    let (mut tx, mut rx) = (spsc.producer().unwrap(), spsc.consumer().unwrap());
    let bq = ByteQueue::new(4096, 64).unwrap();
    let (mut btx, mut brx) = (bq.producer().unwrap(), bq.consumer().unwrap());
    let (mut a, mut b) = shmproc::pipe(true).unwrap();
    b.send_bytes(b"").unwrap(); // b now holds its sending role
    let _ = a.recv_bytes().unwrap();
    let zero = Some(Duration::ZERO);
    {
        let mut objs: [&mut dyn Waitable; 7] = [&mut ev, &mut sem, &mut q, &mut mq, &mut rx, &mut brx, &mut a];
        assert_eq!(indices(&mut objs, zero), Vec::<usize>::new(), "nothing is ready");
    }
    ev.set();
    sem.release().unwrap();
    q.put(1).unwrap();
    mq.push(2).unwrap();
    tx.push(3).unwrap();
    btx.send(b"x").unwrap();
    b.send_bytes(b"y").unwrap();
    {
        let mut objs: [&mut dyn Waitable; 7] = [&mut ev, &mut sem, &mut q, &mut mq, &mut rx, &mut brx, &mut a];
        assert_eq!(indices(&mut objs, None), [0, 1, 2, 3, 4, 5, 6]);
    }
    // Nothing was consumed.
    assert!(sem.try_acquire());
    assert_eq!((q.get_nowait(), mq.try_pop(), rx.try_pop()), (Ok(1), Ok(2), Ok(3)));
    assert_eq!(brx.try_recv().unwrap(), b"x");
    assert_eq!(a.try_recv_bytes().unwrap(), b"y");
    ev.clear();
    {
        let mut objs: [&mut dyn Waitable; 7] = [&mut ev, &mut sem, &mut q, &mut mq, &mut rx, &mut brx, &mut a];
        assert_eq!(indices(&mut objs, zero), Vec::<usize>::new(), "all drained");
    }
    // Closed or disconnected: the call would fail at once, so ready.
    q.close();
    mq.close();
    drop(tx);
    spsc.close();
    drop(btx);
    b.close();
    let mut objs: [&mut dyn Waitable; 5] = [&mut q, &mut mq, &mut rx, &mut brx, &mut a];
    assert_eq!(indices(&mut objs, zero), [0, 1, 2, 3, 4]);
}

#[test]
fn a_timeout_is_honoured_and_a_late_event_wakes_the_wait() {
    let mut ev = Event::new().unwrap();
    let mut sem = Semaphore::new(0).unwrap();
    let mut q = Queue::<u8>::new(1).unwrap();
    let t0 = Instant::now();
    assert!(wait(&mut [&mut ev, &mut sem, &mut q], Some(Duration::from_millis(30))).unwrap().is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(30), "returned early: {:?}", t0.elapsed());

    let setter = ev.clone();
    let me = common::gettid();
    let t = when_asleep(me, move || setter.set());
    assert_eq!(indices(&mut [&mut sem, &mut q, &mut ev], Some(DEADLINE)), [2]);
    t.join().unwrap();
}

shmproc::entry! {
    fn put_on_command(args: (Queue<u32>, Event, Event)) -> Result<(), String> {
        let (q, go, exit) = args;
        if !go.wait_timeout(DEADLINE) {
            return Err("never told to put".into());
        }
        q.put(42).map_err(|e| e.to_string())?;
        if !exit.wait_timeout(DEADLINE) {
            return Err("never told to exit".into());
        }
        Ok(())
    }
}

shmproc::entry! {
    fn block_until(stop: Event) {
        stop.wait_timeout(DEADLINE);
    }
}

/// Issue 11: `wait` on 3 queues and a process: the right ones ready,
/// timeouts honoured, a process's end (normal exit and SIGKILL) wakes it.
#[test]
fn wait_on_three_queues_and_a_process_reports_the_right_ones() {
    let mut q0 = Queue::<u32>::new(4).unwrap();
    let mut q1 = Queue::<u32>::new(4).unwrap();
    let mut q2 = MpmcQueue::<u32>::new(4).unwrap();
    let (go, exit) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(put_on_command, (q1.clone(), go.clone(), exit.clone()));
    p.start().unwrap();

    // Nothing ready: the timeout is honoured.
    let t0 = Instant::now();
    let r = wait(&mut [&mut q0, &mut q1, &mut q2, &mut p], Some(Duration::from_millis(50))).unwrap();
    assert!(r.is_empty(), "nothing is ready yet: {r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(50));

    // The child puts into q1 while we sleep.
    let me = common::gettid();
    let g = go.clone();
    let t = when_asleep(me, move || g.set());
    assert_eq!(indices(&mut [&mut q0, &mut q1, &mut q2, &mut p], Some(DEADLINE)), [1]);
    t.join().unwrap();
    assert_eq!(q1.get_timeout(DEADLINE), Ok(42));

    // Two queues at once.
    q0.put(1).unwrap();
    q2.push(2).unwrap();
    assert_eq!(indices(&mut [&mut q0, &mut q1, &mut q2, &mut p], Some(DEADLINE)), [0, 2]);
    assert_eq!((q0.get_nowait(), q2.try_pop()), (Ok(1), Ok(2)));

    // The child exits while we sleep: the process is ready, nothing else.
    let x = exit.clone();
    let t = when_asleep(me, move || x.set());
    assert_eq!(indices(&mut [&mut q0, &mut q1, &mut q2, &mut p], Some(DEADLINE)), [3]);
    t.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));

    // A child killed with SIGKILL (it writes nothing) wakes the wait too.
    let stop = Event::new().unwrap();
    let mut k = Process::new(block_until, stop.clone());
    k.start().unwrap();
    let pid = k.pid().unwrap();
    // Another handle on the same child, for the killing thread.
    let other = shmproc::active_children().into_iter().find(|c| c.pid() == Some(pid)).unwrap();
    let t = when_asleep(me, move || other.kill().unwrap());
    assert_eq!(indices(&mut [&mut q0, &mut q1, &mut k, &mut q2], Some(DEADLINE)), [2]);
    t.join().unwrap();
    assert_eq!(k.exitcode(), Some(-9));
    drop(stop);
}

/// A `release(1)` wakes one sleeper. When a `wait` sleeps on the
/// semaphore before an `acquire` does, the kernel wakes the `wait` (futex
/// queues are FIFO); `wait` only looks, so it must pass the wake-up on.
/// Before the pass-on, the acquirer slept on with a unit available until
/// its deadline (a semaphore sleeper has no periodic re-check).
#[test]
fn a_wait_woken_in_place_of_an_acquirer_passes_the_wake_up_on() {
    let sem = Semaphore::new(0).unwrap();
    let (waiter_tid, acquirer_tid) = (std::sync::Mutex::new(0u32), std::sync::Mutex::new(0u32));
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            *waiter_tid.lock().unwrap() = common::gettid();
            let mut mine = sem.clone();
            wait(&mut [&mut mine], Some(DEADLINE)).unwrap()
        });
        common::wait_for("the waiter to sleep in futex_waitv", || {
            let t = *waiter_tid.lock().unwrap();
            t != 0 && asleep_in_wait(t)
        });
        let a = s.spawn(|| {
            *acquirer_tid.lock().unwrap() = common::gettid();
            let t0 = Instant::now();
            (sem.acquire_timeout(DEADLINE), t0.elapsed())
        });
        common::wait_for("the acquirer to sleep on the futex", || {
            let t = *acquirer_tid.lock().unwrap();
            t != 0 && common::thread_in_futex(t)
        });
        sem.release().unwrap();
        let (got, took) = a.join().unwrap();
        // Reaching the deadline is the failure (then the unit is taken on the way out, unwoken).
        assert!(got && took < DEADLINE, "the acquirer was not woken for the released unit (waited {took:?})");
        // The waiter sees the next unit.
        sem.release().unwrap();
        assert_eq!(w.join().unwrap().iter().collect::<Vec<_>>(), [0]);
    });
}

/// A blocked `Event::wait` and a `wait` on the same event both wake on
/// `set` (the multi-waiter announces itself with the same WAITERS bit).
#[test]
fn an_event_wakes_its_own_waiter_and_a_wait_together() {
    let ev = Event::new().unwrap();
    let tids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let plain = s.spawn(|| {
            tids.lock().unwrap().push(common::gettid());
            ev.wait_timeout(DEADLINE)
        });
        let many = s.spawn(|| {
            tids.lock().unwrap().push(common::gettid());
            let mut mine = ev.clone();
            let mut other = Event::new().unwrap();
            wait(&mut [&mut other, &mut mine], Some(DEADLINE)).unwrap()
        });
        common::wait_for("both to sleep", || {
            let t = tids.lock().unwrap().clone();
            t.len() == 2 && t.iter().all(|&t| common::thread_in_futex(t))
        });
        ev.set();
        assert!(plain.join().unwrap());
        assert_eq!(many.join().unwrap().iter().collect::<Vec<_>>(), [1]);
    });
}

shmproc::entry! {
    fn send_then_block(args: (shmproc::Connection, shmproc::queue::SpscQueue<u32>, Event)) -> Result<(), String> {
        let (mut conn, q, stop) = args;
        conn.send_bytes(b"hello").map_err(|e| e.to_string())?;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        tx.push(5).map_err(|e| e.to_string())?;
        stop.wait_timeout(DEADLINE);
        Ok(())
    }
}

/// A pipe end and an SPSC consumer whose sender is SIGKILLed (no flag is
/// set by anyone) become ready: `wait` re-checks the sender's liveness in
/// /proc as their own receive calls do.
#[test]
fn a_pipe_end_and_a_consumer_whose_sender_is_killed_become_ready() {
    let (mut mine, theirs) = shmproc::pipe(true).unwrap();
    let q = SpscQueue::<u32>::new(8).unwrap();
    let mut rx = q.consumer().unwrap();
    let stop = Event::new().unwrap();
    let mut p = Process::new(send_then_block, (theirs, q.clone(), stop.clone()));
    p.start().unwrap();
    assert_eq!(indices(&mut [&mut mine], Some(DEADLINE)), [0]);
    assert_eq!(mine.recv_bytes().unwrap(), b"hello");
    assert_eq!(indices(&mut [&mut rx], Some(DEADLINE)), [0]);
    assert_eq!(rx.try_pop(), Ok(5));
    let r = wait(&mut [&mut mine, &mut rx], Some(Duration::from_millis(20))).unwrap();
    assert!(r.is_empty(), "nothing more was sent: {r:?}");
    p.kill().unwrap();
    let _ = common::join(&p);
    assert_eq!(indices(&mut [&mut mine, &mut rx], Some(DEADLINE)), [0, 1]);
    assert_eq!(mine.recv_bytes(), Err(shmproc::PipeRecvBytesError::Disconnected));
    assert_eq!(rx.try_pop(), Err(shmproc::TryPopError::Disconnected));
}

shmproc::entry! {
    fn wait_quietly(args: (Queue<u32>, Event, Semaphore, Event)) -> Result<(), String> {
        let (mut q, mut ev, mut sem, stop) = args;
        let mut grandchild = Process::new(block_until, stop);
        grandchild.start().map_err(|e| e.to_string())?;
        let r = wait(&mut [&mut q, &mut ev, &mut sem, &mut grandchild], Some(DEADLINE)).map_err(|e| e.to_string())?;
        let r: Vec<usize> = r.iter().collect();
        if r != [3] {
            return Err(format!("ready: {r:?}, expected the process (3) only"));
        }
        grandchild.join().map_err(|e| e.to_string())
    }
}

/// Issue 11: a process blocked in `wait` (on a queue, an event, a
/// semaphore and its own child) uses no CPU, read from /proc: all its
/// threads are blocked in system calls (the waiter in `futex_waitv`), and
/// while the test looks for 300 ms they are switched in only for `wait`'s
/// re-check every 100 ms (a wake-up eaten by a killed process is not lost
/// for good): at most 2 context switches per re-check, and less CPU than
/// one clock tick (10 ms);
/// then the child's end wakes it. A spinning or yielding waiter makes
/// thousands of switches in that window.
#[test]
fn a_process_blocked_in_wait_uses_no_cpu() {
    let (q, ev, sem, stop) =
        (Queue::<u32>::new(4).unwrap(), Event::new().unwrap(), Semaphore::new(0).unwrap(), Event::new().unwrap());
    let mut p = Process::new(wait_quietly, (q.clone(), ev.clone(), sem.clone(), stop.clone()));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let waiter = thread_in_waitv(pid);
    common::wait_for("every thread of the waiting process to block in a system call", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten().all(|t| common::blocked_in(pid, t.file_name().to_str().unwrap().parse().unwrap()).is_some())
            })
            .unwrap_or(false)
    });
    let before = activity(pid);
    // An observation window, not a timing assertion: the re-checks in it
    // are counted, whatever its real length.
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let after = activity(pid);
    let rechecks = t.elapsed().as_millis() as u64 / 100 + 1;
    // Looked at a few times, 3 ms apart: the window's end can fall on one of
    // the 100 ms re-checks (it starts when the wait has just begun), and the
    // waiter is then briefly out of its system call (seen: `None`).
    let still_there = (0..10).any(|_| {
        let inside = common::blocked_in(pid, waiter) == Some(449);
        if !inside {
            std::thread::sleep(Duration::from_millis(3));
        }
        inside
    });
    assert!(still_there, "the waiter left futex_waitv: {:?}", common::blocked_in(pid, waiter));
    eprintln!(
        "waiting process: {} context switches, {} us of CPU in {rechecks} re-check periods",
        after.0 - before.0,
        (after.1 - before.1) / 1000
    );
    assert!(
        after.0 - before.0 <= 2 * rechecks && after.1 - before.1 < ONE_TICK_NS,
        "(context switches, CPU ns) of the waiting process went from {before:?} to {after:?} in {rechecks} re-check periods"
    );
    stop.set();
    common::join(&p).unwrap();
}

shmproc::entry! {
    /// One put per unit of `go`: a string into the bounded frame queue;
    /// a string too large for the unbounded queue's first ring (the put
    /// seals ring 0 and links ring 1); a short one; then, after the parent
    /// sealed the newest ring as a producer that died mid-link leaves it,
    /// one more (into the ring after it).
    fn put_strings_on_command(args: (Queue<String>, Queue<String>, Semaphore)) -> Result<(), String> {
        let (bounded, unbounded, go) = args;
        let steps = [
            (&bounded, "b".repeat(500)),
            (&unbounded, "u".repeat(100_000)),
            (&unbounded, "s".into()),
            (&unbounded, "t".into()),
        ];
        for (i, (q, item)) in steps.into_iter().enumerate() {
            if !go.acquire_timeout(DEADLINE) {
                return Err(format!("never told to put item {i}"));
            }
            q.put(item).map_err(|e| format!("put {i}: {e}"))?;
        }
        Ok(())
    }
}

/// Issue 11 (wait x frames x unbounded): `wait` on a `Queue<String>`
/// (frames) and an unbounded `Queue<String>` whose items land, while the
/// waiter sleeps, in a ring after the one it would read: the put of an
/// item too large for ring 0 seals ring 0 and links ring 1; later, the
/// newest ring is sealed with no successor linked (a producer that died
/// mid-link). A sealed, drained ring is not "readable" (its `get` would
/// move on and sleep); the sleeper is woken by the put into the ring it
/// reads next. Before the facade's `Waitable` followed the chain, the
/// sealed empty ring counted as ready (a `get` then slept).
#[test]
fn wait_on_a_string_queue_and_an_unbounded_queue_growing_past_its_first_ring() {
    let mut fq = Queue::<String>::new(4).unwrap();
    let mut uq = Queue::<String>::new(0).unwrap();
    let go = Semaphore::new(0).unwrap();
    let mut p = Process::new(put_strings_on_command, (fq.clone(), uq.clone(), go.clone()));
    p.start().unwrap();
    let zero = Some(Duration::ZERO);
    assert_eq!(indices(&mut [&mut fq, &mut uq], zero), Vec::<usize>::new(), "nothing yet");
    let me = common::gettid();
    let release = |go: &Semaphore| {
        let g = go.clone();
        when_asleep(me, move || g.release().unwrap())
    };

    // A frame into the bounded queue.
    let t = release(&go);
    assert_eq!(indices(&mut [&mut fq, &mut uq], Some(DEADLINE)), [0]);
    t.join().unwrap();
    assert_eq!(fq.get_nowait().as_deref(), Ok("b".repeat(500).as_str()));

    // A large item: ring 0 is sealed, the item is in ring 1.
    let t = release(&go);
    assert_eq!(indices(&mut [&mut fq, &mut uq], Some(DEADLINE)), [1]);
    t.join().unwrap();
    assert_eq!(uq.get_timeout(DEADLINE).map(|s| s.len()), Ok(100_000));
    assert_eq!(indices(&mut [&mut fq, &mut uq], zero), Vec::<usize>::new(), "drained");

    // The waiter now sleeps on ring 1.
    let t = release(&go);
    assert_eq!(indices(&mut [&mut uq, &mut fq], Some(DEADLINE)), [0]);
    t.join().unwrap();
    assert_eq!(uq.get_nowait().as_deref(), Ok("s"));

    // The newest ring sealed, no successor: not readable (a get links the
    // successor and sleeps there); the next put lands after it and wakes us.
    uq.__seal_newest();
    assert_eq!(indices(&mut [&mut fq, &mut uq], zero), Vec::<usize>::new(), "a sealed, drained ring is not an item");
    assert_eq!(uq.get_nowait(), Err(shmproc::TryGetError::Empty));
    uq.__seal_newest();
    let t = release(&go);
    assert_eq!(indices(&mut [&mut fq, &mut uq], Some(DEADLINE)), [1]);
    t.join().unwrap();
    assert_eq!(uq.get_nowait().as_deref(), Ok("t"));
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));

    // Closed for everyone and drained: ready (get fails at once).
    assert_eq!(indices(&mut [&mut fq, &mut uq], zero), Vec::<usize>::new());
    uq.close_all();
    assert_eq!(indices(&mut [&mut fq, &mut uq], zero), [1]);
    assert_eq!(uq.get_nowait(), Err(shmproc::TryGetError::Closed));
}

shmproc::entry! {
    /// `n` items at once on the first unit of `go`, one more on the second.
    fn put_many_on_command(args: (Queue<u64>, u64, Semaphore)) -> Result<(), String> {
        let (q, n, go) = args;
        if !go.acquire_timeout(DEADLINE) {
            return Err("never told to put".into());
        }
        for i in 0..n {
            q.put(i).map_err(|e| format!("put {i}: {e}"))?;
        }
        if !go.acquire_timeout(DEADLINE) {
            return Err("never told to put the last one".into());
        }
        q.put(n).map_err(|e| e.to_string())
    }
}

/// An unbounded queue of plain data that a child grows past its first
/// rings while the waiter sleeps: ready while items are left in any ring,
/// not ready once all are drained, and woken by a put into the ring it
/// now reads (not the first one, long retired).
#[test]
fn wait_on_an_unbounded_queue_follows_its_chain_across_processes() {
    const N: u64 = 20_000; // the first ring holds 4096
    let mut q = Queue::<u64>::new(0).unwrap();
    let mut ev = Event::new().unwrap();
    let go = Semaphore::new(0).unwrap();
    let mut p = Process::new(put_many_on_command, (q.clone(), N, go.clone()));
    p.start().unwrap();
    let me = common::gettid();
    let g = go.clone();
    let t = when_asleep(me, move || g.release().unwrap());
    assert_eq!(indices(&mut [&mut ev, &mut q], Some(DEADLINE)), [1]);
    t.join().unwrap();
    for i in 0..N {
        assert_eq!(indices(&mut [&mut ev, &mut q], Some(DEADLINE)), [1], "item {i} is coming");
        assert_eq!(q.get_timeout(DEADLINE), Ok(i));
    }
    assert_eq!(indices(&mut [&mut ev, &mut q], Some(Duration::ZERO)), Vec::<usize>::new(), "all drained");
    let g = go.clone();
    let t = when_asleep(me, move || g.release().unwrap());
    assert_eq!(indices(&mut [&mut ev, &mut q], Some(DEADLINE)), [1]);
    t.join().unwrap();
    assert_eq!(q.get_nowait(), Ok(N));
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// The fallback for kernels without `futex_waitv` (forced with the
/// `test-hooks` feature's `SHMPROC_WAITV_FALLBACK`): the same tests pass,
/// run in a child test binary.
#[test]
fn the_fallback_without_futex_waitv_works_too() {
    if fallback() {
        return; // this is the inner run
    }
    let tests = [
        "each_kind_is_ready_when_its_call_would_return",
        "a_timeout_is_honoured_and_a_late_event_wakes_the_wait",
        "wait_on_three_queues_and_a_process_reports_the_right_ones",
        "a_wait_woken_in_place_of_an_acquirer_passes_the_wake_up_on",
        "an_event_wakes_its_own_waiter_and_a_wait_together",
        "a_pipe_end_and_a_consumer_whose_sender_is_killed_become_ready",
        "wait_on_a_string_queue_and_an_unbounded_queue_growing_past_its_first_ring",
        "wait_on_an_unbounded_queue_follows_its_chain_across_processes",
    ];
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "--test-threads=1"]).args(tests).env("SHMPROC_WAITV_FALLBACK", "1");
    let (status, stderr) = common::run_within(&mut cmd);
    assert!(status.success(), "under the fallback: {status:?}\n{stderr}");
}
