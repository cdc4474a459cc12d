//! Queues of any `Handoff` item (issue 11, item 1) across real processes:
//! `Queue<String>` and `Queue<(u32, String)>` with 2 producers x 2
//! consumers exactly once, random-size frames 0..64 KiB, producers killed
//! mid-stream and between claim and publish, consumers killed between
//! claim and release, corrupted or foreign frames.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::process::Entry;
use shmproc::{Event, GetTimeoutError, Handoff, JoinableQueue, Process, Queue, SimpleQueue, Value};
use shmproc::{GetError, PutError, TryGetError, TryPutError};

/// A 64-bit mix, so that a lost item plus a duplicated one cannot cancel
/// out in a sum.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    (x ^ (x >> 27)).wrapping_mul(0x81da_def4_bc2d_d44d)
}

/// Item `i` of producer `tag`: a string of 0..=200 bytes that names both.
fn text(tag: u64, i: u64) -> String {
    let mut s = format!("{tag}:{i}:");
    let pad = (mix(tag << 40 | i) % 200) as usize;
    s.extend(std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), pad));
    s
}

/// Parses `text`'s output back (and checks its padding).
fn parse(s: &str) -> Result<(u64, u64), String> {
    let mut it = s.splitn(3, ':');
    let tag = it.next().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad item {s:?}"))?;
    let i = it.next().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad item {s:?}"))?;
    if text(tag, i) != s {
        return Err(format!("item {s:?} is damaged"));
    }
    Ok((tag, i))
}

const STOP: &str = "stop";
const N: u64 = 20_000;

