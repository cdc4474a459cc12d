//! review26: hostile user-written `Handoff` impls (and other user code that
//! runs inside shmproc operations): encodes and decodes that panic, lie
//! about their length or change it between calls, across real processes.
//! After each attack: the object is still usable by another process, its
//! counts are exact, no peer is left blocked, nothing is left in /dev/shm.
//! Every blocking wait is bounded.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmproc::{Connection, Handoff, HandoffError, Process, Queue, pipe};

const DEADLINE: Duration = Duration::from_secs(60);

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Runs `f`, which must panic (a hostile user impl inside it).
fn must_panic<R>(what: &str, f: impl FnOnce() -> R) {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    assert!(r.is_err(), "{what}: no panic");
}

/// A value whose `encode` or `decode` panics, as its flags say.
#[derive(Debug, Clone, PartialEq)]
struct Bomb {
    n: u64,
    on_encode: bool,
    on_decode: bool,
}

impl Bomb {
    fn ok(n: u64) -> Self {
        Bomb { n, on_encode: false, on_decode: false }
    }
}

impl Handoff for Bomb {
    fn encode(&self, out: &mut Vec<u8>) {
        self.n.encode(out);
        if self.on_encode {
            panic!("Bomb::encode");
        }
        self.on_decode.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let n = u64::decode(input)?;
        if bool::decode(input)? {
            panic!("Bomb::decode");
        }
        Ok(Bomb::ok(n))
    }
}

// ---------------------------------------------------------------------------
// A pipe end inside a value whose encode panics.

shmproc::entry! {
    /// Waits for a message on `rx`; the end of the pipe (its sender gone)
    /// is the expected outcome.
    fn wait_for_eof(mut rx: Connection) -> Result<(), String> {
        match rx.recv_bytes() {
            Err(_) => Ok(()),
            Ok(m) => Err(format!("a message arrived: {m:?}")),
        }
    }
}

/// Starts a child waiting on the receiving end of a fresh one-way pipe;
/// returns it and the sending end.
fn child_waiting_for_eof() -> (Process, Connection) {
    let (rx, tx) = pipe(false).unwrap();
    let mut p = Process::new(wait_for_eof, rx).with_daemon(true);
    p.start().unwrap();
    (p, tx)
}

/// The child ends within `within` (it saw the sender gone).
fn ends(p: &Process, within: Duration) -> bool {
    let ended = p.join_timeout(within).unwrap();
    if !ended {
        let _ = p.kill();
        let _ = p.join_timeout(DEADLINE);
    }
    ended
}

#[test]
fn a_sending_end_dropped_unused_after_an_encode_panicked_still_ends_the_peers_wait() {
    // Control: the end dropped unused ends the child's wait.
    let (p, tx) = child_waiting_for_eof();
    drop(tx);
    assert!(ends(&p, DEADLINE), "control: the child's recv did not end");
    assert_eq!(p.exitcode(), Some(0));

    // The end encoded in a queue item whose encode then panics: the put
    // fails, so the end is as it was (this process's), and dropping it
    // unused must end the child's wait as above.
    let q: Queue<(Connection, Bomb)> = Queue::new(2).unwrap();
    let (p, tx) = child_waiting_for_eof();
    must_panic("put", || q.put((tx.clone(), Bomb { n: 1, on_encode: true, on_decode: false })).is_ok());
    assert_eq!(q.qsize(), 0);
    drop(tx);
    assert!(ends(&p, Duration::from_secs(20)), "the child's recv did not end after the queue put's encode panicked");

    // The same through a pipe's send_value.
    let (mut a, _b) = pipe(true).unwrap();
    let (p, tx) = child_waiting_for_eof();
    must_panic("send_value", || a.send_value(&(tx.clone(), Bomb { n: 1, on_encode: true, on_decode: false })));
    drop(tx);
    assert!(ends(&p, Duration::from_secs(20)), "the child's recv did not end after send_value's encode panicked");
}

shmproc::entry! {
    fn never_runs(_arg: (Connection, Bomb)) -> Result<(), String> {
        Err("started".into())
    }
}

#[test]
fn a_sending_end_in_a_start_argument_whose_encode_panicked_still_ends_the_peers_wait() {
    let (p, tx) = child_waiting_for_eof();
    let mut bad = Process::new(never_runs, (tx.clone(), Bomb { n: 1, on_encode: true, on_decode: false }));
    must_panic("start", || bad.start());
    drop(bad);
    drop(tx);
    assert!(ends(&p, Duration::from_secs(20)), "the child's recv did not end after start's encode panicked");
}

// ---------------------------------------------------------------------------
// Queues: panicking encodes publish nothing, panicking decodes lose only
// their own item; a second process sees exact counts.

shmproc::entry! {
    /// Gets `n` items (expecting 0, 1, ...) then puts `n` more (100...).
    fn get_then_put((q, n): (Queue<Bomb>, u64)) -> Result<(), String> {
        for i in 0..n {
            let b = q.get_timeout(DEADLINE).map_err(s)?;
            if b.n != i {
                return Err(format!("got {} for {i}", b.n));
            }
        }
        for i in 0..n {
            q.put(Bomb::ok(100 + i)).map_err(s)?;
        }
        Ok(())
    }
}

