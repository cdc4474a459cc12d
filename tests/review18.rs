//! Review 18: queues' and pipes' less-used operations: the borrowed
//! forms, batches, loans, close vs close_all, JoinableQueue counts,
//! hostile Handoff impls, frames at the limit, unbounded queues at their
//! memory limit.

mod common;

use std::time::Duration;

use shmproc::{
    GetError, GetTimeoutError, Handoff, HandoffError, JoinableQueue, PutError, PutTimeoutError, Queue, SimpleQueue,
    TryGetError, TryPutError,
};

/// An item whose encoding is empty (not plain data).
#[derive(Debug, Clone, PartialEq)]
struct Nothing;
impl Handoff for Nothing {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(Nothing)
    }
}

/// An item whose encode panics when asked to.
#[derive(Debug, Clone, PartialEq)]
struct Touchy(u64);
impl Handoff for Touchy {
    fn encode(&self, out: &mut Vec<u8>) {
        if self.0 == 13 {
            panic!("unlucky");
        }
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let v = u64::decode(input)?;
        if v == 7 {
            panic!("decode of 7");
        }
        Ok(Touchy(v))
    }
}

#[test]
fn zero_byte_items_go_through_every_queue_form() {
    for q in [Queue::<Nothing>::new(2).unwrap(), Queue::<Nothing>::new(0).unwrap()] {
        q.put(Nothing).unwrap();
        q.put_ref(&Nothing).unwrap();
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.get().unwrap(), Nothing);
        let mut out = Nothing;
        q.get_into_timeout(&mut out, Duration::from_secs(5)).unwrap();
        assert!(q.empty());
        assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
    }
    let q = Queue::<()>::new(0).unwrap();
    q.put(()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(()));
}

#[test]
fn a_panicking_encode_or_decode_leaves_the_queue_working() {
    for q in [Queue::<Touchy>::new(4).unwrap(), Queue::<Touchy>::new(0).unwrap()] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.put(Touchy(13))));
        assert!(r.is_err());
        assert_eq!(q.qsize(), 0);
        q.put(Touchy(1)).unwrap();
        q.put(Touchy(7)).unwrap();
        q.put(Touchy(2)).unwrap();
        assert_eq!(q.get().unwrap(), Touchy(1));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.get()));
        assert!(r.is_err());
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), Touchy(2));
        assert!(q.empty());
    }
}

#[test]
fn frames_at_the_limit_and_one_past_it() {
    let q = Queue::<Vec<u8>>::with_max_frame(2, 200).unwrap();
    let max = q.max_frame();
    let fits = vec![5u8; max - 8];
    let over = vec![6u8; max - 7];
    q.put_ref(&fits).unwrap();
    assert_eq!(q.put_ref_nowait(&over), Err(TryPutError::TooLarge { item: (), len: max + 1, max }));
    assert_eq!(
        q.put_timeout(over.clone(), Duration::ZERO),
        Err(PutTimeoutError::TooLarge { item: over.clone(), len: max + 1, max })
    );
    let mut got = vec![];
    q.get_into(&mut got).unwrap();
    assert_eq!(got, fits);
    // Unbounded: up to its max item, past it TooLarge.
    let u = Queue::<Vec<u8>>::unbounded_with_limit(1 << 21).unwrap();
    let max = u.max_frame();
    let fits = vec![5u8; max - 8];
    let over = vec![6u8; max - 7];
    u.put_ref(&fits).unwrap();
    assert!(matches!(u.put_ref(&over), Err(PutError::TooLarge { len, .. }) if len == max + 1), "{max}");
    assert!(matches!(u.put_nowait(over.clone()), Err(TryPutError::TooLarge { len, .. }) if len == max + 1));
    assert_eq!(u.get_timeout(Duration::from_secs(5)).unwrap(), fits);
}