shmproc::entry! {
    fn put_strings(args: (Queue<String>, u64)) -> Result<(), String> {
        let (q, tag) = args;
        for i in 0..N {
            q.put(text(tag, i)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Gets until STOP; every producer's items arrive in increasing order;
    /// reports count and checksum.
    fn get_strings(args: (Queue<String>, Value<u64>, Value<u64>)) -> Result<(), String> {
        let (q, count, sum) = args;
        let (mut n, mut s, mut last) = (0u64, 0u64, [None::<u64>; 2]);
        loop {
            let v = q.get_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
            if v == STOP {
                break;
            }
            let (tag, i) = parse(&v)?;
            let prev = last.get_mut(tag as usize).ok_or("bad tag")?;
            if prev.is_some_and(|p| p >= i) {
                return Err(format!("producer {tag}: {i} after {prev:?}"));
            }
            *prev = Some(i);
            n += 1;
            s = s.wrapping_add(mix(tag << 40 | i));
        }
        count.set(n).map_err(|e| e.to_string())?;
        sum.set(s).map_err(|e| e.to_string())
    }
}

fn expected_sum() -> u64 {
    (0..2u64).flat_map(|t| (0..N).map(move |i| mix(t << 40 | i))).fold(0, u64::wrapping_add)
}

/// 2 producer and 2 consumer processes on `q`; then one `stop` item per
/// consumer; returns the consumers' total count and checksum.
fn two_by_two<T, P, G>(q: &Queue<T>, put: P, get: G, stop: T) -> (u64, u64)
where
    T: Handoff + Clone + Send + std::fmt::Debug + 'static,
    P: Entry<Arg = (Queue<T>, u64)> + Copy,
    G: Entry<Arg = (Queue<T>, Value<u64>, Value<u64>)> + Copy,
{
    let stats: Vec<_> = (0..2).map(|_| (Value::new(0u64).unwrap(), Value::new(0u64).unwrap())).collect();
    let mut consumers: Vec<_> =
        stats.iter().map(|(c, s)| Process::new(get, (q.clone(), c.clone(), s.clone()))).collect();
    let mut producers: Vec<_> = (0..2u64).map(|t| Process::new(put, (q.clone(), t))).collect();
    for p in consumers.iter_mut().chain(producers.iter_mut()) {
        p.start().unwrap();
    }
    for p in &producers {
        common::join(p).unwrap();
    }
    for _ in 0..2 {
        q.put(stop.clone()).unwrap();
    }
    for p in &consumers {
        common::join(p).unwrap();
    }
    let count: u64 = stats.iter().map(|(c, _)| c.get().unwrap()).sum();
    let sum = stats.iter().map(|(_, s)| s.get().unwrap()).fold(0, u64::wrapping_add);
    (count, sum)
}

#[test]
fn strings_two_producers_two_consumers_exactly_once() {
    let q = Queue::<String>::new(16).unwrap();
    assert_eq!(two_by_two(&q, put_strings, get_strings, STOP.to_owned()), (2 * N, expected_sum()));
    assert!(q.empty());
}

shmproc::entry! {
    fn put_pairs(args: (Queue<(u32, String)>, u64)) -> Result<(), String> {
        let (q, tag) = args;
        for i in 0..N {
            q.put((i as u32, text(tag, i))).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    fn get_pairs(args: (Queue<(u32, String)>, Value<u64>, Value<u64>)) -> Result<(), String> {
        let (q, count, sum) = args;
        let (mut n, mut s) = (0u64, 0u64);
        loop {
            let (k, v) = q.get_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
            if v == STOP {
                break;
            }
            let (tag, i) = parse(&v)?;
            if u64::from(k) != i {
                return Err(format!("pair ({k}, {v:?}) does not match"));
            }
            n += 1;
            s = s.wrapping_add(mix(tag << 40 | i));
        }
        count.set(n).map_err(|e| e.to_string())?;
        sum.set(s).map_err(|e| e.to_string())
    }
}

#[test]
fn tuples_two_producers_two_consumers_exactly_once() {
    let q = Queue::<(u32, String)>::new(8).unwrap();
    assert_eq!(two_by_two(&q, put_pairs, get_pairs, (0, STOP.to_owned())), (2 * N, expected_sum()));
    assert!(q.empty());
}

/// Frame `i`: 0..=64 KiB of bytes derived from `i`.
fn blob(i: u64) -> Vec<u8> {
    let len = (mix(i) % (64 * 1024 + 1)) as usize;
    let len = if i.is_multiple_of(97) {
        0
    } else if i.is_multiple_of(89) {
        64 * 1024
    } else {
        len
    };
    (0..len).map(|k| (mix(i ^ (k as u64) << 20) >> 56) as u8).collect()
}

/// 1 500 frames with `SHMPROC_TEST_FULL` set; 300 otherwise (still frames
/// of 0 and of 64 KiB, and every size class between).
fn blobs() -> u64 {
    common::count(300, 1_500)
}

shmproc::entry! {
    fn put_blobs(q: Queue<Vec<u8>>) -> Result<(), String> {
        for i in 0..blobs() {
            q.put(blob(i)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn random_size_frames_up_to_64_kib_arrive_intact_and_in_order() {
    let q = Queue::<Vec<u8>>::with_max_frame(8, 64 * 1024 + 16).unwrap();
    let mut p = Process::new(put_blobs, q.clone());
    p.start().unwrap();
    for i in 0..blobs() {
        let got = q.get_timeout(Duration::from_secs(60)).unwrap();
        let want = blob(i);
        assert_eq!(got.len(), want.len(), "frame {i}: length");
        assert!(got == want, "frame {i}: content");
    }
    common::join(&p).unwrap();
    assert!(q.empty());
}

/// Encoded sizes (8 + the Vec's length) on both sides of the bound below
/// which a frame shares its sequence word's cache line (240 bytes), up to
/// the slot's room, then back down (a short frame read after a long one).
fn bound_sizes(room: usize) -> Vec<usize> {
    let up: Vec<usize> = (0..=room - 8).filter(|&n| n < 24 || (220..=260).contains(&n) || n + 16 > room).collect();
    up.iter().copied().chain(up.iter().rev().copied()).collect()
}

shmproc::entry! {
    fn put_bound_sizes(q: Queue<Vec<u8>>) -> Result<(), String> {
        for (i, n) in bound_sizes(q.max_frame()).into_iter().enumerate() {
            // With a deadline: a parent that failed does not leave us blocked.
            let v = (0..n).map(|k| (k as u8) ^ (i as u8)).collect();
            q.put_timeout(v, Duration::from_secs(60)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn frames_on_both_sides_of_the_small_frame_bound_arrive_intact_across_processes() {
    for max_frame in [8, 64, 256, 960] {
        let q = Queue::<Vec<u8>>::with_max_frame(4, max_frame).unwrap();
        let mut p = Process::new(put_bound_sizes, q.clone());
        p.start().unwrap();
        for (i, n) in bound_sizes(q.max_frame()).into_iter().enumerate() {
            let got = q.get_timeout(Duration::from_secs(60)).unwrap();
            let want: Vec<u8> = (0..n).map(|k| (k as u8) ^ (i as u8)).collect();
            assert!(got == want, "max_frame {max_frame}, item {i}: {} bytes, want {n}", got.len());
        }
        common::join(&p).unwrap();
        assert!(q.empty());
    }
}

/// Item `i` of the owned-get consumer-kill test: its index, then 0..300
/// bytes (on both sides of the small-frame bound), every third one with
/// two-byte characters (the full UTF-8 check, not the ASCII one).
fn owned_item(i: u64) -> String {
    let mut s = format!("{i}:");
    let len = (i.wrapping_mul(7919) % 300) as usize;
    let c = if i.is_multiple_of(3) { 'é' } else { char::from(b'a' + (i % 26) as u8) };
    while s.len() + c.len_utf8() <= len {
        s.push(c);
    }
    s
}

shmproc::entry! {
    /// Gets owned `String`s (`get`) until the queue is closed;
    /// acknowledges each item's index on `ack` (or `u64::MAX - i` if it is
    /// not exactly item i).
    fn ack_owned_strings(args: (Queue<String>, Queue<u64>)) -> Result<(), String> {
        let (q, ack) = args;
        loop {
            match q.get() {
                Ok(s) => {
                    let i: u64 = s.split(':').next().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad item {s:?}"))?;
                    let tag = if s == owned_item(i) { i } else { u64::MAX - i };
                    ack.put(tag).map_err(|e| e.to_string())?;
                }
                Err(GetError::Closed) => return Ok(()),
                Err(e) => return Err(format!("get: {e}")),
            }
        }
    }
}

/// Consumers that `get` owned `String`s (one exact allocation per item,
/// read straight from the slot), SIGKILLed at random points again and
/// again while a producer streams items into a ring of 8 slots: every
/// item that arrives is whole, none twice, at most one per kill is missing
/// (the one the victim held), nobody blocks, and `qsize` is 0 at the end.
#[test]
fn owned_get_consumers_killed_at_random_lose_at_most_their_own_item() {
    // At least `n` items, and on until `KILLS` consumers were killed
    // (however fast this machine streams them).
    const KILLS: u64 = 6;
    let n = common::count(3_000, 30_000);
    let q = Queue::<String>::with_max_frame(8, 512).unwrap();
    let ack = Queue::<u64>::unbounded_with_limit(1 << 30).unwrap();
    let spawned = Arc::new(AtomicU64::new(0));
    let spawn = || {
        spawned.fetch_add(1, Ordering::Relaxed);
        let mut p = Process::new(ack_owned_strings, (q.clone(), ack.clone())).with_daemon(true);
        p.start().unwrap();
        p
    };
    let mut consumers = vec![spawn(), spawn()];
    let producer = {
        let (q, spawned) = (q.clone(), spawned.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while i < n || spawned.load(Ordering::Relaxed) < 2 + KILLS {
                q.put_timeout(owned_item(i), common::DEADLINE).expect("a put blocked past the deadline");
                i += 1;
            }
            i
        })
    };
    let kills = common::kill_at_random(&mut consumers, spawn, || producer.is_finished());
    let n = producer.join().unwrap();
    assert!(kills >= KILLS);
    q.close_all();
    common::join_consumers_and_check_acks(&consumers, &ack, n, kills);
    assert_eq!(q.qsize(), 0);
}

shmproc::entry! {
    /// Puts text(tag, i) for i = 0.. until killed or `n`.
    fn put_tagged(args: (Queue<String>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        for i in 0..n {
            q.put(text(tag, i)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// As the Pod queue's `killing_a_producer_mid_stream_loses_nothing_of_the_others`:
/// the survivor's items all arrive once, in order; the victim's are a
/// prefix of its stream (its in-flight one there or not); nobody blocks.
#[test]
fn killing_a_string_producer_mid_stream_loses_nothing_of_the_others() {
    for round in 0..4u64 {
        kill_a_producer_mid_stream(Queue::<String>::new(32).unwrap(), round);
    }
}

/// The same on an unbounded queue (rings sealed, linked and retired while
/// the victim dies).
#[test]
fn killing_a_producer_of_an_unbounded_queue_mid_stream_loses_nothing_of_the_others() {
    for round in 0..3u64 {
        let q = Queue::<String>::new(0).unwrap();
        let name = q.name().to_owned();
        kill_a_producer_mid_stream(q, round);
        assert!(
            !std::fs::read_dir("/dev/shm").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(&name)),
            "segments of {name} left"
        );
    }
}

fn kill_a_producer_mid_stream(q: Queue<String>, round: u64) {
    const M: u64 = 30_000;
    {
        let mut victim = Process::new(put_tagged, (q.clone(), 1u64, u64::MAX)).with_daemon(true);
        let mut survivor = Process::new(put_tagged, (q.clone(), 0u64, M));
        victim.start().unwrap();
        survivor.start().unwrap();
        let mut next = [0u64; 2];
        let kill_after = 500 + round * 3_917;
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while next[0] < M {
            assert!(Instant::now() < deadline, "stuck at {next:?}");
            if got == kill_after {
                victim.kill().unwrap();
            }
            let v = match q.get_timeout(Duration::from_millis(100)) {
                Ok(v) => v,
                Err(GetTimeoutError::TimedOut) => continue,
                Err(e) => panic!("{e}"),
            };
            got += 1;
            let (tag, i) = parse(&v).unwrap();
            assert_eq!(i, next[tag as usize], "producer {tag}: hole or duplicate");
            next[tag as usize] += 1;
        }
        common::join(&survivor).unwrap();
        let _ = common::join(&victim);
        while let Ok(v) = q.get_timeout(Duration::from_millis(200)) {
            assert_eq!(parse(&v).unwrap(), (1, next[1]), "victim: hole or duplicate");
            next[1] += 1;
        }
        assert!(q.empty());
        assert_eq!(q.qsize(), 0);
    }
}

shmproc::entry! {
    /// Claims one position of the frame queue (a get if `pop`) and never
    /// finishes it; then sleeps until killed.
    fn claim_frame_and_hang(args: (Queue<String>, bool, Event)) -> Result<(), String> {
        let (q, pop, claimed) = args;
        if !q.__claim_and_stop(pop) {
            return Err("nothing to claim".into());
        }
        claimed.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn hanging_claimant(q: &Queue<String>, pop: bool) -> Process {
    let claimed = Event::new().unwrap();
    let mut p = Process::new(claim_frame_and_hang, (q.clone(), pop, claimed.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(claimed.wait_timeout(Duration::from_secs(30)), "child did not claim");
    p
}

#[test]
fn a_frame_producer_dead_between_claim_and_publish_is_skipped_never_while_alive() {
    let q = Queue::<String>::new(4).unwrap();
    let p = hanging_claimant(&q, false);
    q.put("after".into()).unwrap();
    assert_eq!(q.qsize(), 2, "the claimed frame counts");
    assert_eq!(q.get_timeout(Duration::from_millis(300)), Err(GetTimeoutError::TimedOut));
    p.kill().unwrap();
    let _ = common::join(&p);
    assert_eq!(q.get_timeout(Duration::from_secs(30)).as_deref(), Ok("after"));
    assert_eq!(q.qsize(), 0);
}

#[test]
fn a_frame_consumer_dead_between_claim_and_release_frees_its_slot_never_while_alive() {
    let q = Queue::<String>::new(2).unwrap();
    q.put("one".into()).unwrap();
    q.put("two".into()).unwrap();
    let p = hanging_claimant(&q, true);
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.put_nowait("three".into()), Err(TryPutError::Full("three".into())));
    p.kill().unwrap();
    let _ = common::join(&p);
    q.put_timeout("three".into(), Duration::from_secs(30)).unwrap();
    assert_eq!(q.get().as_deref(), Ok("two"));
    assert_eq!(q.get().as_deref(), Ok("three"));
    assert!(q.empty());
}

#[test]
fn an_item_larger_than_the_frame_is_refused_and_handed_back() {
    let q = Queue::<String>::with_max_frame(2, 100).unwrap();
    let max = q.max_frame(); // 100, rounded up to the slot's 64-byte multiple
    assert!((100..100 + 64).contains(&max), "{max}");
    let fits = "x".repeat(max - 8); // 8 bytes of length prefix
    let big = "x".repeat(max - 7);
    q.put(fits.clone()).unwrap();
    let too_large = |item: String| (item, max + 1, max);
    let (item, len, max) = too_large(big.clone());
    assert_eq!(q.put(big.clone()), Err(PutError::TooLarge { item: item.clone(), len, max }));
    assert_eq!(q.put_nowait(big.clone()), Err(TryPutError::TooLarge { item, len, max }));
    assert_eq!(q.qsize(), 1, "nothing of the refused item went in");
    assert_eq!(q.get(), Ok(fits));
}

/// Regression: `TooLarge` carried only the item, and its message gave no
/// size. Now every put form of every queue of encoded items hands back the
/// item with its encoded length and the queue's limit, and the message says
/// both numbers.
#[test]
fn too_large_carries_the_item_its_encoded_length_and_the_limit_in_every_queue() {
    fn check<E: std::fmt::Display>(what: &str, e: E, len: usize, max: usize) {
        let msg = e.to_string();
        assert!(msg.contains(&format!("({len} bytes)")) && msg.contains(&format!("{max} bytes")), "{what}: {msg}");
    }
    let big = "y".repeat(300); // encodes as 8 + 300 bytes
    let len = big.len() + 8;

    let q = Queue::<String>::with_max_frame(2, 100).unwrap();
    let max = q.max_frame();
    let e = q.put(big.clone()).unwrap_err();
    assert_eq!(e, PutError::TooLarge { item: big.clone(), len, max });
    check("Queue::put", e, len, max);
    let e = q.put_nowait(big.clone()).unwrap_err();
    assert_eq!(e, TryPutError::TooLarge { item: big.clone(), len, max });
    check("Queue::put_nowait", e, len, max);
    let e = q.put_timeout(big.clone(), Duration::ZERO).unwrap_err();
    assert_eq!(e, shmproc::PutTimeoutError::TooLarge { item: big.clone(), len, max });
    check("Queue::put_timeout", e, len, max);

    let j = JoinableQueue::<String>::with_max_frame(2, 100).unwrap();
    let e = j.put(big.clone()).unwrap_err();
    assert_eq!(e, PutError::TooLarge { item: big.clone(), len, max: j.max_frame() });
    check("JoinableQueue::put", e, len, j.max_frame());
    assert_eq!(j.put_nowait(big.clone()).unwrap_err().into_inner(), big);

    let s = SimpleQueue::<String>::new(2).unwrap();
    let huge = "z".repeat(s.max_frame()); // one byte over, with the 8-byte length
    let e = s.put(huge.clone()).unwrap_err();
    assert_eq!(e, PutError::TooLarge { item: huge.clone(), len: s.max_frame() + 8, max: s.max_frame() });
    check("SimpleQueue::put", e, s.max_frame() + 8, s.max_frame());
}

#[test]
fn a_corrupted_frame_is_removed_and_reported_and_the_next_one_arrives() {
    use std::os::unix::fs::FileExt;
    let q = Queue::<String>::new(4).unwrap();
    q.put("MARKER-one-MARKER".into()).unwrap();
    q.put("MARKER-two-MARKER".into()).unwrap();
    q.put("three".into()).unwrap();
    // Frame one: invalid UTF-8 in the payload. Frame two: a length beyond
    // the slot (a small frame's payload, which starts with the String's
    // 8-byte length, follows the header's `len` word directly).
    let (f, at) = common::find_in_segment(q.name(), b"MARKER-one-MARKER");
    f.write_all_at(&[0xFF], at).unwrap();
    let (f, at) = common::find_in_segment(q.name(), b"MARKER-two-MARKER");
    let payload = at - 8;
    f.write_all_at(&u64::MAX.to_ne_bytes(), payload - 8).unwrap();
    // One: whole, but its payload does not decode (invalid UTF-8). Two: not whole.
    assert!(matches!(q.get(), Err(GetError::Decode(_))));
    assert_eq!(q.get_nowait(), Err(TryGetError::Corrupted));
    assert_eq!(q.get().as_deref(), Ok("three"));
    assert_eq!(q.qsize(), 0);
}

#[test]
fn a_queue_of_one_item_type_is_not_opened_as_another() {
    let q = Queue::<String>::new(4).unwrap();
    assert!(Queue::<(u32, String)>::open(q.name()).is_err());
    assert!(Queue::<u64>::open(q.name()).is_err());
    let mut b = Vec::new();
    String::from("x").encode(&mut b);
    assert_eq!(b.len(), 9);
}

#[test]
fn joinable_and_simple_queues_take_strings() {
    let j = JoinableQueue::<String>::new(4).unwrap();
    j.put("a".into()).unwrap();
    assert_eq!(j.unfinished_tasks(), 1);
    assert_eq!(j.get().as_deref(), Ok("a"));
    j.task_done().unwrap();
    assert!(j.join_timeout(Duration::from_secs(1)));
    let s = SimpleQueue::<Option<Vec<String>>>::new(2).unwrap();
    s.put(Some(vec!["x".into(), "y".into()])).unwrap();
    s.put(None).unwrap();
    assert_eq!(s.get(), Ok(Some(vec!["x".to_owned(), "y".to_owned()])));
    assert_eq!(s.get(), Ok(None));
    s.close_all();
    assert_eq!(s.get(), Err(GetError::Closed));
}

#[test]
fn plain_data_items_keep_the_slot_ring_layout() {
    // A Queue<u64> is still the MpmcQueue<u64> segment (kind and element).
    let q = Queue::<u64>::new(4).unwrap();
    q.put(7).unwrap();
    let raw = shmproc::queue::MpmcQueue::<u64>::open(q.name()).unwrap();
    assert_eq!(raw.pop(), Ok(7));
    // A string queue is not an MpmcQueue.
    let s = Queue::<String>::new(4).unwrap();
    assert!(shmproc::queue::MpmcQueue::<u64>::open(s.name()).is_err());
}

// A hostile frame: a `Vec` of 1 MiB elements claiming 2^20 of them. The
// decoder must not reserve 2^20 x 1 MiB before the input runs out.
type Huge = (String, Vec<[u8; 1 << 20]>);

shmproc::entry! {
    fn get_one_huge(name: String) -> Result<(), String> {
        let q = Queue::<Huge>::open(&name).map_err(|e| e.to_string())?;
        match q.get_timeout(Duration::from_secs(60)) {
            // A whole frame whose payload lies: it does not decode.
            Err(GetTimeoutError::Decode(_)) => Ok(()),
            r => Err(format!("get of a corrupted frame: {:?}", r.map(|v| v.1.len()))),
        }
    }
}

#[test]
fn a_hostile_vec_length_of_huge_elements_is_corrupted_not_an_abort_of_the_reader() {
    use std::os::unix::fs::FileExt;
    let q = Queue::<Huge>::with_max_frame(2, 128 << 10).unwrap();
    let marker = "MARKER-hostile-MARKER";
    q.put((marker.into(), Vec::new())).unwrap();
    let (f, at) = common::find_in_segment(q.name(), marker.as_bytes());
    // A small frame's payload (the String's length prefix first) starts 16
    // bytes into its slot, after the sequence word and the `len` word.
    let slot = at - 8 - 16;
    // A frame as long as the slot starts 64 bytes in: there, the same
    // String, then a Vec length of 2^20 elements.
    let mut hostile = Vec::new();
    marker.to_string().encode(&mut hostile);
    (1u64 << 20).encode(&mut hostile);
    f.write_all_at(&hostile, slot + 64).unwrap();
    // The frame's `len` word: the whole slot.
    f.write_all_at(&(q.max_frame() as u64).to_ne_bytes(), slot + 8).unwrap();
    let mut p = Process::new(get_one_huge, q.name().to_owned());
    p.start().unwrap();
    let _ = common::join(&p);
    assert_eq!(p.exitcode(), Some(0), "the consumer process died or failed decoding a hostile frame");
}

#[test]
fn decoding_hostile_lengths_of_zero_sized_elements_costs_work_bounded_by_the_input() {
    // 4 KiB as a Vec<Vec<()>>: 511 inner lengths of 2^20 each. Each inner
    // length is refused (more zero-sized elements than allowed), so the
    // decode is an error after a bounded number of element decodes; a
    // legitimate short Vec<()> still round-trips.
    let mut bytes = Vec::new();
    511u64.encode(&mut bytes);
    for _ in 0..511 {
        (1u64 << 20).encode(&mut bytes);
    }
    assert!(bytes.len() <= 4096);
    assert!(<Vec<Vec<()>>>::decode(&mut &bytes[..]).is_err(), "2^20 zero-sized elements from 8 bytes were accepted");
    let ok = vec![vec![(); 3], vec![(); 4096]];
    let mut b = Vec::new();
    ok.encode(&mut b);
    assert_eq!(<Vec<Vec<()>>>::decode(&mut &b[..]).unwrap(), ok);
}

/// Newcomer finding: opening a `Queue<String>` as another type said
/// "is a FrameQueue, not an MpmcQueue" (bounded) or "it holds
/// frames:alloc::string::String (size 64, align 64)" (unbounded, or
/// another encoded type): internal names. Now both types as a user
/// writes them, and that the queue's items are encoded frames.
#[test]
fn opening_a_string_queue_as_another_type_names_both_types() {
    for maxsize in [4, 0] {
        let name = format!("frames-wrong-type-{maxsize}-{}", std::process::id());
        let _q = Queue::<String>::create(&name, maxsize).unwrap();
        let as_u64 = Queue::<u64>::open(&name).unwrap_err().to_string();
        assert!(as_u64.contains("it holds `alloc::string::String` items (encoded frames), not `u64`"), "{as_u64}");
        let as_vec = Queue::<Vec<u8>>::open(&name).unwrap_err().to_string();
        assert!(
            as_vec.contains("it holds `alloc::string::String` items (encoded frames), not `alloc::vec::Vec<u8>` items"),
            "{as_vec}"
        );
    }
    let name = format!("frames-wrong-type-pod-{}", std::process::id());
    let _q = Queue::<u64>::create(&name, 4).unwrap();
    let as_string = Queue::<String>::open(&name).unwrap_err().to_string();
    assert!(
        as_string.contains("it holds `u64` (size 8, align 8), not `alloc::string::String` items (encoded frames)"),
        "{as_string}"
    );
}

/// Newcomer finding: a frame that is whole but does not decode (here a
/// queue handle whose queue is gone by the time it is got) was reported as
/// `Corrupted`, "could not be decoded as the item type (a peer of another
/// type or a corrupted segment)": nothing said what failed or why. Now it
/// is `Decode` with the decoder's error, and the item is removed.
#[test]
fn an_item_that_does_not_decode_says_what_and_why() {
    let outer = Queue::<Queue<u64>>::new(2).unwrap();
    let inner = Queue::<u64>::new(2).unwrap();
    let inner_name = inner.name().to_owned();
    outer.put(inner.clone()).unwrap();
    drop(inner); // its creator's last handle: the queue's name is removed
    let err = outer.get().map(|_| ()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GetError::Decode(shmproc::process::HandoffError::Open { .. })), "{err:?}");
    assert!(msg.contains("could not be decoded") && msg.contains(&inner_name) && msg.contains("not found"), "{msg}");
    assert_eq!(outer.get_nowait().map(|_| ()), Err(TryGetError::Empty), "the item was removed");
}
