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