#[test]
fn an_unbounded_queue_at_its_limit_is_full_loses_nothing_and_keeps_order() {
    let q = Queue::<String>::unbounded_with_limit(1 << 20).unwrap();
    let mut n = 0u64;
    loop {
        match q.put_ref_nowait(&format!("item-{n}")) {
            Ok(()) => n += 1,
            Err(TryPutError::Full(())) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(n < 1_000_000);
    }
    assert!(q.full());
    assert_eq!(q.qsize() as u64, n);
    assert_eq!(q.put_timeout("x".into(), Duration::from_millis(10)), Err(PutTimeoutError::TimedOut("x".into())));
    // Half out, then fill again, then all out in order.
    let mut next = 0u64;
    let mut s = String::new();
    for _ in 0..n / 2 {
        q.get_into_nowait(&mut s).unwrap();
        assert_eq!(s, format!("item-{next}"));
        next += 1;
    }
    let mut m = n;
    while q.put_nowait(format!("item-{m}")).is_ok() {
        m += 1;
        assert!(m < 2_000_000);
    }
    while next < m {
        assert_eq!(q.get_nowait().unwrap(), format!("item-{next}"));
        next += 1;
    }
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
}

#[test]
fn close_and_close_all_then_every_operation() {
    for q in [Queue::<String>::new(4).unwrap(), Queue::<String>::new(0).unwrap()] {
        let other = q.clone();
        q.put("a".into()).unwrap();
        q.close();
        let s = "b".to_string();
        assert_eq!(q.put_ref(&s), Err(PutError::Closed(())));
        assert_eq!(q.put_ref_nowait(&s), Err(TryPutError::Closed(())));
        assert_eq!(q.put_ref_timeout(&s, Duration::MAX), Err(PutTimeoutError::Closed(())));
        let mut out = String::from("keep");
        assert_eq!(q.get_into(&mut out), Err(GetError::Closed));
        assert_eq!(q.get_into_nowait(&mut out), Err(TryGetError::Closed));
        assert_eq!(q.get_into_timeout(&mut out, Duration::MAX), Err(GetTimeoutError::Closed));
        assert_eq!(out, "keep");
        assert_eq!(q.qsize(), 1);
        assert!(!q.empty());
        other.close_all();
        let big = "x".repeat(1 << 22);
        assert_eq!(other.put_ref(&big), Err(PutError::Closed(())));
        assert_eq!(other.put_ref_timeout(&s, Duration::MAX), Err(PutTimeoutError::Closed(())));
        assert_eq!(other.put_timeout(s.clone(), Duration::ZERO), Err(PutTimeoutError::Closed(s.clone())));
        other.get_into_timeout(&mut out, Duration::MAX).unwrap();
        assert_eq!(out, "a");
        assert_eq!(other.get_into_timeout(&mut out, Duration::MAX), Err(GetTimeoutError::Closed));
        assert_eq!(other.get_timeout(Duration::ZERO), Err(GetTimeoutError::Closed));
        assert_eq!(other.get_nowait(), Err(TryGetError::Closed));
        assert!(other.empty());
        assert_eq!(other.qsize(), 0);
        assert!(!other.full() || q.maxsize() == 0);
    }
}

#[test]
fn joinable_counts_bounded_and_unbounded() {
    for q in [JoinableQueue::<String>::new(4).unwrap(), JoinableQueue::<String>::new(0).unwrap()] {
        q.join();
        assert!(q.task_done().is_err());
        q.put("a".into()).unwrap();
        q.put_ref(&"b".to_string()).unwrap();
        assert!(q.put_ref(&"x".repeat(1 << 30)).is_err());
        assert_eq!(q.unfinished_tasks(), 2);
        assert!(!q.join_timeout(Duration::ZERO));
        q.get().unwrap();
        q.task_done().unwrap();
        q.task_done().unwrap(); // before its get: Python allows it
        assert!(q.task_done().is_err());
        assert!(q.join_timeout(Duration::ZERO));
        assert_eq!(q.unfinished_tasks(), 0);
        assert_eq!(q.qsize(), 1);
        q.close_all();
        assert_eq!(q.unfinished_tasks(), 0);
    }
}

#[test]
fn simple_queue_semantics() {
    let q = SimpleQueue::<(u32, String)>::new(0).unwrap();
    assert!(q.empty());
    q.put((1, "one".into())).unwrap();
    assert!(!q.empty());
    assert_eq!(q.get().unwrap(), (1, "one".into()));
    q.close();
    assert_eq!(q.put((2, "two".into())), Err(PutError::Closed((2, "two".into()))));
    assert_eq!(q.get_timeout(Duration::ZERO), Err(GetTimeoutError::Closed));
}

#[test]
fn get_timeout_zero_is_a_try() {
    let q = Queue::<u64>::new(2).unwrap();
    assert_eq!(q.get_timeout(Duration::ZERO), Err(GetTimeoutError::TimedOut));
    q.put(4).unwrap();
    assert_eq!(q.get_timeout(Duration::ZERO), Ok(4));
    let u = Queue::<String>::new(0).unwrap();
    assert_eq!(u.get_timeout(Duration::ZERO), Err(GetTimeoutError::TimedOut));
    u.put("z".into()).unwrap();
    assert_eq!(u.get_timeout(Duration::ZERO).unwrap(), "z");
}

use shmproc::{
    Connection, Event, PipeRecvBytesTimeoutError, PipeSendTimeoutError, PipeTryRecvBytesError, PipeTrySendError,
    Process,
};

#[test]
fn pipe_loans_dropped_forgotten_and_at_the_limit() {
    let (mut a, mut b) = shmproc::pipe_with(true, 4096, 1024).unwrap();
    // A write loan dropped without commit sends nothing (a loan has no Drop:
    // forgetting one is the same).
    {
        let mut l = a.send_loan(10).unwrap();
        l.write_at(0, &[1; 10]);
    }
    let _forgotten = a.try_send_loan(20).unwrap();
    assert_eq!(b.try_recv_bytes(), Err(PipeTryRecvBytesError::Empty));
    assert!(!b.poll(Duration::ZERO).unwrap());
    // 0 bytes, and exactly max_frame; max_frame + 1 refused.
    a.send_loan(0).unwrap().commit().unwrap();
    let mut l = a.send_loan_timeout(1024, Duration::from_secs(5)).unwrap();
    l.write_at(1000, &[9; 24]);
    l.commit().unwrap();
    assert!(matches!(a.try_send_loan(1025), Err(PipeTrySendError::TooLarge { len: 1025, max: 1024 })));
    assert!(matches!(a.send_loan_timeout(1025, Duration::ZERO), Err(PipeSendTimeoutError::TooLarge { .. })));
    // A read loan dropped or forgotten leaves the frame.
    assert_eq!(b.recv_loan().unwrap().len(), 0);
    let _forgotten = b.try_recv_loan().unwrap();
    assert_eq!(b.recv_loan_timeout(Duration::from_secs(5)).unwrap().len(), 0);
    b.recv_loan().unwrap().release();
    let mut buf = vec![7u8; 5000];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 1024);
    assert_eq!(&buf[1000..], &[9; 24]);
    assert_eq!(b.try_recv_bytes_into(&mut buf), Err(PipeTryRecvBytesError::Empty));
    // Many rounds of forgotten loans do not wedge the ring.
    for i in 0..2000u32 {
        let _forgotten = a.try_send_loan((i % 1000) as usize).unwrap();
        a.send_bytes(&i.to_le_bytes()).unwrap();
        let _forgotten = b.try_recv_loan().unwrap();
        assert_eq!(b.recv_bytes().unwrap(), i.to_le_bytes());
    }
    // Loans after close / shutdown.
    let _ = a.send_loan(4).unwrap();
    b.shutdown();
    assert!(a.send_loan(4).is_err());
}

