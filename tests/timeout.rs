//! One rule for every blocking call's `_timeout` twin: a timeout too large
//! to represent (`Duration::MAX`, or any `now + timeout` past what `Instant`
//! holds) means "wait forever", and a huge timeout that is representable
//! never panics either.
//!
//! Each test starts the call on a thread, checks that it has not returned
//! after a while (a call that gives up at once returns well within it),
//! then lets the peer act (push, pop, unlock, release, set, arrive, exit)
//! and checks that the call returns what the peer's action gives, not a
//! timeout. No timing is asserted; every wait of the test itself is
//! bounded.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
use shmproc::{
    Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Mutex, Process, ProcessError, Queue, RLock,
    Semaphore, Value,
};
use shmproc::{GetTimeoutError, PopTimeoutError, PushTimeoutError, PutTimeoutError};

/// `Duration::MAX` cannot be added to any `Instant`; the second one can,
/// but is far beyond what `poll(2)` takes in milliseconds.
const HUGE: [Duration; 2] = [Duration::MAX, Duration::new(1 << 40, 999_999_999)];
/// How long the call is watched before the peer acts.
const WATCH: Duration = Duration::from_millis(200);
/// Bound on every wait of the test itself.
const BOUND: Duration = Duration::from_secs(30);

fn name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("timeout-{test}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `call` on a thread; fails if it returns (or panics) within
/// `WATCH`, then runs `peer` and returns what `call` returned.
fn returns_after_peer<R: Debug + Send + 'static>(
    what: &str,
    call: impl FnOnce() -> R + Send + 'static,
    peer: impl FnOnce(),
) -> R {
    let (started_tx, started_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        let _ = tx.send(call());
    });
    started_rx.recv_timeout(BOUND).unwrap_or_else(|_| panic!("{what}: the thread did not start"));
    match rx.recv_timeout(WATCH) {
        Ok(r) => panic!("{what}: returned {r:?} without waiting for the peer"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the call panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => {}
    }
    peer();
    match rx.recv_timeout(BOUND) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the call panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked {BOUND:?} after the peer acted"),
    }
}

/// Joins `p` within `BOUND`, or kills it and fails.
fn join_bounded(p: &Process) {
    if !p.join_timeout(BOUND).unwrap_or(true) {
        let _ = p.kill();
        panic!("child still running after {BOUND:?}");
    }
}

shmproc::entry! {
    fn push_when_set(args: (SpscQueue<u64>, Event)) -> Result<(), String> {
        let (q, go) = args;
        if !go.wait_timeout(BOUND) {
            return Err("never told to push".into());
        }
        q.producer().map_err(|e| e.to_string())?.push(7).map_err(|e| format!("{e:?}"))
    }
}

shmproc::entry! {
    fn send_role_then_hang(args: (ByteQueue, Event)) -> Result<(), String> {
        let (q, attached) = args;
        let _tx = q.producer().map_err(|e| e.to_string())?;
        attached.set();
        std::thread::sleep(BOUND);
        Err("was not killed".into())
    }
}

shmproc::entry! {
    fn exit_when_set(go: Event) -> Result<(), String> {
        if go.wait_timeout(BOUND) { Ok(()) } else { Err("never told to exit".into()) }
    }
}

#[test]
fn spsc_pop_timeout_with_a_huge_timeout_gets_what_another_process_pushes() {
    for t in HUGE {
        let q = SpscQueue::<u64>::create(&name("spsc-pop"), 4).unwrap();
        let go = Event::create(&name("spsc-pop-go")).unwrap();
        let mut p = Process::new(push_when_set, (q.clone(), go.clone())).with_daemon(true);
        p.start().unwrap();
        let mut rx = q.consumer().unwrap();
        let r = returns_after_peer("SpscQueue pop_timeout", move || rx.pop_timeout(t), || go.set());
        assert_eq!(r, Ok(7), "timeout {t:?}");
        join_bounded(&p);
    }
}

