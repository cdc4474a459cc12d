//! Review 16: sync objects, Value/Array, Process and `wait` under hostile
//! use and Python-porting surprises. Every blocking step has a deadline.

mod common;

use std::time::Duration;

use shmproc::{Condition, Process, Value};

// ------------------------------------------- Condition::notify(n) wakes n

shmproc::entry! {
    /// Waits once on the condition (at most `secs`), counting itself in
    /// `waiting` first (under the condition's lock) and, once back, in
    /// `notified` or `timed_out` by what `wait_timeout` said.
    fn r16_cond_waiter((cond, waiting, notified, timed_out, secs): (Condition, Value<u32>, Value<u32>, Value<u32>, u64)) -> Result<(), String> {
        let mut g = cond.lock().map_err(|e| e.to_string())?;
        waiting.get_lock().map_err(|e| e.to_string())?.update(|v| *v += 1);
        let r = cond.wait_timeout(&mut g, Duration::from_secs(secs)).map_err(|e| e.to_string())?;
        let counter = if r { &notified } else { &timed_out };
        counter.get_lock().map_err(|e| e.to_string())?.update(|v| *v += 1);
        Ok(())
    }
}

/// Python's `Condition.notify(n)` wakes at most `n` waiters: with three
/// processes in `cond.wait(timeout)`, one `notify()` makes exactly one of
/// them return `True`; the other two wait on and return `False` at their
/// timeout. A ported program counting workers released one `notify()` at a
/// time relies on it.
#[test]
fn notify_one_wakes_one_of_three_waiting_processes_as_in_python() {
    let cond = Condition::new().unwrap();
    let (waiting, notified, timed_out) =
        (Value::new(0u32).unwrap(), Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let mut kids: Vec<Process> = (0..3)
        .map(|_| {
            let arg = (cond.clone(), waiting.clone(), notified.clone(), timed_out.clone(), 3u64);
            let mut p = Process::new(r16_cond_waiter, arg).with_daemon(true);
            p.start().unwrap();
            p
        })
        .collect();
    common::wait_for("three waiters", || waiting.get().unwrap() == 3);
    {
        // Taken only once every waiter released it inside `wait_timeout`.
        let g = cond.lock().unwrap();
        cond.notify(&g, 1);
    }
    for p in &mut kids {
        common::join(p).unwrap();
    }
    assert_eq!(
        (notified.get().unwrap(), timed_out.get().unwrap()),
        (1, 2),
        "(woken by the notify, timed out) of three waiters after one notify(1)"
    );
}

// ------------------------------- handles opened with Options, given to a child

shmproc::entry! {
    /// Takes and releases the lock it was given.
    fn r16_take_lock(lock: shmproc::Lock) -> Result<(), String> {
        drop(lock.lock().map_err(|e| e.to_string())?);
        Ok(())
    }
}

/// A handle the parent opened with `Options::trust_owner` (a segment of
/// another user, here `nobody`) is handed to a child as easily as any
/// other: the child opens it with the trust the parent's handle had, and
/// does not fail with "owned by another user". (Root only: the segment is
/// given to `nobody` with chown.)
#[test]
fn a_handle_opened_with_trust_owner_can_be_given_to_a_child() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping: needs root to chown a segment to another user");
        return;
    }
    let name = common::name("trusted-lock");
    let mine = shmproc::Lock::create_with(&name, &shmproc::Options::new().mode(0o644)).unwrap();
    let path = format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let opts = shmproc::Options::new().trust_owner(65534);
    assert!(shmproc::Lock::open(&name).is_err(), "another user's segment is refused by default");
    let trusted = shmproc::Lock::open_with(&name, &opts).unwrap();
    let mut p = Process::new(r16_take_lock, trusted.clone());
    p.start().unwrap();
    let r = common::join(&p);
    drop((trusted, mine));
    assert!(common::scrub(&name).is_empty());
    r.unwrap();
}

// ---------------------------------- garbage in every control word of every object

/// Writes `v` as the little-endian u32 at byte `at` of the segment `name`.
fn poke(name: &str, at: u64, v: u32) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX)).unwrap();
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