shmproc::entry! {
    fn r18_hold_end(args: (Connection, Event)) {
        let (_conn, ready) = args;
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

shmproc::entry! {
    fn r18_send_two_then_wait(args: (Connection, Event)) {
        let (mut conn, ready) = args;
        conn.send_bytes(b"one").unwrap();
        conn.send_bytes(b"two").unwrap();
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

shmproc::entry! {
    fn r18_recv_one_then_wait(args: (Connection, Event)) {
        let (mut conn, ready) = args;
        conn.recv_bytes().unwrap();
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn sends_to_a_child_killed_before_claiming_its_end_fail_with_disconnected() {
    for killed_at_once in [true, false] {
        let (mut a, b) = shmproc::pipe_with(true, 4096, 1024).unwrap();
        let ready = Event::new().unwrap();
        let mut p = Process::new(r18_hold_end, (b, ready.clone())).with_daemon(true);
        p.start().unwrap();
        if !killed_at_once {
            assert!(ready.wait_timeout(Duration::from_secs(30)));
        }
        p.kill().unwrap();
        let _ = common::join(&p);
        let mut r = Ok(());
        for _ in 0..100 {
            r = a.send_bytes_timeout(&[1; 1000], Duration::from_secs(20));
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(PipeSendTimeoutError::Disconnected), "killed at once: {killed_at_once}");
        // A loan too.
        assert!(a.send_loan_timeout(10, Duration::from_secs(20)).is_err());
    }
}

#[test]
fn loans_held_while_the_peer_dies() {
    // A read loan held while the sender dies.
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(r18_send_two_then_wait, (b, ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    let l = a.recv_loan_timeout(Duration::from_secs(20)).unwrap();
    p.kill().unwrap();
    let _ = common::join(&p);
    assert_eq!(l.to_vec(), b"one");
    l.release();
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)).unwrap(), b"two");
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)), Err(PipeRecvBytesTimeoutError::Disconnected));

    // A write loan held while the receiver dies.
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(r18_recv_one_then_wait, (b, ready.clone())).with_daemon(true);
    p.start().unwrap();
    a.send_bytes(b"x").unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    let mut l = a.send_loan_timeout(3, Duration::from_secs(20)).unwrap();
    p.kill().unwrap();
    let _ = common::join(&p);
    l.write_at(0, b"abc");
    let _ = l.commit();
    // (A sender learns of a killed receiver at its next liveness check:
    // sends may still succeed until then, never block for good.)
    let mut r = Ok(());
    for _ in 0..100_000 {
        r = a.send_bytes_timeout(b"y", Duration::from_secs(20));
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(PipeSendTimeoutError::Disconnected));
}

shmproc::entry! {
    fn r18_expect_disconnected(mut conn: Connection) -> Result<(), String> {
        match conn.recv_bytes_timeout(Duration::from_secs(20)) {
            Err(PipeRecvBytesTimeoutError::Disconnected) => Ok(()),
            r => Err(format!("the peer's end was dropped unused, yet recv gave {r:?}")),
        }
    }
}

/// A pipe end whose put into a queue (or send through a pipe) fails comes
/// back to the caller as it was: dropped unused, its peer (a child
/// waiting in `recv`) learns that nobody will use it, as when an end
/// never put anywhere is dropped. Before the fix, encoding the end for
/// the failed put had marked it "handed on" and freed its roles, so the
/// child waited for good.
#[test]
fn a_pipe_end_whose_put_or_send_fails_is_handed_back_unchanged() {
    for how in ["put_nowait full", "put_timeout full", "unbounded put_nowait full", "put closed", "send_value full"] {
        let (a, b) = shmproc::pipe(true).unwrap();
        let mut p = Process::new(r18_expect_disconnected, a).with_daemon(true);
        p.start().unwrap();
        let (_x, y) = shmproc::pipe(true).unwrap();
        let b = match how {
            "put_nowait full" => {
                let q = Queue::<Connection>::new(1).unwrap();
                q.put(y).unwrap();
                let Err(TryPutError::Full(b)) = q.put_nowait(b) else { panic!("{how}") };
                b
            }
            "put_timeout full" => {
                let q = Queue::<Option<Connection>>::new(1).unwrap();
                q.put(Some(y)).unwrap();
                let Err(PutTimeoutError::TimedOut(Some(b))) = q.put_timeout(Some(b), Duration::from_millis(5)) else {
                    panic!("{how}")
                };
                b
            }
            "unbounded put_nowait full" => {
                let q = Queue::<Option<Connection>>::unbounded_with_limit(1 << 20).unwrap();
                drop(y);
                let mut i = 0u64;
                while q.put_nowait(None).is_ok() {
                    i += 1;
                    assert!(i < 10_000_000);
                }
                let Err(TryPutError::Full(Some(b))) = q.put_nowait(Some(b)) else { panic!("{how}") };
                b
            }
            "put closed" => {
                let q = Queue::<Vec<Connection>>::new(2).unwrap();
                q.close_all();
                drop(y);
                let Err(PutError::Closed(mut v)) = q.put(vec![b]) else { panic!("{how}") };
                v.pop().unwrap()
            }
            "send_value full" => {
                let (mut c, _d) = shmproc::pipe_with(true, 256, 64).unwrap();
                while c.try_send_bytes(&[0; 64]).is_ok() {}
                assert_eq!(c.try_send_value(&b), Err(PipeTrySendError::Full));
                drop(y);
                b
            }
            _ => unreachable!(),
        };
        drop(b);
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{how}");
    }
}

shmproc::entry! {
    fn r18_get_end_and_drop_it(q: Queue<Connection>) -> Result<(), String> {
        let end = q.get_timeout(Duration::from_secs(20)).map_err(|e| format!("get: {e:?}"))?;
        drop(end);
        Ok(())
    }
}

shmproc::entry! {
    fn r18_get_end_and_wait(args: (Queue<Connection>, Event)) -> Result<(), String> {
        let (q, got) = args;
        let _end = q.get_timeout(Duration::from_secs(20)).map_err(|e| format!("get: {e:?}"))?;
        got.set();
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    }
}

/// A pipe end sent through a queue and dropped unused by the process that
/// got it (the sender dropped its own copy): its peer learns that nobody
/// will use it, as when the end is handed to a child as its argument.
#[test]
fn a_pipe_end_got_from_a_queue_and_dropped_unused_tells_its_peer() {
    for killed in [false, true] {
        let q = Queue::<Connection>::new(2).unwrap();
        let got = Event::new().unwrap();
        let mut p = if killed {
            Process::new(r18_get_end_and_wait, (q.clone(), got.clone())).with_daemon(true)
        } else {
            Process::new(r18_get_end_and_drop_it, q.clone()).with_daemon(true)
        };
        p.start().unwrap();
        let (mut a, b) = shmproc::pipe(true).unwrap();
        q.put(b).unwrap();
        if killed {
            assert!(got.wait_timeout(Duration::from_secs(30)));
            p.kill().unwrap();
        }
        let _ = common::join(&p);
        assert_eq!(
            a.recv_bytes_timeout(Duration::from_secs(20)),
            Err(PipeRecvBytesTimeoutError::Disconnected),
            "killed: {killed}"
        );
    }
}

#[test]
fn unbounded_joinable_counts_across_retired_rings() {
    let q = JoinableQueue::<String>::new(0).unwrap();
    let n = 20_000u64;
    for i in 0..n {
        q.put_ref(&format!("task-{i}")).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), n);
    let mut s = String::new();
    for i in 0..n {
        q.get_into_timeout(&mut s, Duration::from_secs(5)).unwrap();
        assert_eq!(s, format!("task-{i}"));
        if i % 2 == 0 {
            q.task_done().unwrap();
        }
    }
    assert_eq!(q.unfinished_tasks(), n / 2);
    assert!(!q.join_timeout(Duration::ZERO));
    for _ in 0..n / 2 {
        q.task_done().unwrap();
    }
    assert!(q.task_done().is_err());
    assert!(q.join_timeout(Duration::from_secs(5)));
    q.put("again".into()).unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert_eq!(q.qsize(), 1);
}

#[test]
fn batches_partial_empty_and_after_close() {
    let q = shmproc::queue::MpmcQueue::<u32>::new(5).unwrap();
    assert_eq!(q.push_slice(&[]), 0);
    assert_eq!(q.pop_into(&mut []), 0);
    assert_eq!(q.push_slice(&[1, 2, 3, 4, 5, 6, 7]), 5);
    let mut out = [0u32; 3];
    assert_eq!(q.pop_into(&mut out), 3);
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(q.push_slice(&[8, 9, 10, 11]), 3);
    q.close();
    assert_eq!(q.push_slice(&[12]), 0);
    let mut out = [0u32; 10];
    assert_eq!(q.pop_into(&mut out), 5);
    assert_eq!(&out[..5], [4, 5, 8, 9, 10]);
    assert_eq!(q.pop_into(&mut out), 0);

    let s = shmproc::queue::SpscQueue::<u16>::new(4).unwrap();
    let mut tx = s.producer().unwrap();
    let mut rx = s.consumer().unwrap();
    assert_eq!(tx.push_slice(&[]), 0);
    assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5]), 4);
    let mut o = [0u16; 2];
    assert_eq!(rx.pop_into(&mut o), 2);
    let _unused = tx.loan().unwrap(); // dropped: nothing published
    assert_eq!(tx.push_slice(&[6, 7, 8]), 2);
    let _unread = rx.peek().unwrap(); // dropped: the item stays
    let mut o = [0u16; 8];
    assert_eq!(rx.pop_into(&mut o), 4);
    assert_eq!(&o[..4], [3, 4, 6, 7]);
    s.close();
    assert_eq!(tx.push_slice(&[9]), 0);
    assert!(tx.loan().is_err());
}

