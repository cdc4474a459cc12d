//! Review 6: the unbounded JoinableQueue's count read from its rings
//! (`links::Tally`, commits f44b39e..4c58fe4) and `qsize`, read while
//! other handles retire the rings they sum; hostile words in the chain's
//! control block. (The interleaving that lost rings from the sum is
//! pinned down by the loom model
//! `loom::unbounded_chain_count_read_across_two_retirements_never_misses_a_ring`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::{JoinableQueue, Options};

/// A memory limit that gives rings of 256 `u64` slots, two alive at most:
/// the chain retires a ring every 256 items.
const SMALL_LIMIT: u64 = 34_000;

/// A producer streams items through small rings (one retired every 256
/// items) to a consumer that marks each done, while readers, each through
/// a fresh handle (which maps the rings as it reads them, as another
/// process does), read `unfinished_tasks` and `qsize`. Every item put
/// before a read and not yet got (done) after it is in the queue (not
/// done) throughout the read, so each read is at least that many (less
/// the one get or `task_done` that may be between its effect and its
/// counter). A sum that stopped at a ring retired meanwhile left out the
/// rings after it: counts far below that.
#[test]
fn counts_read_while_rings_retire_leave_no_live_ring_out() {
    let name = common::name("r6-count-retire");
    let q = JoinableQueue::<u64>::create_unbounded(&name, SMALL_LIMIT, &Options::new()).unwrap();
    let n = common::count(30_000, 1_000_000);
    let (put, got, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (name, stop, put, got, done) = (name.clone(), stop.clone(), put.clone(), got.clone(), done.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = JoinableQueue::<u64>::open(&name).unwrap();
                    let p = put.load(Ordering::SeqCst);
                    let (u, len) = (r.unfinished_tasks(), r.qsize() as u64);
                    let (g, d) = (got.load(Ordering::SeqCst), done.load(Ordering::SeqCst));
                    if u + d + 1 < p || len + g + 1 < p {
                        bad.push(format!("put {p}, got {g}, done {d}: unfinished {u}, qsize {len}"));
                    }
                }
                bad
            })
        })
        .collect();
    let producer = {
        let (q, put) = (q.clone(), put.clone());
        std::thread::spawn(move || {
            for i in 0..n {
                q.put_timeout(i, common::DEADLINE).unwrap();
                put.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let end = Instant::now() + common::DEADLINE;
    for i in 0..n {
        assert_eq!(q.get_timeout(end.saturating_duration_since(Instant::now())), Ok(i));
        got.fetch_add(1, Ordering::SeqCst);
        q.task_done().unwrap_or_else(|e| panic!("task_done of item {i} refused: {e}"));
        done.fetch_add(1, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let bad: Vec<String> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(Duration::from_secs(10)));
    assert!(
        bad.is_empty(),
        "{} reads below the items queued throughout, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

fn write_word(shm_name: &str, off: u64, v: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{}{shm_name}", shmproc::NAME_PREFIX))
        .unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&v.to_ne_bytes(), off).unwrap();
    u64::from_ne_bytes(b)
}

/// Chain control block words (after the 128-byte header, each index on
/// its own 128-byte line; `words` at 384): `newest`, `oldest`, `late`,
/// `dones`. A ring's: `tail` (claims), `head`, the join line at 512:
/// `done`, `skipped`, ..., `base` at 536.
const CHAIN_WORDS: [(&str, u64); 4] = [("newest", 128), ("oldest", 256), ("late", 416), ("dones", 424)];
const RING_WORDS: [(&str, u64); 4] = [("tail", 128), ("head", 256), ("skipped", 520), ("base", 536)];

/// A hostile peer writes any value into the words the unbounded
/// JoinableQueue's count is read from (the chain's indices, late and done
/// counts; the oldest ring's claims, head, skips and base): every call
/// after it returns (a bounded result or an error), never panics (this is
/// a debug build: an arithmetic overflow would), never hangs.
#[test]
fn hostile_words_in_the_chain_and_its_rings_give_bounded_results() {
    let values = [0u64, 1, 7, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 63) | 1, u64::MAX - 1, u64::MAX];
    let cases = CHAIN_WORDS.iter().map(|&(w, o)| (false, w, o)).chain(RING_WORDS.iter().map(|&(w, o)| (true, w, o)));
    let mut seen = Vec::new();
    for (i, (in_ring, word, off)) in cases.enumerate() {
        for (j, &v) in values.iter().enumerate() {
            let name = common::name(&format!("r6-hostile-{i}-{j}"));
            let q = JoinableQueue::<u64>::create_unbounded(&name, SMALL_LIMIT, &Options::new()).unwrap();
            // Rings 0 and 1; ring 0 retired (its count folded into ring 1's base).
            for k in 0..300 {
                q.put(k).unwrap();
            }
            for _ in 0..260 {
                q.get().unwrap();
                q.task_done().unwrap();
            }
            assert_eq!(q.unfinished_tasks(), 40);
            let target = if in_ring { q.__ring_name(1).unwrap() } else { name.clone() };
            write_word(&target, off, v);
            let t0 = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let u = q.unfinished_tasks();
                let len = q.qsize();
                let td = q.task_done().is_ok();
                let joined = q.join_timeout(Duration::from_millis(1));
                let got = q.get_nowait().is_ok();
                let put = q.put_nowait(1).is_ok();
                let _ = (q.empty(), q.full(), q.unfinished_tasks(), q.qsize());
                (u, len, td, joined, got, put)
            }));
            let took = t0.elapsed();
            drop(q);
            common::scrub(&name);
            match r {
                Ok(r) => seen.push(format!("{word}={v:#x}: {r:?} in {took:?}")),
                Err(_) => panic!("{word} = {v:#x} made a call panic"),
            }
            assert!(took < Duration::from_secs(20), "{word} = {v:#x}: the calls took {took:?}");
        }
    }
    eprintln!("{}", seen.join("\n"));
}

/// A hostile peer that can write the control block knows the rings' name
/// key, so it can make ring `u64::MAX` exist and point `oldest` at it:
/// every count and get still returns (before the fix, the chain's ring
/// walk stepped its index past `u64::MAX`: an overflow panic in a debug
/// build, a walk from ring 0 in a release build).
#[test]
fn a_hostile_oldest_at_the_last_index_with_a_ring_there_gives_bounded_results() {
    let name = common::name("r6-hostile-last");
    let q = JoinableQueue::<u64>::create_unbounded(&name, SMALL_LIMIT, &Options::new()).unwrap();
    q.put(1).unwrap();
    // A ring of the chain's kind (a Queue<u64>'s ring is an MpmcQueue<u64>) under ring u64::MAX's name.
    let last = shmproc::queue::MpmcQueue::<u64>::create(&q.__ring_name(u64::MAX).unwrap(), 2).unwrap();
    last.persist();
    write_word(&name, 256, u64::MAX);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (u, len) = (q.unfinished_tasks(), q.qsize());
        let got = q.get_nowait();
        (u, len, got, q.unfinished_tasks(), q.qsize())
    }));
    drop((q, last));
    common::scrub(&name);
    let r = r.unwrap_or_else(|_| panic!("a count or get panicked with oldest = u64::MAX"));
    eprintln!("{r:?}");
}