/// Every operation of every sync object, `Value`, `Array` and `Mutex`,
/// with short timeouts, after a peer wrote one of many values into one of
/// its control words (any word of the control block, which starts at byte
/// 128): each call returns (a value or an error), never panics (debug
/// build: no overflow panic), never hangs past its timeout.
#[test]
fn garbage_in_any_control_word_gives_errors_or_garbage_never_a_panic_or_hang() {
    use shmproc::{Array, Barrier, BoundedSemaphore, Event, Lock, Mutex, RLock, Semaphore};
    const VALUES: [u32; 12] = [
        0,
        1,
        2,
        3,
        0x3FFF_FFFF,
        0x4000_0000,
        0x7FFF_FFFF,
        0x8000_0000,
        0xC000_0000,
        0xFFFF_FFFE,
        0xFFFF_FFFF,
        0x1234_5678,
    ];
    let t = Duration::from_millis(5);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let worker = std::thread::spawn(move || {
        let ctl_words = 8u64; // 32 bytes: more than any of these control blocks
        for word in 0..ctl_words {
            for &v in &VALUES {
                let at = 128 + 4 * word;
                let case = |what: &str| format!("{what}: word {word} = {v:#x}");
                let _ = tx.send(case("lock"));
                let l = Lock::new().unwrap();
                poke(l.name(), at, v);
                let _ = l.try_lock().map(drop);
                let _ = l.lock_timeout(t).map(drop);
                let _ = l.is_locked();
                let _ = tx.send(case("rlock"));
                let r = RLock::new().unwrap();
                poke(r.name(), at, v);
                if let Ok(g) = r.lock_timeout(t) {
                    let _ = r.try_lock().map(drop);
                    let _ = r.level();
                    drop(g);
                }
                let _ = r.release();
                let _ = tx.send(case("semaphore"));
                let mut s = Semaphore::new(1).unwrap();
                poke(s.name(), at, v);
                let _ = s.try_acquire();
                let _ = s.acquire_timeout(t);
                let _ = s.release_n(3);
                let _ = s.release();
                let _ = s.get_value();
                let _ = shmproc::wait(&mut [&mut s], Some(t));
                let _ = tx.send(case("bounded semaphore"));
                let mut b = BoundedSemaphore::new(2).unwrap();
                poke(b.name(), at, v);
                let _ = b.acquire_timeout(t);
                let _ = b.release();
                let _ = b.release_n(u32::MAX);
                let _ = (b.get_value(), b.bound());
                let _ = shmproc::wait(&mut [&mut b], Some(t));
                let _ = tx.send(case("event"));
                let mut e = Event::new().unwrap();
                poke(e.name(), at, v);
                let _ = e.wait_timeout(t);
                let _ = shmproc::wait(&mut [&mut e], Some(t));
                e.set();
                e.clear();
                let _ = e.is_set();
                let _ = tx.send(case("condition"));
                let c = Condition::new().unwrap();
                poke(c.name(), at, v);
                if let Ok(mut g) = c.lock_timeout(t) {
                    let _ = c.wait_timeout(&mut g, t);
                    c.notify(&g, 1);
                    c.notify_all(&g);
                    let _ = c.wait_for_timeout(&mut g, t, || false);
                }
                let _ = tx.send(case("barrier"));
                let br = Barrier::new(3).unwrap();
                poke(br.name(), at, v);
                let _ = br.wait_timeout(t);
                let _ = (br.n_waiting(), br.parties(), br.is_broken());
                br.reset();
                let _ = br.wait_timeout(t);
                br.abort();
                let _ = br.wait_timeout(t);
                let _ = tx.send(case("value"));
                let val = Value::new(7u64).unwrap();
                poke(val.name(), at, v);
                let _ = val.get();
                let _ = val.set(1);
                let _ = val.get_lock_timeout(t).map(|mut g| g.update(|x| *x = x.wrapping_add(1)));
                let _ = tx.send(case("array"));
                let arr = Array::<u32>::new(4).unwrap();
                poke(arr.name(), at, v);
                let _ = arr.get(3);
                let _ = arr.set(1, 2);
                let _ = arr.to_vec();
                let _ = arr.try_get_lock().map(|g| g.to_vec());
                let _ = tx.send(case("mutex"));
                let m = Mutex::new([1u16; 3]).unwrap();
                poke(m.name(), at, v);
                let _ = m.try_lock().map(|g| g.value());
                let _ = m.lock_timeout(t).map(|mut g| g.set_value([2; 3]));
            }
        }
        let _ = tx.send("done".into());
    });
    let mut last = String::from("start");
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(s) if s == "done" => break,
            Ok(s) => last = s,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!(
                    "the worker died during {last}: {:?}",
                    worker.join().err().map(|e| {
                        e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                )
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung for 20 s during {last}"),
        }
    }
    worker.join().unwrap();
}

