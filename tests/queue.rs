//! SPSC queue tests across real processes (the crate's own `Process`), and
//! a model test against `VecDeque`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shmproc::queue::{PopError, PushError, SpscQueue};
use shmproc::{Event, OpenError, Process, ProcessError, Value};

const N: u64 = 10_000_000;

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
    let mut p = Process::new(produce, (q.clone(), N));
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
    p.join().unwrap();
    assert_eq!(expect, N);
    assert_eq!(sum, N * (N - 1) / 2);
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
    let mut p = Process::new(produce_forever, (q.clone(), full.clone()));
    p.start().unwrap();
    assert!(full.wait_timeout(Duration::from_secs(30)));
    p.kill().unwrap();
    let _ = p.join();
    let mut n = 0;
    let t = Instant::now();
    loop {
        match rx.pop_timeout(Duration::from_secs(5)) {
            Ok(v) => {
                assert_eq!(v, n);
                n += 1;
            }
            Err(PopError::Disconnected) => break,
            Err(e) => panic!("after {n} items: {e}"),
        }
    }
    assert!(n >= 64, "drained only {n}");
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?} to notice the dead producer", t.elapsed());
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
    let mut p = Process::new(consume_then_hang, (q.clone(), ready.clone()));
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    let mut tx = q.producer().unwrap();
    for i in 0..4 {
        tx.push(i).unwrap();
    }
    p.kill().unwrap();
    let t = Instant::now();
    assert_eq!(tx.push_timeout(99, Duration::from_secs(5)), Err(PushError::Disconnected(99)));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    let _ = p.join();
}

shmproc::entry! {
    /// Blocks in pop for up to 1 s on an empty queue; returns the thread's
    /// CPU time in µs spent blocked.
    fn block_and_measure(args: (SpscQueue<u64>, Value<u64>)) -> Result<(), String> {
        let (q, out) = args;
        let mut rx = q.consumer().map_err(|e| e.to_string())?;
        let cpu = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
        };
        let before = cpu();
        match rx.pop_timeout(Duration::from_secs(1)) {
            Err(PopError::TimedOut) => {}
            other => return Err(format!("{other:?}")),
        }
        out.set(cpu() - before).map_err(|e| e.to_string())
    }
}

#[test]
fn a_consumer_blocked_for_one_second_uses_under_5_ms_of_cpu() {
    let q = SpscQueue::<u64>::new(8).unwrap();
    let _tx = q.producer().unwrap();
    let used = Value::new(0u64).unwrap();
    let mut p = Process::new(block_and_measure, (q.clone(), used.clone()));
    p.start().unwrap();
    p.join().unwrap();
    let us = used.get().unwrap();
    eprintln!("blocked consumer used {us} µs of CPU in 1 s");
    assert!(us < 5_000, "blocked consumer used {us} µs of CPU in 1 s");
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
    let mut p = Process::new(pop_until_closed, (q.clone(), ready.clone()));
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(50)); // let it fall asleep
    q.close();
    p.join().unwrap();
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
    p.join().unwrap();
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
    match p.join() {
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        proptest::collection::vec(any::<u32>(), 0..12).prop_map(Op::PushSlice),
        Just(Op::Pop),
        (0usize..12).prop_map(Op::PopInto),
        any::<u32>().prop_map(Op::LoanCommit),
        Just(Op::PeekRelease),
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
        for op in ops {
            match op {
                Op::Push(v) => {
                    let r = tx.try_push(v);
                    if model.len() < cap { prop_assert!(r.is_ok()); model.push_back(v); }
                    else { prop_assert_eq!(r, Err(PushError::Full(v))); }
                }
                Op::PushSlice(vs) => {
                    let n = tx.push_slice(&vs);
                    prop_assert_eq!(n, vs.len().min(cap - model.len()));
                    model.extend(&vs[..n]);
                }
                Op::Pop => match model.pop_front() {
                    Some(v) => prop_assert_eq!(rx.try_pop(), Ok(v)),
                    None => prop_assert_eq!(rx.try_pop(), Err(PopError::Empty)),
                },
                Op::PopInto(k) => {
                    let mut out = vec![0u32; k];
                    let n = rx.pop_into(&mut out);
                    prop_assert_eq!(n, k.min(model.len()));
                    for v in &out[..n] { prop_assert_eq!(Some(*v), model.pop_front()); }
                }
                Op::LoanCommit(v) => match tx.loan() {
                    Ok(mut l) => { prop_assert!(model.len() < cap); l.write(v); l.commit(); model.push_back(v); }
                    Err(e) => { prop_assert_eq!(model.len(), cap); prop_assert_eq!(e, PushError::Full(())); }
                },
                Op::PeekRelease => match rx.peek() {
                    Ok(l) => { prop_assert_eq!(Some(l.read()), model.pop_front()); l.release(); }
                    Err(e) => { prop_assert!(model.is_empty()); prop_assert_eq!(e, PopError::Empty); }
                },
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
        }
    }
}