fn queue_survives_bombs(q: Queue<Bomb>) {
    // Encodes that panic between good puts: nothing of them lands.
    for i in 0..3u64 {
        q.put(Bomb::ok(i)).unwrap();
        let bad = Bomb { n: 999, on_encode: true, on_decode: false };
        must_panic("put", || q.put(bad.clone()));
        must_panic("put_ref", || q.put_ref(&bad));
        must_panic("put_nowait", || q.put_nowait(bad.clone()));
        must_panic("put_timeout", || q.put_timeout(bad.clone(), Duration::from_millis(1)));
    }
    assert_eq!(q.qsize(), 3);
    let mut p = Process::new(get_then_put, (q.clone(), 3));
    p.start().unwrap();
    assert!(p.join_timeout(DEADLINE).unwrap(), "child hung");
    assert_eq!(p.exitcode(), Some(0), "child failed");
    assert_eq!(q.qsize(), 3);
    // Decodes that panic: that item goes, the others stay in order.
    q.put(Bomb { n: 7, on_encode: false, on_decode: true }).unwrap();
    q.put(Bomb { n: 8, on_encode: false, on_decode: true }).unwrap();
    q.put(Bomb::ok(9)).unwrap();
    assert_eq!(q.qsize(), 6);
    for i in 0..3 {
        assert_eq!(q.get_timeout(DEADLINE).unwrap().n, 100 + i);
    }
    must_panic("get", || q.get());
    let mut out = Bomb::ok(0);
    must_panic("get_into", || q.get_into(&mut out));
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_nowait().unwrap().n, 9);
    assert_eq!(q.qsize(), 0);
    assert!(q.empty());
}

#[test]
fn a_bounded_queue_survives_panicking_encodes_and_decodes() {
    queue_survives_bombs(Queue::new(8).unwrap());
}

#[test]
fn an_unbounded_queue_survives_panicking_encodes_and_decodes() {
    queue_survives_bombs(Queue::new(0).unwrap());
}

// ---------------------------------------------------------------------------
// An encode whose length changes with every call.

/// Encodes `64 << k` bytes at its `k`-th call (a length that doubles).
#[derive(Debug)]
struct Growing(AtomicU64);

impl Handoff for Growing {
    fn encode(&self, out: &mut Vec<u8>) {
        let k = self.0.fetch_add(1, Ordering::Relaxed).min(40);
        vec![7u8; 64usize << k].encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        Vec::<u8>::decode(input)?;
        Ok(Growing(AtomicU64::new(0)))
    }
}

#[test]
fn an_unbounded_queue_given_an_ever_growing_encode_refuses_it_and_stays_usable() {
    let q: Queue<Growing> = Queue::unbounded_with_limit(64 << 20).unwrap();
    let r = q.put_ref_timeout(&Growing(AtomicU64::new(0)), Duration::from_secs(5));
    eprintln!("growing put: {r:?}");
    assert!(r.is_err());
    assert_eq!(q.qsize(), 0);
    q.put(Growing(AtomicU64::new(0))).unwrap();
    assert_eq!(q.qsize(), 1);
    q.get_timeout(DEADLINE).unwrap();
    assert_eq!(q.qsize(), 0);
}

// ---------------------------------------------------------------------------
// Pool: arguments and results whose encode, decode or drop panic.

/// A task value: `Bomb`, plus a drop that panics when `loud`.
#[derive(Debug)]
struct LoudDrop {
    n: u64,
    loud: bool,
}

impl Drop for LoudDrop {
    fn drop(&mut self) {
        if self.loud && !std::thread::panicking() {
            panic!("LoudDrop::drop {}", self.n);
        }
    }
}

impl Handoff for LoudDrop {
    fn encode(&self, out: &mut Vec<u8>) {
        self.n.encode(out);
    }
    /// Loud once decoded (in the parent; quiet in the worker).
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(LoudDrop { n: u64::decode(input)?, loud: true })
    }
}

shmproc::task! { fn r26_echo(b: Bomb) -> Bomb { b } }
shmproc::task! {
    /// Its value's encode panics in the worker for 7.
    fn r26_bad_result(n: u64) -> Bomb { Bomb { n, on_encode: n == 7, on_decode: false } }
}
shmproc::task! {
    /// Its value's decode panics in the parent for 7.
    fn r26_bad_result_decode(n: u64) -> Bomb { Bomb { n, on_encode: false, on_decode: n == 7 } }
}
shmproc::task! {
    /// Fails item 3; the others' values panic when dropped.
    fn r26_loud(n: u64) -> Result<LoudDrop, String> {
        if n == 3 { Err("three".into()) } else { Ok(LoudDrop { n, loud: false }) }
    }
}
shmproc::task! { fn r26_sq(n: u64) -> u64 { n * n } }

fn pool_still_works(pool: &std::sync::Arc<shmproc::Pool>, what: &str) {
    let r = within(what, {
        let pool = pool.clone();
        move || pool.map(r26_sq, 0..50u64)
    });
    assert_eq!(r.unwrap(), (0..50u64).map(|x| x * x).collect::<Vec<_>>(), "{what}");
}

fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

#[test]
fn a_pool_survives_results_whose_encode_or_decode_panics() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    let r = within("map_results bad encode", {
        let pool = pool.clone();
        move || pool.map_results(r26_bad_result, 0..20u64, 1).unwrap()
    });
    for (i, x) in r.iter().enumerate() {
        if i == 7 {
            eprintln!("item 7 (encode panicked): {x:?}");
            assert!(x.is_err());
        } else {
            assert_eq!(x.as_ref().unwrap().n, i as u64);
        }
    }
    pool_still_works(&pool, "after a result encode panicked");
    let r = within("map_results bad encode, chunks", {
        let pool = pool.clone();
        move || pool.map_results(r26_bad_result, 0..20u64, 5).unwrap()
    });
    assert!(r[7].is_err() && r.iter().filter(|x| x.is_ok()).count() == 19, "{r:?}");
    let r = within("map_results bad decode", {
        let pool = pool.clone();
        move || pool.map_results(r26_bad_result_decode, 0..20u64, 3).unwrap()
    });
    eprintln!("item 7 (decode panicked): {:?}", r[7]);
    assert!(r[7].is_err() && r.iter().filter(|x| x.is_ok()).count() == 19, "{r:?}");
    let r = within("apply bad decode", {
        let pool = pool.clone();
        move || pool.apply(r26_bad_result_decode, 7)
    });
    eprintln!("apply (decode panicked): {r:?}");
    assert!(r.is_err());
    pool_still_works(&pool, "after a result decode panicked");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

#[test]
fn a_pool_survives_arguments_whose_encode_or_decode_panics() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    let bombs = |k: usize, n: u64| (0..n).map(move |i| Bomb { n: i, on_encode: i == k as u64, on_decode: false });
    // In the first batch, and in a later one.
    for (k, n) in [(5usize, 20u64), (9000, 10_000)] {
        let p = pool.clone();
        within("map with a panicking encode", move || must_panic("map", || p.map(r26_echo, bombs(k, n))));
        pool_still_works(&pool, "after an argument encode panicked in map");
        let p = pool.clone();
        within("imap with a panicking encode", move || {
            must_panic("imap", || p.imap(r26_echo, bombs(k, n)).map(|it| it.count()))
        });
        pool_still_works(&pool, "after an argument encode panicked in imap");
    }
    let p = pool.clone();
    within("apply with a panicking encode", move || {
        must_panic("apply", || p.apply(r26_echo, Bomb { n: 1, on_encode: true, on_decode: false }))
    });
    pool_still_works(&pool, "after an argument encode panicked in apply");
    // Decoded in the worker.
    let r = within("map_results bad arg decode", {
        let pool = pool.clone();
        move || {
            pool.map_results(r26_echo, (0..20u64).map(|i| Bomb { n: i, on_encode: false, on_decode: i == 4 }), 2)
                .unwrap()
        }
    });
    eprintln!("item 4 (arg decode panicked): {:?}", r[4]);
    assert!(r[4].is_err() && r.iter().filter(|x| x.is_ok()).count() == 19, "{r:?}");
    pool_still_works(&pool, "after an argument decode panicked");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

#[test]
fn a_pool_survives_results_whose_drop_panics() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    let p = pool.clone();
    let r = within("map with loud drops", move || {
        catch_unwind(AssertUnwindSafe(|| p.map(r26_loud, 0..10u64).map(|v| v.len())))
    });
    eprintln!("map with loud drops: {:?}", r.as_ref().map_err(|_| "panicked"));
    pool_still_works(&pool, "after results' drops panicked");
    let p = pool.clone();
    let r = within("imap with loud drops", move || {
        catch_unwind(AssertUnwindSafe(|| {
            let mut it = p.imap(r26_loud, 0..10u64).unwrap();
            let first = it.next().map(|x| x.map(|v| std::mem::ManuallyDrop::new(v).n));
            drop(it); // the rest dropped by the pool
            first
        }))
    });
    eprintln!("imap dropped with loud values pending: {:?}", r.as_ref().map_err(|_| "panicked"));
    pool_still_works(&pool, "after an imap's pending values' drops panicked");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

// ---------------------------------------------------------------------------
// Pool: a pipe end in an argument that is never sent (a later item's
// encode panicked, or the item is too large).

shmproc::task! { fn r26_take_end(arg: (Connection, Bomb, Vec<u8>)) -> u64 { arg.1.n } }

#[test]
fn a_pipe_end_in_a_pool_argument_never_sent_after_a_panic_still_ends_the_peers_wait() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(1).unwrap());
    // A later item's encode panics: the batch with the end is never sent.
    let (p, tx) = child_waiting_for_eof();
    let items = vec![
        (tx, Bomb::ok(0), Vec::new()),
        (pipe(false).unwrap().1, Bomb { n: 1, on_encode: true, on_decode: false }, Vec::new()),
    ];
    let pl = pool.clone();
    within("map", move || must_panic("map", || pl.map(r26_take_end, items)));
    assert!(ends(&p, Duration::from_secs(20)), "the child's recv did not end after map's encode panicked");
    pool_still_works(&pool, "after");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