// ------------------------- a Condition's guard from a second handle of it

shmproc::entry! {
    /// Given the same condition twice (two handles, two mappings), locks
    /// through one and notifies through the other, as a Python program
    /// passing `cond` in two places of its arguments may.
    fn r16_notify_through_second_handle((a, b, flag): (Condition, Condition, Value<u32>)) -> Result<(), String> {
        let g = a.lock().map_err(|e| e.to_string())?;
        flag.set(1).map_err(|e| e.to_string())?;
        b.notify_all(&g);
        let mut g = g;
        // And waits through it: the parent notifies back.
        let got = b.wait_for_timeout(&mut g, common::DEADLINE, || flag.get().unwrap() == 2).map_err(|e| e.to_string())?;
        common::ensure(got, "no notify back from the parent")
    }
}

/// A guard of a `Condition`'s lock works with every handle of that same
/// condition, not only the one that locked it: a child given the
/// condition twice (two handles, each its own mapping) locks through one
/// and notifies and waits through the other. Before, that panicked with
/// "Condition used with a guard of another lock".
#[test]
fn a_condition_guard_works_with_another_handle_of_the_same_condition() {
    let cond = Condition::new().unwrap();
    let flag = Value::new(0u32).unwrap();
    let mut p = Process::new(r16_notify_through_second_handle, (cond.clone(), cond.clone(), flag.clone()));
    let mut g = cond.lock().unwrap();
    p.start().unwrap();
    let woke = cond.wait_for_timeout(&mut g, Duration::from_secs(10), || flag.get().unwrap() == 1).unwrap();
    flag.set(2).unwrap();
    cond.notify_all(&g);
    drop(g);
    let r = common::join(&p);
    assert!(woke, "the child's notify never came ({r:?})");
    r.unwrap();
    // In one process too: a second handle opened by name.
    let again = Condition::open(cond.name()).unwrap();
    let mut g = cond.lock().unwrap();
    again.notify(&g, 1);
    assert!(!again.wait_timeout(&mut g, Duration::from_millis(1)).unwrap());
}

/// A guard of another condition's lock is still refused.
#[test]
#[should_panic(expected = "guard of another lock")]
fn a_guard_of_another_condition_is_refused() {
    let (a, b) = (Condition::new().unwrap(), Condition::new().unwrap());
    let g = a.lock().unwrap();
    b.notify(&g, 1);
}

// ----------------------------- Condition's lock is recursive, as Python's RLock

shmproc::entry! {
    /// `with cond: with cond: ...`: takes the condition's lock twice in
    /// this thread, signals the parent through `flag` (1), then waits
    /// inside the nested hold until the parent sets it to 2.
    fn r16_nested_condition((cond, flag): (Condition, Value<u32>)) -> Result<(), String> {
        let outer = cond.lock().map_err(|e| e.to_string())?;
        let mut inner = cond.lock().map_err(|e| e.to_string())?;
        flag.set(1).map_err(|e| e.to_string())?;
        cond.notify_all(&inner);
        let got = cond.wait_for_timeout(&mut inner, common::DEADLINE, || flag.get().unwrap() == 2).map_err(|e| e.to_string())?;
        drop(inner);
        common::ensure(got && outer.is_consistent(), "no notify back from the parent")?;
        // Still held (by the outer guard) after the inner one dropped.
        common::ensure(cond.try_lock().is_ok(), "a nested try_lock of the held lock failed")
    }
}

