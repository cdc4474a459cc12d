//! SPSC queue tests across real processes (the crate's own `Process`), and
//! a model test against `VecDeque`.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use shmproc::queue::{ByteQueue, SpscQueue};
use shmproc::{
    CommitError, GetError, GetTimeoutError, PopError, PopTimeoutError, PushError, PushTimeoutError, PutError,
    PutTimeoutError, SendError, SendTimeoutError, TryGetError, TryPopError, TryPushError, TryPutError, TryRecvError,
    TrySendError,
};
use shmproc::{Event, OpenError, Process, ProcessError, Value};

/// Items of the in-order test: 10 million, as its name says (17 s in a
/// debug build).
fn n() -> u64 {
    10_000_000
}

shmproc::entry! {
    /// Pushes 0..n in batches of varying size (1..=64) and single pushes.
    fn produce(args: (SpscQueue<u64>, u64)) -> Result<(), String> {
        let (q, n) = args;
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        let mut next = 0u64;
        let mut batch = [0u64; 64];
        let mut size = 1usize;
        while next < n {
            if size == 1 {
                tx.push(next).map_err(|e| e.to_string())?;
                next += 1;
            } else {
                let k = size.min((n - next) as usize);
                for (i, b) in batch[..k].iter_mut().enumerate() {
                    *b = next + i as u64;
                }
                let mut done = 0;
                while done < k {
                    let pushed = tx.push_slice(&batch[done..k]);
                    if pushed == 0 {
                        std::hint::spin_loop();
                    }
                    done += pushed;
                }
                next += k as u64;
            }
            size = size % 64 + 1;
        }
        Ok(())
    }
}