/// Bytes of the items of the kill test: rings of two slots under
/// `TINY_RING_LIMIT`, so consumers retire a ring every two items and a
/// kill often lands in a retirement (the fold of a ring's count into its
/// successor's base, the `oldest` CAS, the unlink).
const BIG_ITEM: usize = 4400;
const TINY_RING_LIMIT: u64 = 44_000;

fn big_item(i: u64) -> String {
    format!("{i}:{}", "z".repeat(BIG_ITEM - 12))
}

shmproc::entry! {
    /// Gets items until the queue is closed; acknowledges each on `ack`
    /// (`u64::MAX - i` if it is not exactly item i), then marks it done.
    fn ack_then_done(args: (JoinableQueue<String>, shmproc::Queue<u64>)) -> Result<(), String> {
        let (q, ack) = args;
        loop {
            match q.get() {
                Ok(s) => {
                    let i: u64 = s.split(':').next().and_then(|t| t.parse().ok()).ok_or("bad item")?;
                    ack.put(if s == big_item(i) { i } else { u64::MAX - i }).map_err(|e| e.to_string())?;
                    q.task_done().map_err(|e| format!("task_done of item {i}: {e}"))?;
                }
                Err(shmproc::GetError::Closed) => return Ok(()),
                Err(e) => return Err(format!("get: {e}")),
            }
        }
    }
}