shmproc::task! { fn r18_end_len(c: Connection) -> u64 { u64::from(c.readable()) } }

/// A pipe end given to `apply_async` of a closed pool (refused) is
/// dropped as it was: its peer learns it is gone. Before, its encoding
/// had marked it handed on, and the peer waited for good.
#[test]
fn a_pipe_end_refused_by_a_closed_pool_tells_its_peer() {
    let pool = shmproc::Pool::new(1).unwrap();
    pool.close();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    assert!(pool.apply_async(r18_end_len, b).is_err());
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)), Err(PipeRecvBytesTimeoutError::Disconnected));
    pool.join().unwrap();
    // Accepted: the worker gets the end (and drops it unused).
    let pool = shmproc::Pool::new(1).unwrap();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    assert_eq!(pool.apply(r18_end_len, b).unwrap(), 1);
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)), Err(PipeRecvBytesTimeoutError::Disconnected));
    pool.close();
    pool.join().unwrap();
}

/// An unbounded queue's rings fit the items being put: after one large
/// item, short items get short slots again. Before, frames only grew:
/// after one 100 KB string (already got), the queue held 10 240 short
/// strings under the default 1 GiB limit (100 KB slots each), where
/// Python's unbounded queue (and this one, before the large item) takes
/// millions.
#[test]
fn short_items_after_one_large_item_get_short_slots_again() {
    let q = Queue::<String>::new(0).unwrap();
    q.put("x".repeat(100_000)).unwrap();
    assert_eq!(q.get().unwrap().len(), 100_000);
    let mut n = 0u64;
    while q.put_nowait(format!("item-{n}")).is_ok() {
        n += 1;
        if n == 200_000 {
            break;
        }
    }
    let mut m = 0;
    while q.get_nowait().is_ok() {
        m += 1;
    }
    assert_eq!(m, n);
    assert_eq!(n, 200_000);
}