#[test]
fn a_pipe_end_in_a_pool_argument_refused_as_too_large_still_ends_the_peers_wait() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(1).unwrap());
    let (p, tx) = child_waiting_for_eof();
    let items = vec![(tx, Bomb::ok(0), vec![0u8; shmproc::pool::MAX_ITEM_BYTES + 1])];
    let pl = pool.clone();
    let r = within("map_results", move || pl.map_results(r26_take_end, items, 1));
    eprintln!("too large: {r:?}");
    assert!(
        ends(&p, Duration::from_secs(20)),
        "the child's recv did not end after its end's item was refused as too large"
    );
    pool_still_works(&pool, "after");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

// ---------------------------------------------------------------------------
// JoinableQueue, SimpleQueue, pipe values, Manager lists: user code that
// panics inside their operations.

shmproc::entry! {
    /// Gets `n` items from a JoinableQueue, marking each done.
    fn joinable_worker((q, n): (shmproc::JoinableQueue<Bomb>, u64)) -> Result<(), String> {
        for _ in 0..n {
            q.get_timeout(DEADLINE).map_err(s)?;
            q.task_done().map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn a_joinable_queue_counts_exactly_around_panicking_encodes_and_decodes() {
    for q in [shmproc::JoinableQueue::<Bomb>::new(4).unwrap(), shmproc::JoinableQueue::<Bomb>::new(0).unwrap()] {
        let bad = Bomb { n: 9, on_encode: true, on_decode: false };
        must_panic("put", || q.put(bad.clone()).is_ok());
        must_panic("put_ref", || q.put_ref(&bad));
        assert_eq!(q.unfinished_tasks(), 0);
        q.put(Bomb { n: 1, on_encode: false, on_decode: true }).unwrap();
        must_panic("get", || q.get());
        // The getter of an item that failed still marks it done (as in Python).
        assert_eq!(q.unfinished_tasks(), 1);
        q.task_done().unwrap();
        for i in 0..3 {
            q.put(Bomb::ok(i)).unwrap();
        }
        let mut p = Process::new(joinable_worker, (q.clone(), 3));
        p.start().unwrap();
        assert!(q.join_timeout(DEADLINE), "join did not return");
        assert!(p.join_timeout(DEADLINE).unwrap());
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(q.unfinished_tasks(), 0);
    }
    let q = shmproc::SimpleQueue::<Bomb>::new(0).unwrap();
    must_panic("put", || q.put(Bomb { n: 9, on_encode: true, on_decode: false }).is_ok());
    q.put(Bomb { n: 1, on_encode: false, on_decode: true }).unwrap();
    q.put(Bomb::ok(2)).unwrap();
    must_panic("get", || q.get());
    assert_eq!(q.get().unwrap().n, 2);
    assert!(q.empty());
}

shmproc::entry! {
    /// Receives values on `c` until it gets 3, answering each with its n.
    fn value_echo(mut c: Connection) -> Result<(), String> {
        loop {
            match c.recv_value::<Bomb>() {
                Ok(b) => {
                    c.send_value(&b.n).map_err(s)?;
                    if b.n == 3 {
                        return Ok(());
                    }
                }
                Err(e) => c.send_value(&(1000 + e.to_string().len() as u64)).map_err(s)?,
            }
        }
    }
}

#[test]
fn a_pipe_survives_values_whose_encode_or_decode_panics() {
    let (mut a, b) = pipe(true).unwrap();
    let mut p = Process::new(value_echo, b);
    p.start().unwrap();
    must_panic("send_value", || a.send_value(&Bomb { n: 0, on_encode: true, on_decode: false }));
    a.send_value(&Bomb::ok(1)).unwrap();
    assert_eq!(a.recv_value_timeout::<u64>(DEADLINE), Ok(1));
    // A value whose decode panics in the child kills it (its panic is
    // its own): this end then sees the pipe's end, not a hang.
    a.send_value(&Bomb { n: 2, on_encode: false, on_decode: true }).unwrap();
    let r = a.recv_value_timeout::<u64>(DEADLINE);
    eprintln!("after the child's decode panicked: {r:?}");
    assert!(r.is_err(), "{r:?}");
    let j = p.join_timeout(DEADLINE);
    assert!(matches!(j, Err(shmproc::ProcessError::Panicked { .. })), "{j:?}");
    // In this process: the panic leaves the end usable.
    let (mut x, mut y) = pipe(true).unwrap();
    x.send_value(&Bomb { n: 2, on_encode: false, on_decode: true }).unwrap();
    x.send_value(&Bomb::ok(3)).unwrap();
    must_panic("recv_value", || y.recv_value::<Bomb>());
    assert_eq!(y.recv_value::<Bomb>().unwrap().n, 3);
}

shmproc::entry! {
    fn list_appender((l, n): (shmproc::ListProxy<u64>, u64)) -> Result<(), String> {
        l.append(n).map_err(s)
    }
}

#[test]
fn a_list_survives_a_sort_key_and_a_group_that_panic() {
    let l = shmproc::ListProxy::<u64>::new().unwrap();
    l.extend([3, 1, 2]).unwrap();
    must_panic("sort_by_key", || {
        l.sort_by_key(|&x| {
            if x == 2 {
                panic!("key");
            }
            x
        })
    });
    must_panic("with_lock", || {
        l.with_lock(|l| {
            l.append(9).unwrap();
            l.remove(&3).unwrap();
            panic!("group");
        })
    });
    assert_eq!(l.to_vec().unwrap(), [3, 1, 2]);
    let mut p = Process::new(list_appender, (l.clone(), 4));
    p.start().unwrap();
    assert!(p.join_timeout(DEADLINE).unwrap(), "the other process hung on the list");
    assert_eq!(p.exitcode(), Some(0));
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn an_imap_whose_input_encode_panicked_does_not_wait_for_ever_when_iterated_on() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    for k in [5u64, 20] {
        let p = pool.clone();
        let seen = within("imap after a panicking encode", move || {
            let items = (0..30u64).map(move |i| Bomb { n: i, on_encode: i == k, on_decode: false });
            let mut it = p.imap(r26_echo, items).unwrap();
            let mut seen = Vec::new();
            for _ in 0..40 {
                let prev = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let r = catch_unwind(AssertUnwindSafe(|| it.next_timeout(Duration::from_secs(10))));
                std::panic::set_hook(prev);
                match r {
                    Err(_) => seen.push("panic".to_string()),
                    Ok(Err(shmproc::pool::NextTimedOut)) => {
                        seen.push("timed out".to_string());
                        break;
                    }
                    Ok(Ok(None)) => {
                        seen.push("end".to_string());
                        break;
                    }
                    Ok(Ok(Some(r))) => seen.push(format!("{:?}", r.map(|b| b.n))),
                }
            }
            seen
        });
        eprintln!("imap after a panicking encode of item {k}: {seen:?}");
        // The items submitted before the panic, in order, once each; one
        // NotSubmitted for the first item that was not sent; the end.
        assert_eq!(seen.iter().filter(|s| *s == "panic").count(), 1, "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("end"), "{seen:?}");
        let got: Vec<&String> = seen.iter().filter(|s| s.starts_with("Ok(")).collect();
        let first_unsent = got.len() as u64;
        assert!(first_unsent <= k, "{seen:?}");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(**g, format!("Ok({i})"), "{seen:?}");
        }
        let not_sent = format!("Err(NotSubmitted {{ index: {first_unsent} }})");
        assert_eq!(seen.iter().filter(|s| **s == not_sent).count(), 1, "{seen:?}");
    }
    pool_still_works(&pool, "after");
    pool.close();
    within("join", move || pool.join()).unwrap();
}

// ---------------------------------------------------------------------------
// A start argument whose drop panics in the parent, dropped by the exit
// handler (the parent returns without joining its child).

/// Panics when dropped in the process that made it (quiet once decoded).
struct LoudArg {
    loud: bool,
}

impl Drop for LoudArg {
    fn drop(&mut self) {
        if self.loud && !std::thread::panicking() {
            panic!("LoudArg::drop");
        }
    }
}

impl Handoff for LoudArg {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(LoudArg { loud: false })
    }
}

shmproc::entry! {
    fn quiet_child(_arg: LoudArg) -> Result<(), String> {
        Ok(())
    }
}

shmproc::entry! {
    /// Starts a child with a loud argument and returns without joining it:
    /// the exit handler joins it and drops the argument.
    fn parent_leaving_a_loud_arg() -> Result<(), String> {
        let mut p = Process::new(quiet_child, LoudArg { loud: true });
        p.start().map_err(s)?;
        std::mem::forget(p);
        Ok(())
    }
}

#[test]
fn an_argument_whose_drop_panics_in_the_exit_handler_does_not_abort_the_exit() {
    // Spawned (the exit handler), and forked (the child's own exit step).
    for method in [shmproc::process::StartMethod::Spawn, shmproc::process::StartMethod::Fork] {
        let mut p = Process::new(parent_leaving_a_loud_arg, ()).with_start_method(method);
        p.start().unwrap();
        let r = p.join_timeout(DEADLINE);
        eprintln!("{method} parent's end: {r:?}, exit code {:?}", p.exitcode());
        assert!(matches!(r, Ok(true)), "{method}: {r:?}");
        assert_eq!(p.exitcode(), Some(0), "{method}");
    }
}

// ---------------------------------------------------------------------------
// Panics whose payload panics again when dropped (`panic_any` of a value
// with a loud `Drop`): the code that catches the first panic drops it.

struct LoudPayload;

impl Drop for LoudPayload {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("LoudPayload::drop");
        }
    }
}