#[test]
fn ten_million_u64_arrive_in_order_with_the_right_sum() {
    let q = SpscQueue::<u64>::new(4096).unwrap();
    let mut rx = q.consumer().unwrap();
    let n = n();
    let mut p = Process::new(produce, (q.clone(), n));
    p.start().unwrap();
    let (mut expect, mut sum) = (0u64, 0u64);
    let mut buf = [0u64; 128];
    loop {
        // Alternate single pops and batch pops.
        match rx.pop() {
            Ok(v) => {
                assert_eq!(v, expect, "out of order");
                expect += 1;
                sum = sum.wrapping_add(v);
            }
            Err(PopError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
        let k = rx.pop_into(&mut buf);
        for &v in &buf[..k] {
            assert_eq!(v, expect, "out of order (batch)");
            expect += 1;
            sum = sum.wrapping_add(v);
        }
    }
    common::join(&p).unwrap();
    assert_eq!(expect, n);
    assert_eq!(sum, n * (n - 1) / 2);
}

shmproc::entry! {
    /// Pushes forever (the queue fills up), signalling once it is full.
    fn produce_forever(args: (SpscQueue<u64>, Event)) {
        let (q, full) = args;
        let mut tx = q.producer().unwrap();
        let mut i = 0u64;
        loop {
            if tx.try_push(i).is_err() {
                full.set();
                tx.push(i).unwrap();
            }
            i += 1;
        }
    }
}

#[test]
fn killed_producer_lets_the_consumer_drain_then_disconnect() {
    let q = SpscQueue::<u64>::new(64).unwrap();
    let full = Event::new().unwrap();
    let mut rx = q.consumer().unwrap();
    // Daemon: if an assertion fails first, the test binary's exit must not
    // wait for a child that never ends.
    let mut p = Process::new(produce_forever, (q.clone(), full.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(full.wait_timeout(Duration::from_secs(30)));
    p.kill().unwrap();
    let _ = common::join(&p);
    let mut n = 0;
    loop {
        match rx.pop_timeout(Duration::from_secs(5)) {
            Ok(v) => {
                assert_eq!(v, n);
                n += 1;
            }
            Err(PopTimeoutError::Disconnected) => break,
            Err(e) => panic!("after {n} items: {e}"),
        }
    }
    assert!(n >= 64, "drained only {n}");
}

shmproc::entry! {
    fn consume_then_hang(args: (SpscQueue<u64>, Event)) {
        let (q, ready) = args;
        let _rx = q.consumer().unwrap();
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn killed_consumer_unblocks_a_producer_waiting_on_a_full_queue() {
    let q = SpscQueue::<u64>::new(4).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(consume_then_hang, (q.clone(), ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    let mut tx = q.producer().unwrap();
    for i in 0..4 {
        tx.push(i).unwrap();
    }
    p.kill().unwrap();
    assert_eq!(tx.push_timeout(99, Duration::from_secs(30)), Err(PushTimeoutError::Disconnected(99)));
    let _ = common::join(&p);
}

shmproc::entry! {
    fn pop_until_closed(args: (SpscQueue<u64>, Event)) -> Result<(), String> {
        let (q, ready) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        ready.set();
        match rx.pop() {
            Err(PopError::Closed) => Ok(()),
            other => Err(format!("expected Closed, got {other:?}")),
        }
    }
}

#[test]
fn close_wakes_a_blocked_consumer_in_another_process() {
    let q = SpscQueue::<u64>::new(8).unwrap();
    let _tx = q.producer().unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(pop_until_closed, (q.clone(), ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    common::wait_until_asleep(p.pid().unwrap(), 1);
    q.close();
    common::join(&p).unwrap();
}

shmproc::entry! {
    fn try_second_producer(q: SpscQueue<u64>) -> Result<(), String> {
        match q.producer() {
            Err(e) if e.role == "producer" => Ok(()),
            other => Err(format!("expected RoleError, got {:?}", other.map(|_| ()))),
        }
    }
}

#[test]
fn a_role_held_by_a_live_process_is_refused() {
    let q = SpscQueue::<u64>::new(8).unwrap();
    let tx = q.producer().unwrap();
    let mut p = Process::new(try_second_producer, q.clone());
    p.start().unwrap();
    common::join(&p).unwrap();
    drop(tx);
    assert!(q.producer().is_ok(), "a released role can be taken again");
}

#[test]
fn wrong_element_type_and_bad_capacities_are_clear_errors() {
    let q = SpscQueue::<u64>::new(8).unwrap();
    assert!(matches!(SpscQueue::<u32>::open(q.name()), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(SpscQueue::<i64>::open(q.name()), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(shmproc::Value::<u64>::open(q.name()), Err(OpenError::WrongKind { .. })));
    for cap in [0, 1, 3, 1000] {
        match SpscQueue::<u64>::new(cap) {
            Err(OpenError::InvalidArgument(msg)) => assert!(msg.contains("power of two"), "{msg}"),
            other => panic!("capacity {cap}: {other:?}"),
        }
    }
}

shmproc::entry! {
    fn open_wrong_type(name: String) -> Result<(), String> {
        match SpscQueue::<u16>::open(&name) {
            Err(OpenError::IncompatibleType { .. }) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }
}

#[test]
fn wrong_element_type_is_refused_in_another_process() {
    let q = SpscQueue::<u64>::new(8).unwrap();
    let mut p = Process::new(open_wrong_type, q.name().to_string());
    p.start().unwrap();
    match common::join(&p) {
        Ok(()) => {}
        Err(ProcessError::Failed { message, .. }) => panic!("{message}"),
        Err(e) => panic!("{e}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    PushSlice(Vec<u32>),
    Pop,
    PopInto(usize),
    LoanCommit(u32),
    PeekRelease,
    /// Close the queue (for everybody); rare, so most runs close late.
    Close,
    /// `push_timeout(v, 0)`, or `push` when the model says it cannot block.
    PushTimed(u32, bool),
    /// `pop_timeout(0)`, or `pop` when the model says it cannot block.
    PopTimed(bool),
    /// A write loan written and dropped (SPSC: nothing sent), or taken,
    /// the queue closed, then committed (refused: nothing sent).
    LoanDrop(u32, bool),
    /// A read loan dropped (SPSC: the item stays), or taken, the queue
    /// closed, then released (the item is consumed).
    PeekDrop(bool),
    /// The SPSC producer (or consumer) dropped and its role taken again.
    NewEnd(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => any::<u32>().prop_map(Op::Push),
        8 => proptest::collection::vec(any::<u32>(), 0..12).prop_map(Op::PushSlice),
        8 => Just(Op::Pop),
        8 => (0usize..12).prop_map(Op::PopInto),
        8 => any::<u32>().prop_map(Op::LoanCommit),
        8 => Just(Op::PeekRelease),
        1 => Just(Op::Close),
        6 => (any::<u32>(), any::<bool>()).prop_map(|(v, b)| Op::PushTimed(v, b)),
        6 => any::<bool>().prop_map(Op::PopTimed),
        3 => (any::<u32>(), proptest::bool::weighted(0.1)).prop_map(|(v, c)| Op::LoanDrop(v, c)),
        3 => proptest::bool::weighted(0.1).prop_map(Op::PeekDrop),
        2 => any::<bool>().prop_map(Op::NewEnd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The SPSC ring behaves like a bounded VecDeque: FIFO, nothing lost,
    /// nothing duplicated, len/empty/full consistent.
    #[test]
    fn spsc_matches_a_vecdeque_model(ops in proptest::collection::vec(op(), 0..200), cap_log in 1u32..5) {
        let cap = 1usize << cap_log;
        let q = SpscQueue::<u32>::new(cap as u64).unwrap();
        let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
        let mut model = VecDeque::new();
        let mut closed = false;
        let empty = |closed: bool| if closed { TryPopError::Closed } else { TryPopError::Empty };
        for op in ops {
            match op {
                Op::Push(v) => {
                    let r = tx.try_push(v);
                    if closed { prop_assert_eq!(r, Err(TryPushError::Closed(v))); }
                    else if model.len() < cap { prop_assert!(r.is_ok()); model.push_back(v); }
                    else { prop_assert_eq!(r, Err(TryPushError::Full(v))); }
                }
                Op::PushSlice(vs) => {
                    let n = tx.push_slice(&vs);
                    prop_assert_eq!(n, if closed { 0 } else { vs.len().min(cap - model.len()) });
                    model.extend(&vs[..n]);
                }
                Op::Pop => match model.pop_front() {
                    Some(v) => prop_assert_eq!(rx.try_pop(), Ok(v)),
                    None => prop_assert_eq!(rx.try_pop(), Err(empty(closed))),
                },
                Op::PopInto(k) => {
                    let mut out = vec![0u32; k];
                    let n = rx.pop_into(&mut out);
                    prop_assert_eq!(n, k.min(model.len()));
                    for v in &out[..n] { prop_assert_eq!(Some(*v), model.pop_front()); }
                }
                Op::LoanCommit(v) => match tx.loan() {
                    Ok(mut l) => { prop_assert!(!closed && model.len() < cap); l.write(v); l.commit().unwrap(); model.push_back(v); }
                    Err(e) if closed => prop_assert_eq!(e, TryPushError::Closed(())),
                    Err(e) => { prop_assert_eq!(model.len(), cap); prop_assert_eq!(e, TryPushError::Full(())); }
                },
                Op::PeekRelease => match rx.peek() {
                    Ok(l) => { prop_assert_eq!(Some(l.read()), model.pop_front()); l.release(); }
                    Err(e) => { prop_assert!(model.is_empty()); prop_assert_eq!(e, empty(closed)); }
                },
                Op::Close => { q.close(); closed = true; prop_assert!(q.is_closed()); }
                Op::PushTimed(v, blocking) => {
                    let r = if blocking && (closed || model.len() < cap) {
                        tx.push(v).map_err(|e| match e { PushError::Closed(v) => PushTimeoutError::Closed(v), PushError::Disconnected(v) => PushTimeoutError::Disconnected(v) })
                    } else {
                        tx.push_timeout(v, Duration::ZERO)
                    };
                    if closed { prop_assert_eq!(r, Err(PushTimeoutError::Closed(v))); }
                    else if model.len() < cap { prop_assert_eq!(r, Ok(())); model.push_back(v); }
                    else { prop_assert_eq!(r, Err(PushTimeoutError::TimedOut(v))); }
                }
                Op::PopTimed(blocking) => {
                    let r = if blocking && (closed || !model.is_empty()) {
                        rx.pop().map_err(|e| match e { PopError::Closed => PopTimeoutError::Closed, PopError::Disconnected => PopTimeoutError::Disconnected })
                    } else {
                        rx.pop_timeout(Duration::ZERO)
                    };
                    match model.pop_front() {
                        Some(v) => prop_assert_eq!(r, Ok(v)),
                        None if closed => prop_assert_eq!(r, Err(PopTimeoutError::Closed)),
                        None => prop_assert_eq!(r, Err(PopTimeoutError::TimedOut)),
                    }
                }
                Op::LoanDrop(v, across_close) => match tx.loan() {
                    Ok(mut l) => {
                        prop_assert!(!closed && model.len() < cap);
                        l.write(v);
                        if across_close {
                            q.close();
                            closed = true;
                            prop_assert_eq!(l.commit(), Err(CommitError::Closed));
                        }
                    }
                    Err(e) if closed => prop_assert_eq!(e, TryPushError::Closed(())),
                    Err(e) => { prop_assert_eq!(model.len(), cap); prop_assert_eq!(e, TryPushError::Full(())); }
                },
                Op::PeekDrop(across_close) => match rx.peek() {
                    Ok(l) => {
                        prop_assert_eq!(Some(&l.read()), model.front());
                        if across_close {
                            q.close();
                            closed = true;
                            l.release();
                            model.pop_front();
                        }
                    }
                    Err(e) => { prop_assert!(model.is_empty()); prop_assert_eq!(e, empty(closed)); }
                },
                Op::NewEnd(producer) => if producer {
                    drop(tx);
                    tx = q.producer().unwrap();
                } else {
                    drop(rx);
                    rx = q.consumer().unwrap();
                },
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
            prop_assert_eq!(tx.len(), model.len());
            prop_assert_eq!(rx.len(), model.len());
        }
    }
}

// ---------------------------------------------------------------------------
// MPMC and the Python-shaped facades.

use shmproc::queue::MpmcQueue;
use shmproc::{Array, JoinableQueue, Queue};

const PER_PRODUCER: u64 = 200_000;
const SENTINEL: u64 = u64::MAX;

shmproc::entry! {
    /// Pushes (tag << 32 | i) for i in 0..n.
    fn mpmc_produce(args: (MpmcQueue<u64>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        for i in 0..n {
            q.push((tag << 32) | i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Pops until the sentinel; per producer tag checks FIFO order and
    /// records [count0, count1, sum0, sum1] into `out`.
    fn mpmc_consume(args: (MpmcQueue<u64>, Array<u64>)) -> Result<(), String> {
        let (q, out) = args;
        let mut count = [0u64; 2];
        let mut sum = [0u64; 2];
        let mut last = [None::<u64>; 2];
        loop {
            let v = q.pop().map_err(|e| e.to_string())?;
            if v == SENTINEL {
                break;
            }
            let (tag, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
            if tag > 1 {
                return Err(format!("garbage item {v:#x}"));
            }
            if last[tag].is_some_and(|l| l >= i) {
                return Err(format!("producer {tag}: {i} after {:?}", last[tag]));
            }
            last[tag] = Some(i);
            count[tag] += 1;
            sum[tag] += i;
        }
        let mut g = out.get_lock().map_err(|e| e.to_string())?;
        g.write(0, &[count[0], count[1], sum[0], sum[1]]);
        Ok(())
    }
}

#[test]
fn mpmc_two_producers_two_consumers_deliver_each_item_exactly_once() {
    let q = MpmcQueue::<u64>::new(1024).unwrap();
    let outs: Vec<Array<u64>> = (0..2).map(|_| Array::new(4).unwrap()).collect();
    let mut consumers: Vec<Process> = outs.iter().map(|o| Process::new(mpmc_consume, (q.clone(), o.clone()))).collect();
    let mut producers: Vec<Process> =
        (0..2).map(|tag| Process::new(mpmc_produce, (q.clone(), tag, PER_PRODUCER))).collect();
    for p in consumers.iter_mut().chain(producers.iter_mut()) {
        p.start().unwrap();
    }
    for p in &producers {
        common::join(p).unwrap();
    }
    q.push(SENTINEL).unwrap();
    q.push(SENTINEL).unwrap();
    for p in &consumers {
        common::join(p).unwrap();
    }
    let r: Vec<Vec<u64>> = outs.iter().map(|o| o.to_vec().unwrap()).collect();
    for tag in 0..2 {
        assert_eq!(r[0][tag] + r[1][tag], PER_PRODUCER, "producer {tag}: items lost or duplicated");
        assert_eq!(r[0][2 + tag] + r[1][2 + tag], PER_PRODUCER * (PER_PRODUCER - 1) / 2, "producer {tag} checksum");
    }
    assert!(q.is_empty());
}

shmproc::entry! {
    fn mpmc_produce_forever(args: (MpmcQueue<u64>, Event)) {
        let (q, started) = args;
        let mut i = 0u64;
        loop {
            q.push(i).unwrap();
            if i == 100 {
                started.set();
            }
            i += 1;
        }
    }
}

#[test]
fn mpmc_survivors_carry_on_after_a_producer_is_killed_mid_stream() {
    for _ in 0..5 {
        let q = MpmcQueue::<u64>::new(256).unwrap();
        let started = Event::new().unwrap();
        let mut p = Process::new(mpmc_produce_forever, (q.clone(), started.clone())).with_daemon(true);
        p.start().unwrap();
        assert!(started.wait_timeout(Duration::from_secs(30)));
        // Keep it busy (the queue drains and refills) while we kill it.
        let mut expect = 0u64;
        for _ in 0..500 {
            assert_eq!(q.pop().unwrap(), expect);
            expect += 1;
        }
        p.kill().unwrap();
        let _ = common::join(&p);
        // Whatever it managed to put is there, in order, with no hole; its
        // in-flight put is either complete or absent.
        while let Ok(v) = q.try_pop() {
            assert_eq!(v, expect);
            expect += 1;
        }
        q.push(7).unwrap();
        assert_eq!(q.pop_timeout(Duration::from_secs(30)), Ok(7));
        assert!(q.is_empty());
    }
}

shmproc::entry! {
    fn work_and_confirm(args: (JoinableQueue<u32>, Value<u64>)) -> Result<(), String> {
        let (q, total) = args;
        loop {
            match q.get_timeout(Duration::from_secs(30)) {
                Ok(0) => { q.task_done().map_err(|e| e.to_string())?; return Ok(()); }
                Ok(v) => {
                    total.get_lock().map_err(|e| e.to_string())?.update(|t| *t += u64::from(v));
                    q.task_done().map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[test]
fn joinable_queue_join_waits_for_task_done_in_other_processes() {
    let q = JoinableQueue::<u32>::new(16).unwrap();
    let total = Value::new(0u64).unwrap();
    let mut workers: Vec<Process> =
        (0..2).map(|_| Process::new(work_and_confirm, (q.clone(), total.clone()))).collect();
    for w in &mut workers {
        w.start().unwrap();
    }
    for v in 1..=100u32 {
        q.put(v).unwrap();
    }
    q.join();
    assert_eq!(total.get().unwrap(), 5050, "join returned before every task was done");
    assert_eq!(q.unfinished_tasks(), 0);
    q.put(0).unwrap();
    q.put(0).unwrap();
    for w in &workers {
        common::join(w).unwrap();
    }
    assert!(q.task_done().is_err(), "task_done beyond the items put must fail");
}

shmproc::entry! {
    fn get_until_closed(args: (Queue<u8>, Event)) -> Result<(), String> {
        let (q, ready) = args;
        ready.set();
        match q.get() {
            Err(GetError::Closed) => Ok(()),
            other => Err(format!("expected Closed, got {other:?}")),
        }
    }
}

#[test]
fn queue_close_wakes_a_blocked_getter_in_another_process() {
    let q = Queue::<u8>::new(4).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(get_until_closed, (q.clone(), ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    common::wait_until_asleep(p.pid().unwrap(), 1);
    q.close_all();
    common::join(&p).unwrap();
}

#[test]
fn queue_facade_sizes_are_exact_and_bad_input_is_refused() {
    let q = Queue::<u16>::new(3).unwrap();
    assert_eq!(q.maxsize(), 3);
    assert!(q.empty() && !q.full());
    for v in 0..3 {
        q.put_nowait(v).unwrap();
        assert_eq!(q.qsize(), v as usize + 1);
    }
    assert!(q.full());
    assert_eq!(q.put_nowait(9), Err(TryPutError::Full(9)));
    assert_eq!(q.get_nowait(), Ok(0));
    // maxsize 0 is Python's unbounded queue (issue 11), not an error.
    assert_eq!(Queue::<u16>::new(0).unwrap().maxsize(), 0);
    assert!(matches!(Queue::<u16>::new(1 << 31), Err(OpenError::InvalidArgument(_))));
    assert!(matches!(Queue::<u32>::open(q.name()), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(SpscQueue::<u16>::open(q.name()), Err(OpenError::WrongKind { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The MPMC ring behaves like a bounded VecDeque.
    #[test]
    fn mpmc_matches_a_vecdeque_model(ops in proptest::collection::vec(op(), 0..200), cap in 1usize..12) {
        let q = MpmcQueue::<u32>::new(cap as u64).unwrap();
        let mut model = VecDeque::new();
        let mut closed = false;
        for op in ops {
            match op {
                Op::Push(v) | Op::LoanCommit(v) | Op::LoanDrop(v, _) => {
                    let r = q.try_push(v);
                    if closed { prop_assert_eq!(r, Err(TryPutError::Closed(v))); }
                    else if model.len() < cap { prop_assert!(r.is_ok()); model.push_back(v); }
                    else { prop_assert_eq!(r, Err(TryPutError::Full(v))); }
                }
                Op::PushSlice(vs) => {
                    let n = q.push_slice(&vs);
                    prop_assert_eq!(n, if closed { 0 } else { vs.len().min(cap - model.len()) });
                    model.extend(&vs[..n]);
                }
                Op::NewEnd(_) => {}
                Op::PushTimed(v, blocking) => {
                    let r = if blocking && (closed || model.len() < cap) {
                        q.push(v).map_err(|e| match e { PutError::Closed(v) => PutTimeoutError::Closed(v), e => panic!("{e:?}") })
                    } else {
                        q.push_timeout(v, Duration::ZERO)
                    };
                    if closed { prop_assert_eq!(r, Err(PutTimeoutError::Closed(v))); }
                    else if model.len() < cap { prop_assert_eq!(r, Ok(())); model.push_back(v); }
                    else { prop_assert_eq!(r, Err(PutTimeoutError::TimedOut(v))); }
                }
                Op::PopTimed(blocking) => {
                    let r = if blocking && (closed || !model.is_empty()) {
                        q.pop().map_err(|e| match e { GetError::Closed => GetTimeoutError::Closed, e => panic!("{e:?}") })
                    } else {
                        q.pop_timeout(Duration::ZERO)
                    };
                    match model.pop_front() {
                        Some(v) => prop_assert_eq!(r, Ok(v)),
                        None if closed => prop_assert_eq!(r, Err(GetTimeoutError::Closed)),
                        None => prop_assert_eq!(r, Err(GetTimeoutError::TimedOut)),
                    }
                }
                Op::Pop | Op::PeekRelease | Op::PeekDrop(_) => match model.pop_front() {
                    Some(v) => prop_assert_eq!(q.try_pop(), Ok(v)),
                    None if closed => prop_assert_eq!(q.try_pop(), Err(TryGetError::Closed)),
                    None => prop_assert_eq!(q.try_pop(), Err(TryGetError::Empty)),
                },
                Op::Close => { q.close(); closed = true; prop_assert!(q.is_closed()); }
                Op::PopInto(k) => {
                    let mut out = vec![0u32; k];
                    let n = q.pop_into(&mut out);
                    prop_assert_eq!(n, k.min(model.len()));
                    for v in &out[..n] { prop_assert_eq!(Some(*v), model.pop_front()); }
                }
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_full(), model.len() == cap);
        }
    }
}

// ---- queues of any Handoff item, bounded and unbounded (issue 11) ----

/// An operation on a `Queue<String>`.
#[derive(Debug, Clone)]
enum StrOp {
    Put(String),
    /// `put_ref_nowait` (the borrowed form).
    PutRef(String),
    Get,
    /// `get_into_nowait` into a reused `String`.
    GetInto,
    Close,
}

fn str_op() -> impl Strategy<Value = StrOp> {
    prop_oneof![
        6 => (0usize..200, any::<u8>()).prop_map(|(n, c)| StrOp::Put(char::from(b'a' + c % 26).to_string().repeat(n))),
        3 => (0usize..200, any::<u8>()).prop_map(|(n, c)| StrOp::PutRef(char::from(b'a' + c % 26).to_string().repeat(n))),
        6 => Just(StrOp::Get),
        3 => Just(StrOp::GetInto),
        1 => Just(StrOp::Close),
    ]
}

/// Runs `ops` on `q` and on a VecDeque model bounded by `cap` (0:
/// unbounded); items whose encoding passes `max_frame` are `TooLarge`.
fn check_string_queue(q: &Queue<String>, cap: usize, ops: Vec<StrOp>) -> Result<(), TestCaseError> {
    let mut model: VecDeque<String> = VecDeque::new();
    let mut closed = false;
    let mut reused = String::from("untouched");
    for op in ops {
        match op {
            StrOp::Put(v) => {
                let r = q.put_nowait(v.clone());
                if closed {
                    prop_assert_eq!(r, Err(TryPutError::Closed(v)));
                } else if v.len() + 8 > q.max_frame() {
                    prop_assert_eq!(r, Err(TryPutError::TooLarge { len: v.len() + 8, max: q.max_frame(), item: v }));
                } else if cap == 0 || model.len() < cap {
                    prop_assert!(r.is_ok());
                    model.push_back(v);
                } else {
                    prop_assert_eq!(r, Err(TryPutError::Full(v)));
                }
            }
            StrOp::PutRef(v) => {
                let r = q.put_ref_nowait(&v);
                if closed {
                    prop_assert_eq!(r, Err(TryPutError::Closed(())));
                } else if v.len() + 8 > q.max_frame() {
                    prop_assert_eq!(r, Err(TryPutError::TooLarge { len: v.len() + 8, max: q.max_frame(), item: () }));
                } else if cap == 0 || model.len() < cap {
                    prop_assert!(r.is_ok());
                    model.push_back(v);
                } else {
                    prop_assert_eq!(r, Err(TryPutError::Full(())));
                }
            }
            StrOp::GetInto => {
                let before = reused.clone();
                let r = q.get_into_nowait(&mut reused);
                match model.pop_front() {
                    Some(v) => {
                        prop_assert_eq!(r, Ok(()));
                        prop_assert_eq!(&reused, &v);
                    }
                    None => {
                        prop_assert_eq!(r, Err(if closed { TryGetError::Closed } else { TryGetError::Empty }));
                        prop_assert_eq!(&reused, &before, "a get that returns nothing leaves the value untouched");
                    }
                }
            }
            StrOp::Get => match model.pop_front() {
                Some(v) => prop_assert_eq!(q.get_nowait(), Ok(v)),
                None if closed => prop_assert_eq!(q.get_nowait(), Err(TryGetError::Closed)),
                None => prop_assert_eq!(q.get_nowait(), Err(TryGetError::Empty)),
            },
            StrOp::Close => {
                q.close_all();
                closed = true;
            }
        }
        prop_assert_eq!(q.qsize(), model.len());
        prop_assert_eq!(q.empty(), model.is_empty());
        if cap > 0 {
            prop_assert_eq!(q.full(), model.len() == cap);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A bounded queue of strings (encoded frames) behaves like a bounded
    /// VecDeque; items larger than its frames are refused and handed back.
    #[test]
    fn string_queue_matches_a_vecdeque_model(ops in proptest::collection::vec(str_op(), 0..200), cap in 1usize..12) {
        let q = Queue::<String>::with_max_frame(cap as u64, 100).unwrap();
        check_string_queue(&q, cap, ops)?;
    }

    /// An unbounded queue of strings (a chain of rings, tiny memory limit
    /// so that rings are sealed, linked and retired often) behaves like an
    /// unbounded VecDeque.
    #[test]
    fn unbounded_string_queue_matches_a_vecdeque_model(ops in proptest::collection::vec(str_op(), 0..300)) {
        let q = Queue::<String>::new(0).unwrap();
        check_string_queue(&q, 0, ops)?;
    }
}

// ---- close refuses every publish path (issue 9, item 3) ----

shmproc::entry! {
    fn close_spsc(q: SpscQueue<u64>) {
        q.close();
    }
}

/// A loan taken before another process closes the queue: its commit is
/// refused with `Closed` and publishes nothing, so the consumer drains what
/// was there before the close and then sees `Closed`. Before the fix the
/// commit published the item after the close.
#[test]
fn a_loan_committed_after_close_in_another_process_is_refused() {
    let q = SpscQueue::<u64>::new(4).unwrap();
    let mut tx = q.producer().unwrap();
    let mut rx = q.consumer().unwrap();
    tx.push(1).unwrap();
    let mut loan = tx.loan().unwrap();
    loan.write(2);
    let mut p = Process::new(close_spsc, q.clone());
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(60)).unwrap(), "closer did not finish");
    common::join(&p).unwrap();
    assert!(q.is_closed());
    assert_eq!(loan.commit(), Err(CommitError::Closed));
    assert_eq!(q.len(), 1);
    assert_eq!(rx.try_pop(), Ok(1));
    assert_eq!(rx.try_pop(), Err(TryPopError::Closed));
}

/// After `close`, every way of publishing is refused and adds nothing:
/// try_push, push, push_timeout, push_slice and loan on the SPSC ring;
/// try_send, send and send_timeout on the byte ring.
#[test]
fn every_publish_path_is_refused_after_close() {
    let q = SpscQueue::<u64>::new(4).unwrap();
    let mut tx = q.producer().unwrap();
    let _rx = q.consumer().unwrap();
    q.close();
    assert_eq!(tx.try_push(1), Err(TryPushError::Closed(1)));
    assert_eq!(tx.push(2), Err(PushError::Closed(2)));
    assert_eq!(tx.push_timeout(3, Duration::from_secs(1)), Err(PushTimeoutError::Closed(3)));
    assert_eq!(tx.push_slice(&[4, 5]), 0);
    assert!(matches!(tx.loan(), Err(TryPushError::Closed(()))));
    assert_eq!(q.len(), 0);

    let b = ByteQueue::new(256, 32).unwrap();
    let mut btx = b.producer().unwrap();
    let mut brx = b.consumer().unwrap();
    b.close();
    assert_eq!(btx.try_send(b"a"), Err(TrySendError::Closed));
    assert_eq!(btx.send(b"b"), Err(SendError::Closed));
    assert_eq!(btx.send_timeout(b"c", Duration::from_secs(1)), Err(SendTimeoutError::Closed));
    assert_eq!(brx.try_recv_into(&mut Vec::new()), Err(TryRecvError::Closed));
}

// ---- roles are exclusive per handle (issue 9, item 5) ----

/// A second producer or consumer of the same ring in one process is
/// refused while the first lives (from this thread or another), for the
/// SPSC ring and the byte ring; once the first is dropped the role can be
/// taken again. Before the fix the second handle was handed out (two tails
/// writing one slot).
#[test]
fn a_second_end_in_the_same_process_is_refused_until_the_first_is_dropped() {
    let q = SpscQueue::<u64>::new(4).unwrap();
    let tx = q.producer().unwrap();
    let rx = q.consumer().unwrap();
    let e = q.producer().unwrap_err();
    assert_eq!((e.role, e.pid), ("producer", std::process::id()));
    assert!(e.to_string().contains("this process"), "{e}");
    assert_eq!(q.consumer().unwrap_err().role, "consumer");
    let other = SpscQueue::<u64>::open(q.name()).unwrap();
    let from_thread = std::thread::spawn(move || (other.producer().is_err(), other.consumer().is_err()));
    assert_eq!(from_thread.join().unwrap(), (true, true), "another thread got a second end");
    drop(tx);
    drop(rx);
    let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    tx.push(5).unwrap();
    assert_eq!(rx.pop(), Ok(5));

    let b = ByteQueue::new(256, 32).unwrap();
    let btx = b.producer().unwrap();
    let brx = b.consumer().unwrap();
    assert_eq!(b.producer().unwrap_err().role, "producer");
    assert_eq!(b.consumer().unwrap_err().role, "consumer");
    drop((btx, brx));
    assert!(b.producer().is_ok() && b.consumer().is_ok());
}

shmproc::entry! {
    /// Takes both ends of the byte ring and sleeps until killed.
    fn hold_byte_roles(args: (ByteQueue, Event)) -> Result<(), String> {
        let (q, ready) = args;
        let _tx = q.producer().map_err(|e| e.to_string())?;
        let _rx = q.consumer().map_err(|e| e.to_string())?;
        ready.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// While a live process holds the byte ring's ends, this process is
/// refused them; once that process is killed, they can be taken.
#[test]
fn byte_ring_ends_of_a_live_process_are_refused_and_those_of_a_dead_one_reclaimed() {
    let q = ByteQueue::new(256, 32).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(hold_byte_roles, (q.clone(), ready.clone())).with_daemon(true);
    p.start().unwrap();
    if !ready.wait_timeout(Duration::from_secs(30)) {
        let _ = p.kill();
        panic!("child did not take the roles");
    }
    let pid = p.pid().unwrap();
    assert_eq!(q.producer().unwrap_err().pid, pid);
    assert_eq!(q.consumer().unwrap_err().pid, pid);
    p.kill().unwrap();
    let _ = p.join_timeout(Duration::from_secs(30)); // Err(Signaled): killed, as meant
    assert!(!p.is_alive(), "killed child not reaped within 30 s");
    let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    tx.send(b"hi").unwrap();
    assert_eq!(rx.recv().unwrap(), b"hi");
}

// ---- close() closes this handle only; close_all() closes for everyone (issue 10, item 2) ----

shmproc::entry! {
    /// Holds its own handle; once the parent has closed the parent's handle,
    /// gets the item the parent put and puts 41 back.
    fn use_own_handle_after_parent_closed(args: (Queue<u64>, Event, Event)) -> Result<(), String> {
        let (q, ready, parent_closed) = args;
        ready.set();
        if !parent_closed.wait_timeout(Duration::from_secs(60)) {
            return Err("the parent never closed its handle".into());
        }
        match q.get_timeout(Duration::from_secs(60)) {
            Ok(1) => {}
            other => return Err(format!("get through the child's handle: {other:?}")),
        }
        q.put(41).map_err(|e| format!("put through the child's handle: {e}"))
    }
}

/// Python's `Queue.close()`: the parent closing its own handle (as ported
/// programs do with their copy) leaves the child's handle working: the
/// child still gets and puts. Before, `close()` closed the queue for every
/// process, and the child's put failed with `Closed`.
#[test]
fn closing_a_queue_handle_leaves_another_processes_handle_working() {
    let sut = Queue::<u64>::new(4).unwrap();
    let (ready, parent_closed) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(use_own_handle_after_parent_closed, (sut.clone(), ready.clone(), parent_closed.clone()))
        .with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(60)), "child did not start");
    sut.put(1).unwrap();
    sut.close();
    assert_eq!(sut.put(2), Err(PutError::Closed(2)), "this handle refuses puts");
    assert_eq!(sut.put_nowait(2), Err(TryPutError::Closed(2)));
    assert_eq!(sut.get(), Err(GetError::Closed), "this handle refuses gets");
    assert_eq!(sut.get_nowait(), Err(TryGetError::Closed));
    parent_closed.set();
    common::join(&p).expect("the child using its own handle failed");
    let other = Queue::<u64>::open(sut.name()).unwrap();
    assert_eq!(other.get_nowait(), Ok(41), "the child's put landed");
    assert!(other.empty());
}

shmproc::entry! {
    /// After the parent's `close_all`: puts fail, gets drain the two items
    /// and then fail.
    fn see_closed_for_everyone(args: (JoinableQueue<u64>, Event)) -> Result<(), String> {
        let (q, closed_all) = args;
        if !closed_all.wait_timeout(Duration::from_secs(60)) {
            return Err("the parent never called close_all".into());
        }
        let seen = (q.put(3), q.put_nowait(4), q.get(), q.get_nowait(), q.get(), q.get_timeout(Duration::from_secs(60)));
        let expected = (
            Err(PutError::Closed(3)),
            Err(TryPutError::Closed(4)),
            Ok(1),
            Ok(2),
            Err(GetError::Closed),
            Err(shmproc::GetTimeoutError::Closed),
        );
        if seen == expected { Ok(()) } else { Err(format!("after close_all: {seen:?}")) }
    }
}

/// `close_all()` closes the queue for every process: the child's own handle
/// refuses puts, drains what was there, then reports `Closed`.
#[test]
fn close_all_stops_every_process() {
    let sut = JoinableQueue::<u64>::new(4).unwrap();
    let closed_all = Event::new().unwrap();
    let mut p = Process::new(see_closed_for_everyone, (sut.clone(), closed_all.clone())).with_daemon(true);
    p.start().unwrap();
    sut.put(1).unwrap();
    sut.put(2).unwrap();
    sut.close_all();
    assert_eq!(sut.put(5), Err(PutError::Closed(5)));
    closed_all.set();
    common::join(&p).expect("the child after close_all failed");
    assert_eq!(sut.get_nowait(), Err(TryGetError::Closed));
}

// ---- close_all racing with puts in other processes (review: untested path) ----

shmproc::entry! {
    /// Puts distinct items (`base + i`) as fast as it can until a put is
    /// refused with `Closed`; records how many puts returned `Ok` and their
    /// sum. Any other refusal than `Full` / `Closed` is an error.
    fn put_until_closed(args: (Queue<u64>, u64, Value<u64>, Value<u64>, Event)) -> Result<(), String> {
        let (q, base, count, sum, started) = args;
        let (mut n, mut s) = (0u64, 0u64);
        started.set();
        loop {
            let v = base + n;
            let r = if n % 2 == 0 { q.put_nowait(v) } else { q.put_timeout(v, Duration::from_secs(60)).map_err(|e| match e {
                shmproc::PutTimeoutError::Closed(v) => TryPutError::Closed(v),
                shmproc::PutTimeoutError::TimedOut(v) => TryPutError::Full(v),
                e => TryPutError::TooLarge { item: e.into_inner(), len: 0, max: 0 },
            }) };
            match r {
                Ok(()) => {
                    n += 1;
                    s = s.wrapping_add(v);
                }
                Err(TryPutError::Full(_)) => std::thread::yield_now(),
                Err(TryPutError::Closed(_)) => break,
                Err(e) => return Err(format!("a u64 put: {e}")),
            }
        }
        count.set(n).map_err(|e| e.to_string())?;
        sum.set(s).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// `close_all()` while two other processes are putting: every put that
/// returned `Ok` is delivered (the survivors drain exactly the accepted
/// items, checked by count and sum), nothing is accepted after the close,
/// and the drain ends with `Closed`.
#[test]
fn close_all_racing_with_puts_in_other_processes_loses_no_accepted_item() {
    let sut = Queue::<u64>::new(64).unwrap();
    let mut children = Vec::new();
    for k in 0..2u64 {
        let (count, sum, started) = (Value::new(u64::MAX).unwrap(), Value::new(0u64).unwrap(), Event::new().unwrap());
        let mut p = Process::new(put_until_closed, (sut.clone(), k << 40, count.clone(), sum.clone(), started.clone()))
            .with_daemon(true);
        p.start().unwrap();
        assert!(started.wait_timeout(Duration::from_secs(60)), "child {k} did not start");
        children.push((p, count, sum));
    }
    // Drain while they put, then close for everyone mid-stream.
    let (mut got, mut got_sum) = (0u64, 0u64);
    while got < 5_000 {
        if let Ok(v) = sut.get_timeout(Duration::from_secs(60)) {
            got += 1;
            got_sum = got_sum.wrapping_add(v);
        } else {
            panic!("no item within 60 s while the children put");
        }
    }
    sut.close_all();
    loop {
        // (A put claimed before the close may still be publishing: wait for it.)
        match sut.get_timeout(Duration::from_secs(60)) {
            Ok(v) => {
                got += 1;
                got_sum = got_sum.wrapping_add(v);
            }
            Err(shmproc::GetTimeoutError::Closed) => break,
            Err(e) => panic!("drain after close_all: {e}"),
        }
    }
    let (mut put, mut put_sum) = (0u64, 0u64);
    for (p, count, sum) in &children {
        common::join(p).expect("a putting child failed");
        put += count.get().unwrap();
        put_sum = put_sum.wrapping_add(sum.get().unwrap());
    }
    assert_eq!((got, got_sum), (put, put_sum), "items accepted by put vs items drained after close_all");
    assert_eq!(sut.get_nowait(), Err(TryGetError::Closed), "nothing landed after the drain");
}

// ---- a per-handle-closed facade handle, every operation (review: untested paths) ----

macro_rules! closed_handle_refuses_everything {
    ($name:ident, $ty:ident) => {
        /// After `close()` on one handle, every put and get form through it
        /// (waiting, `_nowait`, `_timeout`) fails with `Closed` at once and
        /// takes nothing; another handle and a clone of the closed one still
        /// work and see every item.
        #[test]
        fn $name() {
            let sut = shmproc::$ty::<u64>::new(4).unwrap();
            let other = shmproc::$ty::<u64>::open(sut.name()).unwrap();
            sut.put(1).unwrap();
            sut.put(2).unwrap();
            sut.close();
            let long = Duration::from_secs(3600);
            assert_eq!(sut.put(3), Err(PutError::Closed(3)));
            assert_eq!(sut.put_nowait(3), Err(TryPutError::Closed(3)));
            assert_eq!(sut.put_timeout(3, long), Err(shmproc::PutTimeoutError::Closed(3)));
            assert_eq!(sut.get(), Err(GetError::Closed));
            assert_eq!(sut.get_nowait(), Err(TryGetError::Closed));
            assert_eq!(sut.get_timeout(long), Err(shmproc::GetTimeoutError::Closed));
            assert!(!sut.empty(), "closing a handle takes nothing out of the queue");
            let reopened = sut.clone();
            reopened.put(3).unwrap();
            assert_eq!((other.get(), other.get_nowait(), reopened.get_timeout(long)), (Ok(1), Ok(2), Ok(3)));
            assert!(other.empty());
        }
    };
}
closed_handle_refuses_everything!(a_closed_queue_handle_refuses_every_form, Queue);
closed_handle_refuses_everything!(a_closed_joinable_queue_handle_refuses_every_form, JoinableQueue);
closed_handle_refuses_everything!(a_closed_simple_queue_handle_refuses_every_form, SimpleQueue);