/// Large and short items in turn, the large ones growing a little each
/// time (as Python's `"L" * i`), all put before any is got: every one is
/// taken and arrives, in order. Before, each 64-byte step of the large
/// items made a new ring (up to 64 MiB each), and `put_nowait` said
/// `Full` after a few hundred items (the 1 GiB limit reached).
#[test]
fn items_growing_a_little_at_a_time_do_not_fill_an_unbounded_queue() {
    let q = Queue::<String>::new(0).unwrap();
    let item = |i: usize| if i.is_multiple_of(3) { "L".repeat(5000 + 4 * i) } else { format!("s{i}") };
    for i in 0..3000 {
        q.put_nowait(item(i)).unwrap();
    }
    for i in 0..3000 {
        assert_eq!(q.get_nowait().unwrap(), item(i));
    }
    assert!(q.empty());
}

shmproc::entry! {
    fn r18_recv_end_and_drop_it(mut conn: Connection) -> Result<(), String> {
        let end = conn.recv_value_timeout::<Connection>(Duration::from_secs(20)).map_err(|e| format!("recv: {e:?}"))?;
        drop(end);
        Ok(())
    }
}

/// As through a queue, a pipe end sent through another pipe and dropped
/// unused by its receiver tells its peer.
#[test]
fn a_pipe_end_got_through_a_pipe_and_dropped_unused_tells_its_peer() {
    let (mut c, d) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(r18_recv_end_and_drop_it, d).with_daemon(true);
    p.start().unwrap();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    c.send_value(&b).unwrap();
    drop(b);
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)), Err(PipeRecvBytesTimeoutError::Disconnected));
}

