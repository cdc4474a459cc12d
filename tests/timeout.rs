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

use shmproc::queue::{ByteQueue, MpmcQueue, PopError, PushError, SpscQueue};
use shmproc::{
    Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Mutex, Process, Queue, RLock, Semaphore, Value,
};

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
        let q = ByteQueue::new((256, 16)).unwrap();
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

        let q = ByteQueue::new((64, 16)).unwrap();
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

#[test]
fn mpmc_and_queue_timeouts_with_a_huge_timeout_wait_for_the_peer() {
    for t in HUGE {
        let q = MpmcQueue::<u64>::new(2).unwrap();
        let q2 = q.clone();
        let r = returns_after_peer("MpmcQueue pop_timeout", move || q2.pop_timeout(t), || q.push(3).unwrap());
        assert_eq!(r, Ok(3), "pop_timeout, timeout {t:?}");
        while q.try_push(1).is_ok() {}
        let q2 = q.clone();
        let r = returns_after_peer(
            "MpmcQueue push_timeout",
            move || q2.push_timeout(4, t),
            || {
                q.pop().unwrap();
            },
        );
        assert_eq!(r, Ok(()), "push_timeout, timeout {t:?}");

        let q = Queue::<u64>::new(1).unwrap();
        let q2 = q.clone();
        let r = returns_after_peer("Queue get_timeout", move || q2.get_timeout(t), || q.put(8).unwrap());
        assert_eq!(r, Ok(8), "get_timeout, timeout {t:?}");
        q.put(1).unwrap();
        let q2 = q.clone();
        let r = returns_after_peer(
            "Queue put_timeout",
            move || q2.put_timeout(9, t),
            || {
                q.get().unwrap();
            },
        );
        assert_eq!(r, Ok(()), "put_timeout, timeout {t:?}");
        assert_eq!(q.get_timeout(BOUND), Ok(9));

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

#[test]
fn lock_timeouts_with_a_huge_timeout_wait_for_the_holder() {
    for t in HUGE {
        let lock = Lock::new().unwrap();
        let held = lock.lock().unwrap();
        let l2 = lock.clone();
        let r = returns_after_peer("Lock lock_timeout", move || l2.lock_timeout(t).is_ok(), || drop(held));
        assert!(r, "Lock, timeout {t:?}");

        let m = Mutex::new(1u32).unwrap();
        let held = m.lock().unwrap();
        let m2 = m.clone();
        let r =
            returns_after_peer("Mutex lock_timeout", move || m2.lock_timeout(t).map(|g| g.get(0)).ok(), || drop(held));
        assert_eq!(r, Some(Some(1)), "Mutex, timeout {t:?}");

        let rl = RLock::new().unwrap();
        let held = rl.lock().unwrap();
        let rl2 = rl.clone();
        let r = returns_after_peer("RLock lock_timeout", move || rl2.lock_timeout(t).is_ok(), || drop(held));
        assert!(r, "RLock, timeout {t:?}");

        let v = Value::new(2u32).unwrap();
        let held = v.get_lock().unwrap();
        let v2 = v.clone();
        let r = returns_after_peer(
            "Value get_lock_timeout",
            move || v2.get_lock_timeout(t).map(|g| g.get(0)).ok(),
            || drop(held),
        );
        assert_eq!(r, Some(Some(2)), "Value, timeout {t:?}");

        let c = Condition::new().unwrap();
        let held = c.lock().unwrap();
        let c2 = c.clone();
        let r = returns_after_peer("Condition lock_timeout", move || c2.lock_timeout(t).is_ok(), || drop(held));
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
    assert_eq!(rx.pop_timeout(Duration::from_millis(1)), Err(PopError::TimedOut));
    while tx.try_push(0).is_ok() {}
    assert_eq!(tx.push_timeout(5, Duration::from_millis(1)), Err(PushError::TimedOut(5)));
}
