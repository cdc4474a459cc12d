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
