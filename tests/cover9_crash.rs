//! kill -9 inside the `Connection` operations the earlier crash tests left
//! out: a pipe end handed to a child that receives with every form
//! (`recv_bytes_into`, `recv_loan` held then released, `recv_loan_timeout`,
//! `recv_value`, `recv` of plain data) or sends with every form
//! (`send_loan` filled then committed, `try_send_loan`, `send_bytes`,
//! `send_value`, `send`), killed at a random instant (often holding a
//! loan); the parent's own copy of that end then takes the dead child's
//! role over and carries on. Nothing is torn, nothing duplicated, and only
//! the dead receiver's own message may be missing. Every wait has a
//! deadline.

mod common;

use std::time::{Duration, Instant};

use common::crash::{killer, reap_killed, start};
use shmproc::{Connection, Event, PipeRecvBytesTimeoutError, PipeSendTimeoutError, Process, Value};

const T: Duration = Duration::from_secs(30);

fn rounds() -> u64 {
    common::count(4, 40)
}

/// Message `i`'s kind: a `Handoff` value `(i, text)` every third message,
/// else a plain-data `[u64; 4]` every 7th, else the bytes of
/// `common::byte_frame(i)`.
fn kind_of(i: u64) -> u8 {
    if i % 3 == 2 {
        0 // a Handoff value
    } else if i.is_multiple_of(7) {
        1 // plain data
    } else {
        2 // bytes
    }
}

/// The bytes of message `i` in the pipe.
fn encoded(i: u64) -> Vec<u8> {
    match kind_of(i) {
        0 => {
            let mut out = Vec::new();
            shmproc::Handoff::encode(&(i, text(i)), &mut out);
            out
        }
        1 => bytemuck::bytes_of(&[i, !i, i, !i]).to_vec(),
        _ => common::byte_frame(i),
    }
}

fn text(i: u64) -> String {
    "v".repeat((i * 31 % 700) as usize)
}

/// Sends message `i` by form `form` (0..5), waiting at most `t`.
fn send_msg(c: &mut Connection, i: u64, form: u64, t: Duration) -> Result<(), PipeSendTimeoutError> {
    match kind_of(i) {
        0 => c.send_value_timeout(&(i, text(i)), t),
        1 => c.send_timeout(&[i, !i, i, !i], t),
        _ => {
            let f = common::byte_frame(i);
            match form % 3 {
                0 => c.send_bytes_timeout(&f, t),
                1 => {
                    let mut loan = c.send_loan_timeout(f.len(), t)?;
                    // Written in two halves: a kill may land between them.
                    let mid = f.len() / 2;
                    loan.write_at(0, &f[..mid]);
                    std::hint::black_box(&loan);
                    loan.write_at(mid, &f[mid..]);
                    loan.commit().map_err(|_| PipeSendTimeoutError::Closed)
                }
                _ => match c.try_send_loan(f.len()) {
                    Ok(mut loan) => {
                        loan.write_at(0, &f);
                        loan.commit().map_err(|_| PipeSendTimeoutError::Closed)
                    }
                    Err(shmproc::PipeTrySendError::Full) => Err(PipeSendTimeoutError::TimedOut),
                    Err(e) => panic!("try_send_loan: {e}"),
                },
            }
        }
    }
}