/// Python's `multiprocessing.Condition()` uses an `RLock`: the thread that
/// holds it may take it again (`with cond:` inside `with cond:`), and
/// `wait` releases every level while it sleeps and takes them back. Here
/// the nested `lock()` waited for itself forever.
#[test]
fn a_condition_lock_taken_twice_by_one_thread_does_not_deadlock_as_in_python() {
    let cond = Condition::new().unwrap();
    let flag = Value::new(0u32).unwrap();
    let mut p = Process::new(r16_nested_condition, (cond.clone(), flag.clone())).with_daemon(true);
    p.start().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while flag.get().unwrap() != 1 {
        if std::time::Instant::now() > end {
            let _ = p.kill();
            let _ = p.join_timeout(common::DEADLINE);
            panic!("the child never got through its nested cond.lock() in 10 s (self-deadlock); killed it");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    {
        // Free once the child sleeps in wait inside its nested hold.
        let g = cond.lock().unwrap();
        flag.set(2).unwrap();
        cond.notify_all(&g);
    }
    common::join(&p).unwrap();
    assert!(cond.try_lock().is_ok(), "the child left the lock held");
}

shmproc::entry! {
    /// Takes the condition's lock, notifies, and dies holding it.
    fn r16_notify_and_die(cond: Condition) -> Result<(), String> {
        let g = cond.lock().map_err(|e| e.to_string())?;
        cond.notify_all(&g);
        // SAFETY: plain syscalls; the process ends here, holding the lock.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL returned");
    }
}

/// A `wait` through a nested guard that takes the lock back from a dead
/// notifier reports `OwnerDied`; the outer guard then knows it too: it is
/// inconsistent, and dropping both unrepaired makes the lock
/// `NotRecoverable` (not silently fine, as the outer guard's plain unlock
/// would have left it).
#[test]
fn a_nested_condition_wait_that_meets_a_dead_owner_leaves_the_outer_guard_inconsistent() {
    let cond = Condition::new().unwrap();
    let outer = cond.lock().unwrap();
    let mut inner = cond.lock().unwrap();
    let mut p = Process::new(r16_notify_and_die, cond.clone()).with_daemon(true);
    p.start().unwrap();
    let r = cond.wait_timeout(&mut inner, common::DEADLINE);
    assert!(matches!(r, Err(shmproc::LockError::OwnerDied(()))), "{r:?}");
    assert!(!inner.is_consistent() && !outer.is_consistent());
    drop(inner);
    drop(outer);
    assert!(matches!(cond.try_lock(), Err(shmproc::LockError::NotRecoverable)));
    assert!(matches!(common::join(&p), Err(shmproc::ProcessError::Signaled { signal: 9, .. })));
}

// ------------------------------- many objects under the usual fd limit

shmproc::entry! {
    /// Under an open-file limit of `limit`, makes `n` Values, Locks and
    /// Arrays and keeps them all, then uses each once.
    fn r16_many_objects((limit, n): (u64, u64)) -> Result<(), String> {
        let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: a valid rlimit for this process.
        common::ensure(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0, "setrlimit")?;
        let mut kept = Vec::new();
        for i in 0..n {
            let made = (Value::new(i), shmproc::Lock::new(), shmproc::Array::<u8>::new(16));
            match made {
                (Ok(v), Ok(l), Ok(a)) => kept.push((v, l, a)),
                (v, l, a) => {
                    return Err(format!(
                        "object {i} of {n} (fd limit {limit}): {:?} / {:?} / {:?}",
                        v.err(),
                        l.err(),
                        a.err()
                    ));
                }
            }
        }
        for (i, (v, l, a)) in kept.iter().enumerate() {
            common::ensure(v.get().map_err(|e| e.to_string())? == i as u64, "a value changed")?;
            drop(l.try_lock().map_err(|e| e.to_string())?);
            a.set(3, 1).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A program that makes many shared objects (Python: `[Value('i', 0) for
/// _ in range(1000)]`, which shares a few heap arenas) works under the
/// usual soft limit of open files: a fixed-size object keeps its mapping,
/// not an open file descriptor. Here: 3 x 400 objects under a limit of 64.
#[test]
fn many_values_locks_and_arrays_fit_under_a_small_open_file_limit() {
    let mut p = Process::new(r16_many_objects, (64u64, 400u64));
    p.start().unwrap();
    common::join(&p).unwrap();
}

// --------------------------------------------- wait() on duplicate processes

shmproc::entry! {
    /// Sleeps until killed (at most a minute).
    fn r16_sleep_until_killed(_: ()) {
        std::thread::sleep(common::DEADLINE);
    }
}

/// `wait` on the same child twice (its `Process` and the handle
/// `active_children()` gives), beside an event that is never set and a
/// never-started process: a poll (timeout 0) sees only the never-started
/// one; once the child is killed, a wait with a huge timeout returns with
/// both handles of it ready.
#[test]
fn wait_on_a_killed_child_listed_twice_returns_both_handles() {
    let mut p = Process::new(r16_sleep_until_killed, ()).with_daemon(true);
    p.start().unwrap();
    let mut twin = shmproc::active_children().into_iter().find(|c| c.pid() == p.pid()).unwrap();
    let mut never = Process::new(r16_sleep_until_killed, ());
    let mut ev = shmproc::Event::new().unwrap();
    let ready: Vec<usize> =
        shmproc::wait(&mut [&mut p, &mut ev, &mut twin, &mut never], Some(Duration::ZERO)).unwrap().iter().collect();
    assert_eq!(ready, [3]);
    let pid = p.pid().unwrap();
    // SAFETY: signalling our own, not yet reaped child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let ready: Vec<usize> =
        shmproc::wait(&mut [&mut p, &mut ev, &mut twin], Some(Duration::from_secs(1 << 40))).unwrap().iter().collect();
    assert!(ready == [0, 2] || ready == [0] || ready == [2], "{ready:?}");
    let ready: Vec<usize> =
        shmproc::wait(&mut [&mut p, &mut ev, &mut twin], Some(Duration::ZERO)).unwrap().iter().collect();
    assert_eq!(ready, [0, 2]);
    assert_eq!(p.exitcode(), Some(-9));
    assert_eq!(twin.exitcode(), Some(-9));
    assert!(!p.is_alive() && !twin.is_alive());
}

// ------------------------- a lock owner whose identity was read without /proc

shmproc::entry! {
    /// With no file descriptor left (open-file limit at the lowest free
    /// descriptor), a new thread takes the lock for the first time (its
    /// identity is computed then: `/proc` cannot be read), says so, and
    /// holds the lock until `release` is set.
    fn r16_lock_without_fds((lock, held, release): (shmproc::Lock, shmproc::Event, shmproc::Event)) -> Result<(), String> {
        let probe = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let lowest = std::os::fd::AsRawFd::as_raw_fd(&probe) as u64;
        drop(probe);
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid out-pointer.
        common::ensure(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0, "getrlimit")?;
        lim.rlim_cur = lowest;
        // SAFETY: a valid rlimit for this process.
        common::ensure(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0, "setrlimit")?;
        let t = std::thread::spawn(move || -> Result<(), String> {
            common::ensure(std::fs::File::open("/dev/null").is_err(), "a descriptor was still free")?;
            let g = lock.lock().map_err(|e| e.to_string())?;
            held.set();
            common::ensure(release.wait_timeout(common::DEADLINE), "never released")?;
            drop(g);
            Ok(())
        });
        t.join().map_err(|_| "the locking thread panicked".to_string())?
    }
}

/// A thread that could not read its start time from `/proc` when it first
/// took a lock (no descriptor left) is still a live owner: another
/// process's `lock_timeout` times out instead of declaring it dead and
/// taking the lock (`OwnerDied`) while it is held. Before, its identity
/// was recorded with start time 0, which never matches `/proc`, so every
/// liveness check found it "dead".
#[test]
fn a_live_owner_that_could_not_read_proc_is_not_taken_over() {
    let (lock, held, release) =
        (shmproc::Lock::new().unwrap(), shmproc::Event::new().unwrap(), shmproc::Event::new().unwrap());
    let mut p = Process::new(r16_lock_without_fds, (lock.clone(), held.clone(), release.clone())).with_daemon(true);
    p.start().unwrap();
    if !held.wait_timeout(Duration::from_secs(10)) {
        let _ = p.kill();
        panic!("the child never took the lock: {:?}", common::join(&p));
    }
    let r = lock.lock_timeout(Duration::from_millis(500)).map(|g| g.is_consistent());
    release.set();
    let child = common::join(&p);
    assert!(matches!(r, Err(shmproc::LockError::TimedOut)), "the lock held by a live thread was taken: {r:?}");
    child.unwrap();
}

// ----------------------------------------- Event: a set() undone by clear()

shmproc::entry! {
    /// Waits on the event, untimed, then (once back) on it again with a
    /// timeout, recording what that second wait said in `second`.
    fn r16_event_waiter((ev, stage, second): (shmproc::Event, Value<u32>, Value<u32>)) -> Result<(), String> {
        stage.set(1).map_err(|e| e.to_string())?;
        ev.wait();
        stage.set(2).map_err(|e| e.to_string())?;
        let r = ev.wait_timeout(common::DEADLINE);
        second.set(if r { 1 } else { 2 }).map_err(|e| e.to_string())
    }
}

/// Python's `Event.set()` wakes every process waiting in `wait()`, even if
/// `clear()` follows at once (the "pulse" `ev.set(); ev.clear()`): each
/// wait returns (multiprocessing's `wait(timeout)` returning the flag as it
/// is then, `False`). Here the waiters slept on until their timeout, or for
/// good in an untimed `wait()`.
#[test]
fn an_event_set_then_cleared_releases_the_processes_waiting_as_in_python() {
    let ev = shmproc::Event::new().unwrap();
    let (stage, second) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let mut p = Process::new(r16_event_waiter, (ev.clone(), stage.clone(), second.clone())).with_daemon(true);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    for round in 1..=2 {
        // Its next futex wait after announcing the stage is the event's (a futex
        // wake, as an unlock of the stage's lock may make, is not: seen in a CI run,
        // the pulse then came before the wait began and the untimed wait never returned).
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !(stage.get().unwrap() == round && common::main_thread_in_futex_wait(pid)) {
            if std::time::Instant::now() > end {
                let _ = p.kill();
                let _ = p.join_timeout(common::DEADLINE);
                panic!("the waiter was not released by set(); clear() (it never reached wait {round})");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        ev.set();
        ev.clear();
    }
    match p.join_timeout(Duration::from_secs(10)) {
        Ok(true) => {}
        other => {
            let _ = p.kill();
            let _ = p.join_timeout(common::DEADLINE);
            panic!("the waiter was not released by set(); clear(): {other:?} (second wait: {:?})", second.get());
        }
    }
    // The timed wait returns the flag as it is when the waiter looks: false, or
    // true if it looked between the set() and the clear() (as Python's, whose
    // waiter and clear() race for the condition's lock after notify_all).
    let second = second.get().unwrap();
    assert!(second == 1 || second == 2, "the timed wait did not return: {second}");
}

// ---------------------------------------------- sync objects on a full /dev/shm

const INNER: &str = "SHMPROC_REVIEW16_INNER";

/// Every sync object, `Value`, `Array` and `Mutex` created on a full
/// /dev/shm (a private 4 MiB tmpfs, filled): `OpenError::NoSpace`, no file
/// left behind, and each works once there is room again.
#[test]
fn sync_objects_created_on_a_full_dev_shm_fail_with_no_space_and_leave_nothing() {
    if !common::rerun_in_tmpfs(
        "sync_objects_created_on_a_full_dev_shm_fail_with_no_space_and_leave_nothing",
        INNER,
        Some("4m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    use shmproc::{Array, Barrier, BoundedSemaphore, Event, Lock, Mutex, OpenError, RLock, Semaphore};
    let filler = common::fill_dev_shm("r16-fill", &[1 << 20, 1 << 16, 4096, 1]);
    let before = common::dev_shm_files();
    let results: Vec<(&str, Result<(), OpenError>)> = vec![
        ("Lock", Lock::new().map(drop)),
        ("RLock", RLock::new().map(drop)),
        ("Semaphore", Semaphore::new(1).map(drop)),
        ("BoundedSemaphore", BoundedSemaphore::new(1).map(drop)),
        ("Event", Event::new().map(drop)),
        ("Condition", Condition::new().map(drop)),
        ("Barrier", Barrier::new(2).map(drop)),
        ("Value", Value::new(1u64).map(drop)),
        ("Array", Array::<u64>::new(100).map(drop)),
        ("Mutex", Mutex::new([0u8; 16]).map(drop)),
        ("named Lock", Lock::create("r16-named-lock").map(drop)),
    ];
    for (what, r) in &results {
        assert!(matches!(r, Err(OpenError::NoSpace { .. })), "{what} on a full /dev/shm: {r:?}");
    }
    assert_eq!(common::dev_shm_files(), before, "files left behind");
    drop(filler);
    let lock = Lock::create("r16-named-lock").unwrap();
    drop(lock.lock().unwrap());
    let v = Value::new(5u64).unwrap();
    assert_eq!(v.get().unwrap(), 5);
}

shmproc::entry! {
    /// Takes the condition's lock (at most 10 s) and releases it.
    fn r16_take_cond_lock(cond: Condition) -> Result<(), String> {
        drop(cond.lock_timeout(Duration::from_secs(10)).map_err(|e| format!("lock_timeout: {e}"))?);
        Ok(())
    }
}

shmproc::entry! {
    /// Holds the condition's lock until `release` is set, after setting `held`.
    fn r16_hold_cond_lock((cond, held, release): (Condition, shmproc::Event, shmproc::Event)) -> Result<(), String> {
        let g = cond.lock().map_err(|e| e.to_string())?;
        held.set();
        common::ensure(release.wait_timeout(common::DEADLINE), "never released")?;
        drop(g);
        Ok(())
    }
}

/// A wait through the inner of two guards of a Condition's recursive lock
/// (the outer one dropped first, so the inner holds the last level)
/// releases the lock for the sleep, and takes it back only once the
/// process that got it meanwhile let it go (it frees nobody else's hold);
/// the inner guard's drop then frees it (nothing leaks).
#[test]
fn a_wait_through_a_nested_guard_that_outlived_its_outer_guard_frees_nobody_else_and_leaks_nothing() {
    let cond = Condition::new().unwrap();
    let (held, release) = (shmproc::Event::new().unwrap(), shmproc::Event::new().unwrap());
    let outer = cond.lock().unwrap();
    let mut inner = cond.lock().unwrap();
    drop(outer);
    assert!(cond.is_locked(), "the inner guard still holds a level");
    let mut holder = Process::new(r16_hold_cond_lock, (cond.clone(), held.clone(), release.clone())).with_daemon(true);
    holder.start().unwrap();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // The holder gets the lock while we wait; it keeps it a while.
            if held.wait_timeout(Duration::from_secs(10)) {
                std::thread::sleep(Duration::from_millis(300));
            }
            release.set();
        });
        let r = cond.wait_timeout(&mut inner, Duration::from_millis(100));
        (r, held.is_set(), release.is_set())
    });
    assert!(matches!(r.0, Ok(false)), "{r:?}");
    assert!(r.1, "the holder never got the lock while we waited: {r:?}");
    // We have the lock again only after the holder let it go.
    assert!(r.2, "the wait took the lock while the other process still held it");
    common::join(&holder).unwrap();
    drop(inner);
    let mut taker = Process::new(r16_take_cond_lock, cond.clone()).with_daemon(true);
    taker.start().unwrap();
    common::join(&taker).unwrap();
}

// ------------------------------------- Barrier with a party killed inside wait

shmproc::entry! {
    /// Waits at the barrier (untimed: `secs` 0) or at most `secs`, and
    /// returns what it said as the process's result.
    fn r16_barrier_party((b, secs): (shmproc::Barrier, u64)) -> Result<(), String> {
        let r = if secs == 0 { b.wait() } else { b.wait_timeout(Duration::from_secs(secs)) };
        r.map(drop).map_err(|e| format!("{e:?}"))
    }
}

/// Barrier(3): one party killed while it waits still counts (as in
/// Python: `n_waiting` 1, then 2 with a live party); the live party's
/// timeout breaks the barrier (it gets `TimedOut`, a later `wait`
/// `Broken`, `n_waiting` 0); `reset` makes it whole: three live parties
/// pass with distinct indices.
#[test]
fn a_barrier_with_a_party_killed_inside_wait_breaks_by_timeout_and_resets() {
    let b = shmproc::Barrier::new(3).unwrap();
    let mut dead = Process::new(r16_barrier_party, (b.clone(), 0u64)).with_daemon(true);
    dead.start().unwrap();
    common::wait_for("the first party to arrive", || b.n_waiting() == 1);
    dead.kill().unwrap();
    assert!(matches!(common::join(&dead), Err(shmproc::ProcessError::Signaled { signal: 9, .. })));
    assert_eq!(b.n_waiting(), 1, "the dead party still counts, as in Python");
    let mut timed = Process::new(r16_barrier_party, (b.clone(), 1u64)).with_daemon(true);
    timed.start().unwrap();
    let r = common::join(&timed);
    assert!(matches!(&r, Err(shmproc::ProcessError::Failed { message, .. }) if message == "TimedOut"), "{r:?}");
    assert!(b.is_broken());
    assert_eq!(b.n_waiting(), 0);
    assert_eq!(b.wait_timeout(Duration::from_secs(1)), Err(shmproc::BarrierError::Broken));
    b.reset();
    assert!(!b.is_broken());
    let mut kids: Vec<Process> = (0..2)
        .map(|_| {
            let mut p = Process::new(r16_barrier_party, (b.clone(), 0u64)).with_daemon(true);
            p.start().unwrap();
            p
        })
        .collect();
    let mine = b.wait_timeout(common::DEADLINE).unwrap();
    assert!(mine < 3);
    for p in &mut kids {
        common::join(p).unwrap();
    }
    assert_eq!(b.n_waiting(), 0);
}

// -------------- Value's recursive lock counts levels, released in any order

shmproc::entry! {
    /// `try_get_lock` on the value: Ok if free ("free"), WouldBlock ("held").
    fn r16_probe_value_lock(v: Value<u64>) -> Result<(), String> {
        match v.try_get_lock() {
            Ok(_) => Err("free".into()),
            Err(shmproc::LockError::WouldBlock) => Err("held".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }
}

/// What another process sees of the value's lock now.
fn probe(v: &Value<u64>) -> String {
    let p = {
        let mut p = Process::new(r16_probe_value_lock, v.clone()).with_daemon(true);
        p.start().unwrap();
        p
    };
    match common::join(&p) {
        Err(shmproc::ProcessError::Failed { message, .. }) => message,
        other => format!("{other:?}"),
    }
}

/// Python's `Value` lock is an `RLock`: taken twice by one thread, it is
/// free only after the second release, whichever acquisition each release
/// pairs with (`l.acquire(); l.acquire(); l.release()` leaves it held).
/// Here the first guard's drop freed it while the second guard still
/// wrote through it.
#[test]
fn a_value_lock_taken_twice_stays_held_until_both_guards_drop_in_any_order() {
    let v = Value::new(0u64).unwrap();
    let first = v.get_lock().unwrap();
    let mut second = v.get_lock().unwrap();
    drop(first);
    assert_eq!(probe(&v), "held", "after one of two releases");
    second.set_value(7);
    drop(second);
    assert_eq!(probe(&v), "free", "after both releases");
    assert_eq!(v.get().unwrap(), 7);
    // The same with a Condition's recursive lock.
    let cond = Condition::new().unwrap();
    let first = cond.lock().unwrap();
    let second = cond.lock().unwrap();
    drop(first);
    assert!(cond.is_locked());
    drop(second);
    assert!(!cond.is_locked());
}