#[test]
fn spsc_push_timeout_with_a_huge_timeout_waits_for_room() {
    for t in HUGE {
        let q = SpscQueue::<u64>::new(2).unwrap();
        let mut tx = q.producer().unwrap();
        let mut rx = q.consumer().unwrap();
        let mut n = 0;
        while tx.try_push(n).is_ok() {
            n += 1;
        }
        let r = returns_after_peer(
            "SpscQueue push_timeout",
            move || tx.push_timeout(99, t),
            || {
                assert_eq!(rx.pop(), Ok(0));
            },
        );
        assert_eq!(r, Ok(()), "timeout {t:?}");
    }
}

#[test]
fn byte_queue_timeouts_and_poll_with_a_huge_timeout_wait_for_the_peer() {
    for t in HUGE {
        let q = ByteQueue::new(256, 16).unwrap();
        let mut tx = q.producer().unwrap();
        let mut rx = q.consumer().unwrap();
        let r = returns_after_peer("ByteConsumer poll", move || (rx.poll(t), rx), || tx.send(b"a").unwrap());
        let (ready, mut rx) = r;
        assert!(ready, "poll, timeout {t:?}");
        assert_eq!(rx.recv().unwrap(), b"a");

        let r = returns_after_peer(
            "ByteConsumer recv_timeout_into",
            move || {
                let mut out = Vec::new();
                rx.recv_timeout_into(&mut out, t).map(|()| out)
            },
            || tx.send(b"b").unwrap(),
        );
        assert_eq!(r, Ok(b"b".to_vec()), "recv_timeout_into, timeout {t:?}");

        let q = ByteQueue::new(64, 16).unwrap();
        let mut tx = q.producer().unwrap();
        let mut rx = q.consumer().unwrap();
        while tx.try_send(b"xxxx").is_ok() {}
        let r = returns_after_peer(
            "ByteProducer send_timeout",
            move || tx.send_timeout(b"yy", t),
            || {
                assert_eq!(rx.recv().unwrap(), b"xxxx");
            },
        );
        assert_eq!(r, Ok(()), "send_timeout, timeout {t:?}");
    }
}

#[test]
fn byte_consumer_poll_with_a_huge_timeout_ends_when_the_producer_is_killed() {
    for t in HUGE {
        let q = ByteQueue::create(&name("poll-killed"), 256, 16).unwrap();
        let attached = Event::create(&name("poll-killed-attached")).unwrap();
        let mut p = Process::new(send_role_then_hang, (q.clone(), attached.clone())).with_daemon(true);
        p.start().unwrap();
        let mut rx = q.consumer().unwrap();
        if !attached.wait_timeout(BOUND) {
            let _ = p.kill();
            panic!("child did not take the sending role within {BOUND:?}");
        }
        let r = returns_after_peer(
            "ByteConsumer poll",
            move || rx.poll(t),
            || {
                p.kill().unwrap();
                assert!(matches!(p.join_timeout(BOUND), Err(ProcessError::Signaled { signal: 9, .. })));
            },
        );
        assert!(!r, "poll saw a frame from a killed producer, timeout {t:?}");
    }
}

#[test]
fn connection_poll_and_recv_with_a_huge_timeout_wait_for_the_peer() {
    for t in HUGE {
        let (mut a, mut b) = shmproc::pipe(true).unwrap();
        let r = returns_after_peer("Connection poll", move || (a.poll(t), a), || b.send(&5u8).unwrap());
        let (ready, mut a) = r;
        assert_eq!(ready, Ok(true), "poll, timeout {t:?}");
        assert_eq!(a.recv::<u8>(), Ok(5));
        let r = returns_after_peer(
            "Connection recv_bytes_timeout",
            move || a.recv_bytes_timeout(t),
            || {
                b.send_bytes(b"hi").unwrap();
            },
        );
        assert_eq!(r, Ok(b"hi".to_vec()), "recv_bytes_timeout, timeout {t:?}");
    }
}

/// A multi-handle queue's blocking pop and push, and the peer's actions.
struct QueueOps<Q> {
    pop_timeout: fn(&Q, Duration) -> Result<u64, GetTimeoutError>,
    push_timeout: fn(&Q, u64, Duration) -> Result<(), PutTimeoutError<u64>>,
    try_push: fn(&Q, u64) -> bool,
    pop: fn(&Q) -> u64,
}