/// Receives message `i` (the one expected next) by form `form`, checks it
/// is whole, and returns its number; `Err` as the timed receives give it.
fn recv_msg(
    c: &mut Connection,
    i: u64,
    form: u64,
    buf: &mut Vec<u8>,
    t: Duration,
) -> Result<u64, PipeRecvBytesTimeoutError> {
    let bytes = |e: shmproc::PipeRecvValueTimeoutError| match e {
        shmproc::PipeRecvValueTimeoutError::TimedOut => PipeRecvBytesTimeoutError::TimedOut,
        shmproc::PipeRecvValueTimeoutError::Disconnected => PipeRecvBytesTimeoutError::Disconnected,
        e => panic!("message {i}: {e}"),
    };
    match kind_of(i) {
        0 => {
            let (n, s) = c.recv_value_timeout::<(u64, String)>(t).map_err(bytes)?;
            assert_eq!(s, text(n), "torn value {n}");
            Ok(n)
        }
        1 => {
            let v = c.recv_timeout::<[u64; 4]>(t).map_err(|e| match e {
                shmproc::PipeRecvTimeoutError::TimedOut => PipeRecvBytesTimeoutError::TimedOut,
                shmproc::PipeRecvTimeoutError::Disconnected => PipeRecvBytesTimeoutError::Disconnected,
                e => panic!("message {i}: {e}"),
            })?;
            assert_eq!(v, [v[0], !v[0], v[0], !v[0]], "torn plain value");
            Ok(v[0])
        }
        _ => match form % 3 {
            0 => {
                c.recv_bytes_timeout_into(buf, t)?;
                Ok(common::frame_number(buf))
            }
            1 => {
                let loan = c.recv_loan_timeout(t)?;
                // Read in two halves, held a moment: a kill often lands
                // while the loan is out.
                let mut f = vec![0; loan.len()];
                let mid = f.len() / 2;
                loan.read_at(0, &mut f[..mid]);
                std::hint::black_box(&loan);
                loan.read_at(mid, &mut f[mid..]);
                let n = common::frame_number(&f);
                loan.release();
                Ok(n)
            }
            _ => {
                let f = c.recv_loan_timeout(t)?.to_vec();
                // Dropped, not released: the same message comes again.
                c.recv_bytes_timeout_into(buf, t)?;
                assert_eq!(&f, buf, "a dropped read loan's message came back changed");
                Ok(common::frame_number(buf))
            }
        },
    }
}

