//! Callers that help the pool's manager (src/pool/manager.rs, "Helping"):
//! `apply_async` writes its frame straight into an idle worker's ring, a
//! caller in `get`/`wait` polls the workers' rings itself before it sleeps,
//! and the manager thread keeps the liveness checks, timeouts and
//! callbacks. These tests put those paths next to kills, other threads'
//! submissions, expiring timeouts, dropped handles and callbacks. A module
//! of tests/pool.rs (its helpers and tasks); every blocking wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shmproc::pool::{GetTimeoutError, PoolError, TaskError};
use shmproc::{Pool, Value};

use super::review::hold_a_worker;
use super::{DEADLINE, finish, kill9, nap, park_on, serial, square, wait_until, watchdog};

/// `get_timeout(DEADLINE)` of a job that must succeed.
fn value<T: Send + 'static>(r: shmproc::AsyncResult<T>) -> T {
    match r.get_timeout(DEADLINE) {
        Ok(v) => v,
        Err(GetTimeoutError::TimedOut(_)) => panic!("no result within {DEADLINE:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// Another thread applies in a loop (each `get` polls the rings itself,
/// and the manager thread sleeps apart from its liveness checks) while a
/// worker holding an item is killed with SIGKILL: that item fails with
/// `WorkerLost`, every apply of the helping thread is right, before and
/// after the kill, and the pool goes on with a replacement.
#[test]
fn a_worker_killed_while_a_caller_helps_fails_only_its_item() {
    let _watchdog = watchdog("a_worker_killed_while_a_caller_helps_fails_only_its_item");
    let pool = Arc::new(Pool::new(2).unwrap());
    let slot = Value::new(0u32).unwrap();
    let parked = pool.apply_async(park_on, (0, 0, slot.clone())).unwrap();
    wait_until("the parked item to start", || slot.get().unwrap() != 0);
    let victim = slot.get().unwrap();
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let helper = {
        let (pool, stop, done) = (Arc::clone(&pool), Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(pool.apply(square, n), Ok(n * n), "apply {n}");
                n += 1;
                done.store(n, Ordering::Relaxed);
            }
        })
    };
    wait_until("the helping thread's first round trips", || done.load(Ordering::Relaxed) >= 100);
    kill9(victim);
    match parked.get_timeout(DEADLINE) {
        Err(GetTimeoutError::Failed(PoolError::Task(TaskError::WorkerLost { pid, signal: Some(9), index: 0 })))
            if pid == victim => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    let after = done.load(Ordering::Relaxed);
    wait_until("round trips after the kill", || done.load(Ordering::Relaxed) >= after + 100);
    stop.store(true, Ordering::Relaxed);
    helper.join().unwrap();
    // Both workers (the replacement too) take items again.
    assert_eq!(pool.map_chunked(square, 0..1000, 7).unwrap(), serial(1000));
    finish(Arc::try_unwrap(pool).unwrap(), &[victim]);
}

/// One thread waits in `get` for an item that holds a worker (helping,
/// then asleep on its job) while another submits every way there is
/// (apply, map, async handles): every result is right, and the waiter gets
/// its value once the item is released.
#[test]
fn a_caller_waiting_in_get_while_another_thread_submits() {
    let _watchdog = watchdog("a_caller_waiting_in_get_while_another_thread_submits");
    let pool = Arc::new(Pool::new(2).unwrap());
    let (long, busy, release) = hold_a_worker(&pool);
    let waiter = std::thread::spawn(move || value(long));
    for i in 0..200u64 {
        assert_eq!(pool.apply(square, i), Ok(i * i));
    }
    assert_eq!(pool.map(square, 0..1000).unwrap(), serial(1000));
    let handles: Vec<_> = (0..50u64).map(|i| pool.apply_async(square, i).unwrap()).collect();
    for (i, r) in handles.into_iter().enumerate() {
        assert_eq!(value(r), (i * i) as u64);
    }
    release.set(1).unwrap();
    assert_eq!(waiter.join().unwrap(), busy);
    finish(Arc::try_unwrap(pool).unwrap(), &[]);
}

/// More callers than cores, each applying in a loop: they take turns with
/// the manager's state (one helps, the others find it taken, then sleep);
/// every result is right and nobody hangs.
#[test]
fn many_threads_applying_at_once_all_get_their_values() {
    let _watchdog = watchdog("many_threads_applying_at_once_all_get_their_values");
    let pool = Arc::new(Pool::new(2).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let x = t * 1000 + i;
                    assert_eq!(pool.apply(square, x), Ok(x * x));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    finish(Arc::try_unwrap(pool).unwrap(), &[]);
}

/// `get_timeout` expires while its caller helps, with the job's frame still
/// waiting behind another item (one worker); then nobody waits on either
/// job. The manager thread must take over: when the held item is
/// released, the waiting frame is dispatched and its callback fires.
#[test]
fn get_timeout_expiring_while_helping_leaves_the_job_to_the_manager() {
    let _watchdog = watchdog("get_timeout_expiring_while_helping_leaves_the_job_to_the_manager");
    let pool = Pool::new(1).unwrap();
    let (long, busy, release) = hold_a_worker(&pool);
    let queued = pool.apply_async(square, 9).unwrap();
    let queued = match queued.get_timeout(Duration::from_micros(1)) {
        Err(GetTimeoutError::TimedOut(r)) => r,
        other => panic!("the item cannot be done: {:?}", other.map(|_| ())),
    };
    let long = match long.get_timeout(Duration::ZERO) {
        Err(GetTimeoutError::TimedOut(r)) => r,
        other => panic!("the held item cannot be done: {:?}", other.map(|_| ())),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    queued.then(move |v| tx.send(v).unwrap());
    release.set(1).unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).expect("the callback did not fire"), Ok(81));
    assert_eq!(value(long), busy);
    finish(pool, &[]);
}

/// A job a waiting caller finishes while helping (it files every result
/// it finds) has its completion callback run on the pool's callback
/// thread, as every callback, not in that caller's `get`.
#[test]
fn callbacks_of_jobs_a_helper_finishes_run_on_the_callback_thread() {
    let _watchdog = watchdog("callbacks_of_jobs_a_helper_finishes_run_on_the_callback_thread");
    let pool = Pool::new(1).unwrap();
    let (long, busy, release) = hold_a_worker(&pool);
    let (tx, rx) = std::sync::mpsc::channel();
    pool.apply_async(square, 5)
        .unwrap()
        .then(move |v| tx.send((v, std::thread::current().name().map(str::to_owned))).unwrap());
    release.set(1).unwrap();
    assert_eq!(value(long), busy);
    let (v, thread) = rx.recv_timeout(DEADLINE).expect("the callback did not fire");
    assert_eq!(v, Ok(25));
    assert_eq!(thread.as_deref(), Some("shmproc-pool-cb"));
    finish(pool, &[]);
}

/// Handles dropped before their jobs finish: the results are still filed
/// (the worker is free for the next apply), and with nobody polling at all
/// the manager thread finishes them (`join` returns).
#[test]
fn dropped_handles_are_still_drained() {
    let _watchdog = watchdog("dropped_handles_are_still_drained");
    let pool = Pool::new(1).unwrap();
    for i in 0..50u64 {
        drop(pool.apply_async(square, i).unwrap());
    }
    assert_eq!(pool.apply(square, 7), Ok(49));
    for _ in 0..3 {
        drop(pool.apply_async(nap, 20).unwrap());
    }
    finish(pool, &[]);
}

/// A pool-wide task timeout applies to an `apply_async` submitted straight
/// to a worker (not through the manager thread): the item is stopped.
#[test]
fn a_pool_wide_timeout_stops_an_item_submitted_directly() {
    let _watchdog = watchdog("a_pool_wide_timeout_stops_an_item_submitted_directly");
    let pool = Pool::builder().processes(1).task_timeout(Duration::from_millis(200)).build().unwrap();
    assert_eq!(pool.apply(square, 4), Ok(16));
    let r = pool.apply_async(nap, 3_600_000).unwrap();
    let pid = match r.get_timeout(DEADLINE) {
        Err(GetTimeoutError::Failed(PoolError::Task(TaskError::TimedOut { pid, index: 0, .. }))) => pid,
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert_eq!(pool.apply(square, 5), Ok(25));
    finish(pool, &[pid]);
}