shmproc::task! { fn r18_send_on_end(mut c: Connection) -> u64 { u64::from(c.send_bytes(b"hi").is_ok()) } }

/// A put whose item's encode panics leaves this thread's handing of pipe
/// ends as it was: an end later given to a pool's map (encoded outside any
/// put) is the worker's to use. Before, the panic left the put's
/// collection of transfers in place, which then took the end's transfer
/// for good: the role stayed designated to this process and the worker's
/// send failed with a role error.
#[test]
fn a_panicking_encode_in_a_put_does_not_keep_later_pipe_ends() {
    let q = Queue::<Touchy>::new(2).unwrap();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.put(Touchy(13)))).is_err());
    let pool = shmproc::Pool::new(1).unwrap();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    assert_eq!(pool.map(r18_send_on_end, vec![b]).unwrap(), [1]);
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)).unwrap(), b"hi");
    pool.close();
    pool.join().unwrap();
}

/// Random puts and gets of items of mixed sizes (short, medium, large, in
/// runs) on unbounded queues with a small memory limit, against a model:
/// nothing lost, nothing duplicated, order kept, `Full` hands the item
/// back, and every put that was refused fits once the queue is drained.
#[test]
fn unbounded_mixed_sizes_against_a_model() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for limit in [1u64 << 20, 4 << 20] {
        let q = Queue::<Vec<u8>>::unbounded_with_limit(limit).unwrap();
        let mut model = std::collections::VecDeque::new();
        let mut seq = 0u32;
        let mut class = 0u64;
        let mut out = Vec::new();
        for _ in 0..6_000 {
            if rnd() % 50 == 0 {
                class = rnd() % 3;
            }
            let r = rnd();
            if r % 100 < 55 {
                let len = match class {
                    0 => (r >> 8) % 100,
                    1 => 1000 + (r >> 8) % 4000,
                    _ => 20_000 + (r >> 8) % 40_000,
                } as usize;
                let mut item = vec![(seq % 251) as u8; len.max(4)];
                item[..4].copy_from_slice(&seq.to_le_bytes());
                seq += 1;
                match q.put_nowait(item.clone()) {
                    Ok(()) => model.push_back(item),
                    Err(TryPutError::Full(back)) => {
                        assert_eq!(back, item);
                        // Drained, the queue takes it.
                        while let Ok(v) = q.get_nowait() {
                            assert_eq!(Some(v), model.pop_front());
                        }
                        assert!(model.is_empty());
                        q.put_nowait(item.clone()).unwrap();
                        model.push_back(item);
                    }
                    Err(e) => panic!("put: {}", e),
                }
            } else {
                match q.get_into_nowait(&mut out) {
                    Ok(()) => assert_eq!(Some(out.clone()), model.pop_front()),
                    Err(TryGetError::Empty) => assert!(model.is_empty()),
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(q.qsize(), model.len());
        }
        while let Ok(v) = q.get_nowait() {
            assert_eq!(Some(v), model.pop_front());
        }
        assert!(model.is_empty());
    }
}

/// A pipe end among the items of `map` on a closed pool (refused) is
/// dropped as it was: its peer should learn it is gone, as for
/// `apply_async` (1304302).
/// Before, `Pool::submit` encoded the items (marking each end handed on)
/// before the closed pool refused the job.
#[test]
fn a_pipe_end_in_a_map_refused_by_a_closed_pool_tells_its_peer() {
    let pool = shmproc::Pool::new(1).unwrap();
    pool.close();
    let (mut a, b) = shmproc::pipe(true).unwrap();
    assert!(matches!(pool.map(r18_end_len, vec![b]), Err(shmproc::pool::PoolError::Closed)));
    assert_eq!(a.recv_bytes_timeout(Duration::from_secs(20)), Err(PipeRecvBytesTimeoutError::Disconnected));
    pool.join().unwrap();
}