shmproc::entry! {
    /// Receives messages 0.. on `end`, recording after each the number of
    /// the next one it expects.
    fn pipe_receiver(args: (Connection, Value<u64>, Event)) -> Result<(), String> {
        let (mut end, next, started) = args;
        started.set();
        let mut buf = Vec::new();
        for i in 0.. {
            let n = recv_msg(&mut end, i, i / 3, &mut buf, T).map_err(|e| format!("message {i}: {e}"))?;
            if n != i {
                return Err(format!("got {n}, expected {i}"));
            }
            next.set(i + 1).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Sends messages `from`.. on `end`, for ever (until killed).
    fn pipe_sender(args: (Connection, u64, Event)) -> Result<(), String> {
        let (mut end, from, started) = args;
        started.set();
        for i in from.. {
            loop {
                match send_msg(&mut end, i, i / 2, T) {
                    Ok(()) => break,
                    Err(PipeSendTimeoutError::TimedOut) => {}
                    Err(e) => return Err(format!("message {i}: {e}")),
                }
            }
        }
        Ok(())
    }
}

/// A pipe's receiving end handed to a child killed at random inside one of
/// its receives (holding a read loan, copying into a buffer, decoding a
/// value): the parent's copy of that end takes the role over; what it
/// receives starts at the dead child's next message or the one after
/// (the child's own, taken but not recorded), and goes on whole and in
/// order while the parent keeps sending.
#[test]
fn a_pipe_receiver_killed_in_any_receive_form_is_taken_over_by_another_copy_of_its_end() {
    for round in 0..rounds() {
        let (mut rx_end, tx_end) = shmproc::pipe_with(false, 8192, 1024).unwrap();
        let next = Value::new(0u64).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(pipe_receiver, (rx_end.clone(), next.clone(), started.clone())).with_daemon(true);
        start(&mut victim, &started);
        // The sender: a thread of the parent, retrying while the receiver
        // is dead (Disconnected) until the parent's copy takes over.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let (stop, mut tx_end) = (stop.clone(), tx_end);
            std::thread::spawn(move || {
                let end = Instant::now() + T;
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(Instant::now() < end, "sender stuck at {i}");
                    match send_msg(&mut tx_end, i, i / 2 + round, Duration::from_millis(20)) {
                        Ok(()) => i += 1,
                        Err(PipeSendTimeoutError::TimedOut | PipeSendTimeoutError::Disconnected) => {
                            std::thread::sleep(Duration::from_micros(200))
                        }
                        Err(e) => panic!("message {i}: {e}"),
                    }
                }
                i
            })
        };
        killer(&victim, 30).join().unwrap();
        reap_killed(&victim);
        let theirs = common::read_u64(&next);
        let mut buf = Vec::new();
        // The next message is `theirs` or `theirs + 1` (the dead child's
        // own, taken but not recorded): told apart by its bytes.
        let raw = rx_end.recv_bytes_timeout(T).unwrap_or_else(|e| panic!("after {theirs}: {e}"));
        let first = [theirs, theirs + 1].into_iter().find(|&i| raw == encoded(i));
        let first = first.unwrap_or_else(|| {
            panic!("the first message after the takeover is neither {theirs} nor the next, nor whole")
        });
        for want in first + 1..first + 200 {
            let n = recv_msg(&mut rx_end, want, want, &mut buf, T).unwrap_or_else(|e| panic!("message {want}: {e}"));
            assert_eq!(n, want, "hole or duplicate after the takeover");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Let the sender finish its last send (room: the parent drains).
        while !sender.is_finished() {
            let _ = rx_end.recv_bytes_timeout(Duration::from_millis(5));
        }
        sender.join().unwrap();
    }
}

/// A pipe's sending end handed to a child killed at random inside one of
/// its sends (holding a write loan half filled, encoding a value): what
/// the parent receives is whole and in order; then the parent's copy of
/// that end takes the role over and continues from the next number, and
/// the receiver gets that continuation with no gap and no torn message.
#[test]
fn a_pipe_sender_killed_in_any_send_form_is_taken_over_by_another_copy_of_its_end() {
    for _round in 0..rounds() {
        let (mut rx_end, mut tx_end) = shmproc::pipe_with(false, 8192, 1024).unwrap();
        let started = Event::new().unwrap();
        let mut victim = Process::new(pipe_sender, (tx_end.clone(), 0u64, started.clone())).with_daemon(true);
        start(&mut victim, &started);
        let kill = killer(&victim, 30);
        let mut buf = Vec::new();
        let mut next = 0u64;
        loop {
            if next.is_multiple_of(16) {
                std::thread::sleep(Duration::from_micros(300));
            }
            match recv_msg(&mut rx_end, next, next, &mut buf, T) {
                Ok(n) => {
                    assert_eq!(n, next, "hole or duplicate");
                    next += 1;
                }
                Err(PipeRecvBytesTimeoutError::Disconnected) => break,
                Err(e) => panic!("after {next}: {e}"),
            }
        }
        kill.join().unwrap();
        reap_killed(&victim);
        // The parent's copy takes the sending role over with its first
        // send (a receive before that is still `Disconnected`: nobody
        // holds the role).
        let from = next;
        send_msg(&mut tx_end, from, from, T)
            .unwrap_or_else(|e| panic!("message {from}, the first after the takeover: {e}"));
        let producer = std::thread::spawn(move || {
            for i in from + 1..from + 200 {
                send_msg(&mut tx_end, i, i, T).unwrap_or_else(|e| panic!("message {i} after the takeover: {e}"));
            }
            tx_end
        });
        for want in from..from + 200 {
            let n =
                recv_msg(&mut rx_end, want, want + 1, &mut buf, T).unwrap_or_else(|e| panic!("message {want}: {e}"));
            assert_eq!(n, want, "hole, duplicate or a dead loan's bytes after the takeover");
        }
        drop(producer.join().unwrap());
    }
}

// ---- unbounded queue: producers killed while the chain switches rings ----

/// Items of ~4.4 KB: with `TINY_RING_LIMIT`, a ring holds two, so nearly
/// every put seals, links or fills a ring (as `review6_chain`'s consumer
/// kills).
const BIG_ITEM: usize = 4400;
const TINY_RING_LIMIT: u64 = 44_000;

fn tagged_item(tag: u64, i: u64) -> String {
    format!("{tag}:{i}:{}", "q".repeat(BIG_ITEM - 24))
}

/// The (tag, number) of an item, checking it is whole.
fn tagged_number(s: &str) -> (u64, u64) {
    let mut it = s.splitn(3, ':');
    let tag = it.next().and_then(|t| t.parse().ok()).expect("bad tag");
    let i = it.next().and_then(|t| t.parse().ok()).expect("bad number");
    assert_eq!(s, tagged_item(tag, i), "torn item {tag}:{i}");
    (tag, i)
}

shmproc::entry! {
    /// Puts items `tag:0..` for ever (until killed), by every put form
    /// in turn (`put_timeout`, `put_ref_timeout`, `put_nowait` retried,
    /// `put`), counting each accepted put in `sent`.
    fn chain_producer(args: (shmproc::JoinableQueue<String>, u64, Event)) -> Result<(), String> {
        let (q, tag, started) = args;
        started.set();
        for i in 0.. {
            let item = tagged_item(tag, i);
            match i % 4 {
                0 => q.put_timeout(item, T).map_err(|e| format!("put_timeout {i}: {e}"))?,
                1 => q.put_ref_timeout(&item, T).map_err(|e| format!("put_ref_timeout {i}: {e}"))?,
                2 => {
                    let mut item = item;
                    loop {
                        match q.put_nowait(item) {
                            Ok(()) => break,
                            Err(shmproc::TryPutError::Full(back)) => {
                                item = back;
                                std::thread::yield_now();
                            }
                            Err(e) => return Err(format!("put_nowait {i}: {e}")),
                        }
                    }
                }
                _ => q.put(item).map_err(|e| format!("put {i}: {e}"))?,
            }
        }
        Ok(())
    }
}

/// An unbounded `JoinableQueue` whose rings hold two items (the chain
/// seals, links and retires a ring every other item) fed by producer
/// processes SIGKILLed at random again and again, each replaced by a new
/// one with a new tag, while the parent gets (by `get_timeout` and
/// `get_into_timeout`) and marks each item done: every producer's items
/// arrive whole, in order, with no hole and no duplicate (a prefix of
/// its stream); after `close_all` and the drain, the unfinished count is
/// exactly 0 (a dead producer's claimed slot is skipped, never counted as
/// a task), `join` returns, and no ring is left in /dev/shm.
#[test]
fn unbounded_producers_killed_while_the_chain_switches_rings_leave_clean_prefixes_and_an_exact_count() {
    let kills_wanted = common::count(10, 60);
    let name = common::name("c9-chain-kill");
    let q =
        shmproc::JoinableQueue::<String>::create_unbounded(&name, TINY_RING_LIMIT, &shmproc::Options::new()).unwrap();
    let tags = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let spawn = || {
        let tag = tags.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Event::new().unwrap();
        let mut p = Process::new(chain_producer, (q.clone(), tag, started.clone())).with_daemon(true);
        start(&mut p, &started);
        p
    };
    let mut producers = vec![spawn(), spawn()];
    let consumer = {
        let (q, tags) = (q.clone(), tags.clone());
        std::thread::spawn(move || {
            let mut next: Vec<u64> = Vec::new();
            let mut s = String::new();
            let mut got = 0u64;
            let end = Instant::now() + Duration::from_secs(120);
            loop {
                assert!(Instant::now() < end, "consumer stuck after {got} items, next {next:?}");
                let r = if got.is_multiple_of(2) {
                    q.get_timeout(Duration::from_millis(50)).map(|v| s = v)
                } else {
                    q.get_into_timeout(&mut s, Duration::from_millis(50))
                };
                match r {
                    Ok(()) => {
                        let (tag, i) = tagged_number(&s);
                        assert!(tag < tags.load(std::sync::atomic::Ordering::Relaxed), "unknown tag {tag}");
                        if next.len() <= tag as usize {
                            next.resize(tag as usize + 1, 0);
                        }
                        assert_eq!(i, next[tag as usize], "producer {tag}: hole or duplicate");
                        next[tag as usize] += 1;
                        got += 1;
                        q.task_done().unwrap_or_else(|e| panic!("task_done of {tag}:{i}: {e}"));
                    }
                    Err(shmproc::GetTimeoutError::TimedOut) => {}
                    Err(shmproc::GetTimeoutError::Closed) => return got,
                    Err(e) => panic!("get after {got}: {e}"),
                }
            }
        })
    };
    let killed = std::cell::Cell::new(0u64);
    let kills = common::kill_at_random(&mut producers, spawn, || {
        killed.set(killed.get() + 1);
        killed.get() > kills_wanted
    });
    for p in &producers {
        let _ = p.kill();
        let _ = common::join(p);
    }
    q.close_all();
    let got = consumer.join().unwrap();
    eprintln!("{got} items from {} producers, {kills} killed", tags.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.unfinished_tasks(), 0, "a dead producer's claim counted as a task (or a task lost)");
    assert!(q.join_timeout(Duration::from_secs(10)), "join did not return");
    assert!(q.task_done().is_err());
    drop(q);
    assert!(common::segments_of(&name).is_empty(), "left in /dev/shm: {:?}", common::segments_of(&name));
}

// ---- timeouts expiring as the item (or the room) arrives ----

/// Items of the timeout races (more with `SHMPROC_TEST_FULL`).
fn race_items() -> u64 {
    common::count(4_000, 40_000)
}

/// A tiny random timeout (0..40 µs, often 0): it expires about when the
/// peer's item or room arrives.
fn tiny() -> Duration {
    Duration::from_micros(common::crash::rand_below(40))
}

/// Retries `f(i)` with tiny timeouts until it is accepted; `Err` on any
/// other refusal than a timeout (`timed_out` tells them apart).
fn retry_tiny<E: std::fmt::Display>(
    i: u64,
    mut f: impl FnMut(u64) -> Result<(), E>,
    timed_out: impl Fn(&E) -> bool,
) -> Result<(), String> {
    let end = Instant::now() + T;
    loop {
        match f(i) {
            Ok(()) => return Ok(()),
            Err(e) if timed_out(&e) && Instant::now() < end => {}
            Err(e) => return Err(format!("item {i}: {e}")),
        }
    }
}

fn race_text(i: u64) -> String {
    format!("{i}:{}", "t".repeat((i * 613 % 4400) as usize))
}

shmproc::entry! {
    /// The producer side of the timeout races: items 0..n, each retried on
    /// a tiny timeout until accepted, by the kind's timed put forms.
    fn timed_producer(args: (u8, shmproc::Queue<u64>, shmproc::Queue<String>, shmproc::queue::SpscQueue<u64>, shmproc::queue::ByteQueue, u64)) -> Result<(), String> {
        let (kind, q, qs, spsc, bq, n) = args;
        match kind {
            0 => (0..n).try_for_each(|i| retry_tiny(i, |i| q.put_timeout(i, tiny()), |e| matches!(e, shmproc::PutTimeoutError::TimedOut(_)))),
            1 => (0..n).try_for_each(|i| {
                let s = race_text(i);
                retry_tiny(i, |_| if i % 2 == 0 { qs.put_ref_timeout(&s, tiny()) } else { qs.put_timeout(s.clone(), tiny()).map_err(|e| match e {
                    shmproc::PutTimeoutError::TimedOut(_) => shmproc::PutTimeoutError::TimedOut(()),
                    e => panic!("{e}"),
                }) }, |e| matches!(e, shmproc::PutTimeoutError::TimedOut(_)))
            }),
            2 => {
                let mut tx = spsc.producer().map_err(|e| e.to_string())?;
                (0..n).try_for_each(|i| retry_tiny(i, |i| tx.push_timeout(i, tiny()), |e| matches!(e, shmproc::PushTimeoutError::TimedOut(_))))
            }
            _ => {
                let mut tx = bq.producer().map_err(|e| e.to_string())?;
                (0..n).try_for_each(|i| {
                    let f = common::byte_frame(i % 8);
                    let mut f = f[..f.len().min(40)].to_vec();
                    f[..8].copy_from_slice(&i.to_le_bytes());
                    retry_tiny(i, |i| if i % 2 == 0 {
                        tx.send_timeout(&f, tiny())
                    } else {
                        tx.send_loan_timeout(f.len(), tiny()).map(|mut l| {
                            l.write_at(0, &f);
                            l.commit().expect("not closed");
                        })
                    }, |e| *e == shmproc::SendTimeoutError::TimedOut)
                })
            }
        }
    }
}

/// Every timed form, on both sides at once, with timeouts so short that
/// they often expire just as the peer's item (or room) arrives: a get
/// that times out took nothing, a put that times out left nothing, so the
/// consumer receives exactly 0..n in order (one producer), none lost or
/// twice, in a bounded `Queue`, an unbounded `Queue<String>` whose rings
/// hold two items (timeouts across ring switches), an `SpscQueue` and a
/// `ByteQueue` (copies and loans).
#[test]
fn timeouts_expiring_as_the_item_or_the_room_arrives_lose_and_duplicate_nothing() {
    let n = race_items();
    for kind in 0u8..4 {
        let q = shmproc::Queue::<u64>::new(4).unwrap();
        let qs = shmproc::Queue::<String>::unbounded_with_limit(TINY_RING_LIMIT).unwrap();
        let spsc = shmproc::queue::SpscQueue::<u64>::new(4).unwrap();
        let bq = shmproc::queue::ByteQueue::new(256, 64).unwrap();
        let n = if kind == 1 { n / 4 } else { n };
        let mut p = Process::new(timed_producer, (kind, q.clone(), qs.clone(), spsc.clone(), bq.clone(), n));
        p.start().unwrap();
        let mut rx = (kind == 2).then(|| spsc.consumer().unwrap());
        let mut brx = (kind == 3).then(|| bq.consumer().unwrap());
        let (mut s, mut buf) = (String::new(), Vec::new());
        let end = Instant::now() + Duration::from_secs(120);
        let (mut want, mut timeouts) = (0u64, 0u64);
        while want < n {
            assert!(Instant::now() < end, "kind {kind}: stuck at {want}");
            let got: Option<u64> = match kind {
                0 if want % 2 == 0 => q.get_timeout(tiny()).ok(),
                0 => {
                    let mut v = u64::MAX;
                    q.get_into_timeout(&mut v, tiny()).ok().map(|()| v)
                }
                1 => qs.get_into_timeout(&mut s, tiny()).ok().map(|()| {
                    let i: u64 = s.split(':').next().unwrap().parse().unwrap();
                    assert_eq!(s, race_text(i), "torn item {i}");
                    i
                }),
                2 => rx.as_mut().unwrap().pop_timeout(tiny()).ok(),
                _ => {
                    let b = brx.as_mut().unwrap();
                    if want % 2 == 0 {
                        b.recv_timeout_into(&mut buf, tiny())
                            .ok()
                            .map(|()| u64::from_le_bytes(buf[..8].try_into().unwrap()))
                    } else {
                        b.recv_loan_timeout(tiny()).ok().map(|l| {
                            let mut h = [0u8; 8];
                            l.read_at(0, &mut h);
                            l.release();
                            u64::from_le_bytes(h)
                        })
                    }
                }
            };
            match got {
                Some(i) => {
                    assert_eq!(i, want, "kind {kind}: lost or duplicated by a timeout");
                    want += 1;
                }
                None => timeouts += 1,
            }
        }
        eprintln!("kind {kind}: {n} items, {timeouts} gets timed out");
        common::join(&p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "kind {kind}: the producer failed");
        assert!(q.get_nowait().is_err() && qs.get_nowait().is_err(), "kind {kind}: items past n");
        if let Some(rx) = rx.as_mut() {
            assert!(rx.try_pop().is_err(), "kind {kind}: items past n");
        }
    }
}