/// Consumers of an unbounded JoinableQueue whose rings hold two items
/// (a retirement every two items) SIGKILLed at random again and again
/// while a producer streams: no item twice or torn, and at the end the
/// count is exact within what the kills explain: at least the items whose
/// ack is missing (got, never done), at most one per kill (a victim's own
/// item, or a dead producer's slot it repaired and had not uncounted); a
/// `task_done` for each lets `join` return, and one more is refused.
#[test]
fn unbounded_joinable_consumers_killed_in_retirements_leave_the_count_exact_within_their_kills() {
    const KILLS: u64 = 8;
    let n = common::count(1_500, 20_000);
    let name = common::name("r6-kill-retire");
    let q = JoinableQueue::<String>::create_unbounded(&name, TINY_RING_LIMIT, &Options::new()).unwrap();
    let ack = shmproc::Queue::<u64>::unbounded_with_limit(1 << 30).unwrap();
    let spawned = Arc::new(AtomicU64::new(0));
    let spawn = || {
        spawned.fetch_add(1, Ordering::Relaxed);
        let mut p = shmproc::Process::new(ack_then_done, (q.clone(), ack.clone())).with_daemon(true);
        p.start().unwrap();
        p
    };
    let mut consumers = vec![spawn(), spawn()];
    let producer = {
        let (q, spawned) = (q.clone(), spawned.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while i < n || spawned.load(Ordering::Relaxed) < 2 + KILLS {
                if q.put_timeout(big_item(i), common::DEADLINE).is_err() {
                    panic!("put {i} blocked past the deadline: {}", chain_state(&q));
                }
                i += 1;
            }
            i
        })
    };
    let kills = common::kill_at_random(&mut consumers, spawn, || producer.is_finished());
    let n = producer.join().unwrap();
    q.close_all();
    let missing = common::join_consumers_and_check_acks(&consumers, &ack, n, kills);
    assert_eq!(q.qsize(), 0);
    let left = q.unfinished_tasks();
    eprintln!("{n} items, {kills} kills, {missing} acks missing, {left} unfinished");
    assert!(left >= missing, "{left} unfinished, but {missing} items were got and never marked done");
    assert!(left <= kills, "{left} unfinished after {kills} consumer kills");
    for _ in 0..left {
        q.task_done().unwrap();
    }
    assert!(q.join_timeout(Duration::from_secs(10)), "join did not return");
    assert!(q.task_done().is_err());
    drop(q);
    assert!(common::segments_of(&name).is_empty(), "left in /dev/shm: {:?}", common::segments_of(&name));
}

/// The chain's indices and each live ring's words (tail, head, skipped,
/// base), for a failure message.
fn chain_state(q: &JoinableQueue<String>) -> String {
    let word = |name: &str, off: u64| {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        std::fs::File::open(format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX))
            .and_then(|f| f.read_exact_at(&mut b, off))
            .map_or(u64::MAX, |()| u64::from_ne_bytes(b))
    };
    let (newest, oldest) = (word(q.name(), 128), word(q.name(), 256));
    let rings: Vec<_> = (oldest..=(newest & !(1 << 63)).min(oldest + 8))
        .map(|k| {
            let r = q.__ring_name(k).unwrap();
            (k, RING_WORDS.map(|(_, off)| word(&r, off)))
        })
        .collect();
    format!(
        "newest {newest:#x}, oldest {oldest}, qsize {}, rings (k, [tail, head, skipped, base]) {rings:?}",
        q.qsize()
    )
}