/// An empty queue's pop with timeout `t` gets the peer's item; a full
/// queue's push with timeout `t` gets the room the peer makes.
fn pop_and_push_wait_for_the_peer<Q: Clone + Send + 'static>(what: &str, q: Q, ops: QueueOps<Q>, t: Duration) {
    let q2 = q.clone();
    let r = returns_after_peer(
        &format!("{what} pop"),
        move || (ops.pop_timeout)(&q2, t),
        || assert!((ops.try_push)(&q, 3)),
    );
    assert_eq!(r, Ok(3), "{what} pop, timeout {t:?}");
    let mut n = 0;
    while (ops.try_push)(&q, 10 + n) {
        n += 1;
    }
    let q2 = q.clone();
    let r = returns_after_peer(
        &format!("{what} push"),
        move || (ops.push_timeout)(&q2, 99, t),
        || assert_eq!((ops.pop)(&q), 10),
    );
    assert_eq!(r, Ok(()), "{what} push, timeout {t:?}");
}

#[test]
fn mpmc_and_queue_timeouts_with_a_huge_timeout_wait_for_the_peer() {
    for t in HUGE {
        let mpmc = QueueOps::<MpmcQueue<u64>> {
            pop_timeout: |q, t| q.pop_timeout(t),
            push_timeout: |q, v, t| q.push_timeout(v, t),
            try_push: |q, v| q.try_push(v).is_ok(),
            pop: |q| q.pop().unwrap(),
        };
        pop_and_push_wait_for_the_peer("MpmcQueue", MpmcQueue::new(2).unwrap(), mpmc, t);
        let queue = QueueOps::<Queue<u64>> {
            pop_timeout: |q, t| q.get_timeout(t),
            push_timeout: |q, v, t| q.put_timeout(v, t),
            try_push: |q, v| q.put_nowait(v).is_ok(),
            pop: |q| q.get().unwrap(),
        };
        pop_and_push_wait_for_the_peer("Queue", Queue::new(1).unwrap(), queue, t);

        let jq = JoinableQueue::<u64>::new(1).unwrap();
        jq.put(1).unwrap();
        let jq2 = jq.clone();
        let r = returns_after_peer(
            "JoinableQueue join_timeout",
            move || jq2.join_timeout(t),
            || {
                jq.get().unwrap();
                jq.task_done().unwrap();
            },
        );
        assert!(r, "join_timeout, timeout {t:?}");
    }
}

/// Creates an object with `$new`, holds it with `$hold`, runs `$call` on a
/// clone (see `returns_after_peer`); the peer releases the hold.
macro_rules! held_then_released {
    ($new:expr, |$h:ident| $hold:expr, |$c:ident| $call:expr) => {{
        let obj = $new.unwrap();
        let held = {
            let $h = &obj;
            $hold.unwrap()
        };
        let $c = obj.clone();
        returns_after_peer(stringify!($call), move || $call, || drop(held))
    }};
}

#[test]
fn lock_timeouts_with_a_huge_timeout_wait_for_the_holder() {
    for t in HUGE {
        let r = held_then_released!(Lock::new(), |l| l.lock(), |l| l.lock_timeout(t).is_ok());
        assert!(r, "Lock, timeout {t:?}");
        let r = held_then_released!(Mutex::new(1u32), |m| m.lock(), |m| m.lock_timeout(t).map(|g| g.get(0)).ok());
        assert_eq!(r, Some(Some(1)), "Mutex, timeout {t:?}");
        let r = held_then_released!(RLock::new(), |l| l.lock(), |l| l.lock_timeout(t).is_ok());
        assert!(r, "RLock, timeout {t:?}");
        let r =
            held_then_released!(Value::new(2u32), |v| v.get_lock(), |v| v.get_lock_timeout(t).map(|g| g.get(0)).ok());
        assert_eq!(r, Some(Some(2)), "Value, timeout {t:?}");
        let r = held_then_released!(Condition::new(), |c| c.lock(), |c| c.lock_timeout(t).is_ok());
        assert!(r, "Condition lock, timeout {t:?}");
    }
}