/// A value whose decode panics with a loud payload when its flag is set.
#[derive(Debug)]
struct LoudDecode(u64);

impl Handoff for LoudDecode {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let n = u64::decode(input)?;
        if n == 7 {
            std::panic::panic_any(LoudPayload);
        }
        Ok(LoudDecode(n))
    }
}

shmproc::task! { fn r26_loud_decode(n: u64) -> LoudDecode { LoudDecode(n) } }
shmproc::task! {
    fn r26_loud_panic(n: u64) -> u64 {
        if n == 7 {
            std::panic::panic_any(LoudPayload);
        }
        n
    }
}

/// Item 7 failed with `Panicked`, the other 19 succeeded.
fn only_seven_panicked<T: std::fmt::Debug>(
    what: &str,
    r: Result<Vec<Result<T, shmproc::pool::TaskError>>, shmproc::pool::PoolError>,
) {
    let v = r.unwrap_or_else(|e| panic!("{what}: the map failed: {e}"));
    assert!(matches!(v[7], Err(shmproc::pool::TaskError::Panicked { index: 7, .. })), "{what}: {:?}", v[7]);
    assert_eq!(v.iter().filter(|x| x.is_ok()).count(), 19, "{what}: {v:?}");
}

shmproc::entry! {
    fn loud_entry() -> Result<(), String> {
        std::panic::panic_any(LoudPayload)
    }
}