#[test]
fn condition_waits_with_a_huge_timeout_wait_for_a_notify() {
    for t in HUGE {
        let c = Condition::new().unwrap();
        // Set under the lock just before waiting: a notifier that sees it
        // (under the same lock) cannot notify before the wait began.
        let waiting = Arc::new(AtomicBool::new(false));
        let (c2, w2) = (c.clone(), waiting.clone());
        let notify_once_waiting = || {
            let end = Instant::now() + BOUND;
            loop {
                let g = c.lock().unwrap();
                if waiting.swap(false, Ordering::Relaxed) {
                    c.notify_all(&g);
                    return;
                }
                drop(g);
                assert!(Instant::now() < end, "the waiter never waited");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let r = returns_after_peer(
            "Condition wait_timeout",
            move || {
                let mut g = c2.lock().unwrap();
                w2.store(true, Ordering::Relaxed);
                c2.wait_timeout(&mut g, t).map_err(|e| format!("{e:?}"))
            },
            notify_once_waiting,
        );
        assert_eq!(r, Ok(true), "wait_timeout, timeout {t:?}");

        let flag = Arc::new(AtomicBool::new(false));
        let (c2, f2) = (c.clone(), flag.clone());
        let r = returns_after_peer(
            "Condition wait_for_timeout",
            move || {
                let mut g = c2.lock().unwrap();
                c2.wait_for_timeout(&mut g, t, || f2.load(Ordering::Relaxed)).map_err(|e| format!("{e:?}"))
            },
            || {
                let g = c.lock().unwrap();
                flag.store(true, Ordering::Relaxed);
                c.notify_all(&g);
            },
        );
        assert_eq!(r, Ok(true), "wait_for_timeout, timeout {t:?}");
    }
}

#[test]
fn semaphore_event_and_barrier_waits_with_a_huge_timeout_wait_for_the_peer() {
    for t in HUGE {
        let s = Semaphore::new(0).unwrap();
        let s2 = s.clone();
        let r = returns_after_peer("Semaphore acquire_timeout", move || s2.acquire_timeout(t), || s.release().unwrap());
        assert!(r, "Semaphore, timeout {t:?}");

        let b = BoundedSemaphore::new(1).unwrap();
        b.acquire();
        let b2 = b.clone();
        let r = returns_after_peer(
            "BoundedSemaphore acquire_timeout",
            move || b2.acquire_timeout(t),
            || b.release().unwrap(),
        );
        assert!(r, "BoundedSemaphore, timeout {t:?}");

        let ev = Event::new().unwrap();
        let ev2 = ev.clone();
        let r = returns_after_peer("Event wait_timeout", move || ev2.wait_timeout(t), || ev.set());
        assert!(r, "Event, timeout {t:?}");

        let bar = Barrier::new(2).unwrap();
        let bar2 = bar.clone();
        let mine = std::cell::Cell::new(None);
        let r = returns_after_peer(
            "Barrier wait_timeout",
            move || bar2.wait_timeout(t),
            || mine.set(Some(bar.wait_timeout(BOUND))),
        );
        let mut idx = [r.unwrap(), mine.take().unwrap().unwrap()];
        idx.sort();
        assert_eq!(idx, [0, 1], "Barrier, timeout {t:?}");
    }
}

#[test]
fn process_join_timeout_with_a_huge_timeout_waits_for_the_exit() {
    for t in HUGE {
        let go = Event::create(&name("join-go")).unwrap();
        let mut p = Process::new(exit_when_set, go.clone()).with_daemon(true);
        p.start().unwrap();
        let p = Arc::new(p);
        let p2 = p.clone();
        let r = returns_after_peer(
            "Process join_timeout",
            move || p2.join_timeout(t).map_err(|e| e.to_string()),
            || go.set(),
        );
        assert_eq!(r, Ok(true), "timeout {t:?}");
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// The rule changes nothing for ordinary timeouts: they still expire, and
/// a timed-out push hands the item back.
#[test]
fn a_short_timeout_still_times_out() {
    let q = SpscQueue::<u64>::new(2).unwrap();
    let mut tx = q.producer().unwrap();
    let mut rx = q.consumer().unwrap();
    assert_eq!(rx.pop_timeout(Duration::from_millis(1)), Err(PopTimeoutError::TimedOut));
    while tx.try_push(0).is_ok() {}
    assert_eq!(tx.push_timeout(5, Duration::from_millis(1)), Err(PushTimeoutError::TimedOut(5)));
}