#[test]
fn a_pool_survives_panics_whose_payload_panics_when_dropped() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    for chunk in 1..4 {
        let p = pool.clone();
        let r = within("task panicking with a loud payload", move || p.map_results(r26_loud_panic, 0..20u64, chunk));
        only_seven_panicked("a task's loud payload", r);
        pool_still_works(&pool, "after a task's loud payload");
        let p = pool.clone();
        let r = within("result decode panicking with a loud payload", move || {
            p.map_results(r26_loud_decode, 0..20u64, chunk)
                .map(|v| v.into_iter().map(|x| x.map(|d| d.0)).collect::<Vec<_>>())
        });
        only_seven_panicked("a result decode's loud payload", r);
        pool_still_works(&pool, "after a result decode's loud payload");
    }
    pool.close();
    within("join", move || pool.join()).unwrap();
    // A process entry's.
    let mut p = Process::new(loud_entry, ());
    p.start().unwrap();
    let r = p.join_timeout(DEADLINE);
    assert!(matches!(r, Err(shmproc::ProcessError::Panicked { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------
// Values that encode to nothing.

#[derive(Debug, Clone, PartialEq)]
struct Nothing;

impl Handoff for Nothing {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(Nothing)
    }
}

shmproc::task! { fn r26_nothing(_x: Nothing) -> Nothing { Nothing } }

shmproc::entry! {
    fn nothing_echo((q, mut c): (Queue<Nothing>, Connection)) -> Result<(), String> {
        for _ in 0..5 {
            q.get_timeout(DEADLINE).map_err(s)?;
        }
        for _ in 0..5 {
            c.recv_value_timeout::<Nothing>(DEADLINE).map_err(s)?;
        }
        for _ in 0..3 {
            q.put(Nothing).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn values_that_encode_to_nothing_travel_everywhere() {
    for q in [Queue::<Nothing>::new(4).unwrap(), Queue::<Nothing>::new(0).unwrap()] {
        let (mut a, b) = pipe(true).unwrap();
        let mut p = Process::new(nothing_echo, (q.clone(), b));
        p.start().unwrap();
        for _ in 0..5 {
            q.put(Nothing).unwrap();
            a.send_value(&Nothing).unwrap();
        }
        assert!(p.join_timeout(DEADLINE).unwrap());
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(q.qsize(), 3);
        let mut out = Nothing;
        q.get_into(&mut out).unwrap();
        assert_eq!(q.get_nowait(), Ok(Nothing));
        assert_eq!(q.get_nowait(), Ok(Nothing));
        assert!(q.empty());
    }
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    let p = pool.clone();
    let r = within("map of nothings", move || p.map(r26_nothing, std::iter::repeat_n(Nothing, 100_000)));
    assert_eq!(r.unwrap().len(), 100_000);
    let p = pool.clone();
    let r = within("imap of nothings", move || {
        p.imap(r26_nothing, std::iter::repeat_n(Nothing, 1000)).unwrap().filter(Result::is_ok).count()
    });
    assert_eq!(r, 1000);
    pool.close();
    within("join", move || pool.join()).unwrap();
}

/// `0..n`, panicking at `at` (an exact size hint: the plain-data paths
/// fill an arena from it).
struct PanickingInput {
    i: u64,
    n: u64,
    at: u64,
}

impl Iterator for PanickingInput {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.i == self.at {
            panic!("input {}", self.at);
        }
        (self.i < self.n).then(|| {
            self.i += 1;
            self.i - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.n - self.i) as usize;
        (left, Some(left))
    }
}

#[test]
fn a_pool_survives_plain_data_inputs_that_panic_midway() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    for (n, at) in [(10u64, 5u64), (100_000, 50_000), (1_000_000, 900_000)] {
        let p = pool.clone();
        within("map", move || must_panic("map", || p.map(r26_sq, PanickingInput { i: 0, n, at })));
        pool_still_works(&pool, "after a map's input panicked");
        // (imap: fewer items, one round trip each.)
        let p = pool.clone();
        let (n_i, at_i) = (n.min(5000), at.min(2500));
        within("imap", move || {
            must_panic("imap", || p.imap(r26_sq, PanickingInput { i: 0, n: n_i, at: at_i }).map(|it| it.count()))
        });
        pool_still_works(&pool, "after an imap's input panicked");
        let p = pool.clone();
        within("map_async", move || {
            must_panic("map_async", || {
                p.map_async(r26_sq, PanickingInput { i: 0, n, at }).map(|r| r.get().map(|v| v.len()))
            })
        });
        pool_still_works(&pool, "after a map_async's input panicked");
    }
    pool.close();
    within("join", move || pool.join()).unwrap();
}

// ---------------------------------------------------------------------------
// A plain-data type whose `ShmType::type_name` (user code, asked when an
// object of it is made or opened) panics on its k-th call.

static NAME_CALLS: AtomicU64 = AtomicU64::new(0);
static NAME_PANICS_AT: AtomicU64 = AtomicU64::new(u64::MAX);

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Touchy {
    x: u64,
}

impl shmproc::ShmType for Touchy {
    fn type_name() -> std::borrow::Cow<'static, str> {
        if NAME_CALLS.fetch_add(1, Ordering::Relaxed) == NAME_PANICS_AT.load(Ordering::Relaxed) {
            panic!("Touchy::type_name");
        }
        "review26.Touchy".into()
    }
}
shmproc::handoff_pod!(Touchy);

/// The /dev/shm entries made by this process (their names carry its pid).
fn shm_entries() -> Vec<String> {
    let me = format!(".{}.", std::process::id());
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(&me))
        .collect();
    v.sort();
    v
}

/// Makes `make` panic at each call of `type_name` in turn; after each
/// panic, nothing of it is left in /dev/shm.
fn no_leftovers_when_type_name_panics(what: &str, make: impl Fn()) -> Result<(), String> {
    let before = shm_entries();
    NAME_PANICS_AT.store(u64::MAX, Ordering::Relaxed);
    NAME_CALLS.store(0, Ordering::Relaxed);
    make();
    let calls = NAME_CALLS.load(Ordering::Relaxed);
    if shm_entries() != before {
        return Err(format!("{what}: left after a normal make and drop: {:?}", shm_entries()));
    }
    for k in 0..calls {
        NAME_CALLS.store(0, Ordering::Relaxed);
        NAME_PANICS_AT.store(k, Ordering::Relaxed);
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = catch_unwind(AssertUnwindSafe(&make));
        std::panic::set_hook(prev);
        NAME_PANICS_AT.store(u64::MAX, Ordering::Relaxed);
        let left: Vec<String> = shm_entries().into_iter().filter(|e| !before.contains(e)).collect();
        if !left.is_empty() {
            return Err(format!(
                "{what}: type_name panicking at call {k} of {calls} (panicked: {}) left {left:?}",
                r.is_err()
            ));
        }
    }
    Ok(())
}

shmproc::entry! {
    /// In a process of its own: the /dev/shm entries it checks are its own.
    fn type_name_probe() -> Result<(), String> {
        // The names of this process's objects carry its pid (what
        // `shm_entries` looks for).
        {
            let (_q, _c, m) = (Queue::<Touchy>::new(4).map_err(s)?, Queue::<Touchy>::new(0).map_err(s)?, shmproc::Manager::new().map_err(s)?);
            let _l = m.list::<Touchy>("t").map_err(s)?;
            let seen = shm_entries();
            if seen.len() < 4 {
                return Err(format!("only {seen:?} seen"));
            }
        }
        no_leftovers_when_type_name_panics("bounded Queue", || {
            let q = Queue::<Touchy>::new(4).unwrap();
            q.put(Touchy { x: 1 }).unwrap();
            let _o = Queue::<Touchy>::open(q.name()).unwrap();
        })?;
        no_leftovers_when_type_name_panics("unbounded Queue", || {
            let q = Queue::<Touchy>::new(0).unwrap();
            q.put(Touchy { x: 1 }).unwrap();
            let _o = Queue::<Touchy>::open(q.name()).unwrap();
        })?;
        no_leftovers_when_type_name_panics("Value", || {
            let v = shmproc::Value::new(Touchy { x: 1 }).unwrap();
            let _o = shmproc::Value::<Touchy>::open(v.name()).unwrap();
        })?;
        no_leftovers_when_type_name_panics("ListProxy", || {
            let l = shmproc::ListProxy::<Touchy>::new().unwrap();
            l.append(Touchy { x: 1 }).unwrap();
        })?;
        no_leftovers_when_type_name_panics("Manager list", || {
            let m = shmproc::Manager::new().unwrap();
            let l = m.list::<Touchy>("t").unwrap();
            l.append(Touchy { x: 1 }).unwrap();
        })
    }
}

#[test]
fn a_type_name_that_panics_leaves_nothing_in_dev_shm() {
    let mut p = Process::new(type_name_probe, ());
    p.start().unwrap();
    let r = p.join_timeout(DEADLINE);
    assert!(matches!(r, Ok(true)), "{r:?}");
}

/// A plain-data type whose name is another at every call.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Fickle {
    x: u64,
}

static FICKLE: AtomicU64 = AtomicU64::new(0);

impl shmproc::ShmType for Fickle {
    fn type_name() -> std::borrow::Cow<'static, str> {
        format!("review26.Fickle/{}", FICKLE.fetch_add(1, Ordering::Relaxed)).into()
    }
}
shmproc::handoff_pod!(Fickle);

shmproc::entry! {
    fn fickle_probe() -> Result<(), String> {
        let q = Queue::<Fickle>::unbounded_with_limit(64 << 20).map_err(s)?;
        let mut put = 0u64;
        for i in 0..200_000u64 {
            match q.put_timeout(Fickle { x: i }, Duration::from_millis(100)) {
                Ok(()) => put += 1,
                Err(e) => {
                    eprintln!("fickle put {i}: {e}");
                    break;
                }
            }
        }
        let mut got = 0u64;
        loop {
            match q.get_timeout(Duration::from_millis(200)) {
                Ok(f) => {
                    if f.x != got {
                        return Err(format!("got {} for {got}", f.x));
                    }
                    got += 1;
                }
                Err(e) => {
                    eprintln!("fickle get after {got} of {put}: {e}");
                    break;
                }
            }
        }
        eprintln!("fickle: put {put}, got {got}, qsize {}", q.qsize());
        drop(q);
        let left = shm_entries();
        if !left.is_empty() {
            return Err(format!("left {left:?}"));
        }
        Ok(())
    }
}

#[test]
fn an_unbounded_queue_of_a_type_whose_name_changes_fails_cleanly() {
    let mut p = Process::new(fickle_probe, ());
    p.start().unwrap();
    let r = p.join_timeout(DEADLINE);
    assert!(matches!(r, Ok(true)), "{r:?}");
}

// ---------------------------------------------------------------------------
// A pipe end sent to a pool task that drops it unused: the peer learns.

shmproc::task! { fn r26_drop_end(arg: (Connection, u64)) -> u64 { arg.1 } }

shmproc::entry! {
    /// Takes `n` ends from `q`, then `n` from `c`, dropping each unused,
    /// and acknowledges each on `acks`.
    fn end_dropper((q, mut c, acks, n): (Queue<(Connection, u64)>, Connection, Queue<u64>, u64)) -> Result<(), String> {
        for _ in 0..n {
            let (end, k) = q.get_timeout(DEADLINE).map_err(s)?;
            drop(end);
            acks.put(k).map_err(s)?;
        }
        for _ in 0..n {
            let (end, k) = c.recv_value_timeout::<(Connection, u64)>(DEADLINE).map_err(s)?;
            drop(end);
            acks.put(k).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn a_pipe_end_a_pool_task_drops_unused_ends_the_peers_wait() {
    let pool = std::sync::Arc::new(shmproc::Pool::new(2).unwrap());
    let waiters: Vec<(Process, Connection)> = (0..9).map(|_| child_waiting_for_eof()).collect();
    let mut procs = Vec::new();
    for (k, (p, tx)) in waiters.into_iter().enumerate() {
        let pl = pool.clone();
        // A copy kept until the task ran: the end's name must outlive the
        // worker's open (a documented limit of handles made inline).
        let keep = tx.clone();
        let r = within("send the end", move || match k % 3 {
            0 => pl.map(r26_drop_end, [(tx, k as u64)]).map(|v| v[0]),
            1 => pl.apply(r26_drop_end, (tx, k as u64)),
            _ => {
                pl.imap(r26_drop_end, [(tx, k as u64)]).unwrap().next().unwrap().map_err(shmproc::pool::PoolError::Task)
            }
        });
        assert_eq!(r.unwrap(), k as u64);
        drop(keep);
        procs.push(p);
    }
    for (k, p) in procs.iter().enumerate() {
        assert!(ends(p, DEADLINE), "waiter {k}: its recv did not end after the task dropped the end unused");
    }
    pool.close();
    within("join", move || pool.join()).unwrap();
}

#[test]
fn a_pipe_end_sent_through_a_queue_or_a_pipe_and_dropped_unused_ends_the_peers_wait() {
    let n = 6u64;
    let q: Queue<(Connection, u64)> = Queue::new(4).unwrap();
    let acks: Queue<u64> = Queue::new(16).unwrap();
    let (mut a, b) = pipe(true).unwrap();
    let mut dropper = Process::new(end_dropper, (q.clone(), b, acks.clone(), n));
    dropper.start().unwrap();
    let mut procs = Vec::new();
    for k in 0..2 * n {
        let (p, tx) = child_waiting_for_eof();
        let keep = tx.clone();
        if k < n {
            q.put((tx, k)).unwrap();
        } else {
            a.send_value(&(tx, k)).unwrap();
        }
        assert_eq!(acks.get_timeout(DEADLINE), Ok(k));
        drop(keep);
        procs.push(p);
    }
    assert!(dropper.join_timeout(DEADLINE).unwrap());
    assert_eq!(dropper.exitcode(), Some(0));
    for (k, p) in procs.iter().enumerate() {
        assert!(ends(p, DEADLINE), "waiter {k}: its recv did not end after the receiver dropped the end unused");
    }
}
