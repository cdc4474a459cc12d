//! The borrowed forms of a queue's put and get (`put_ref*`, `get_into*`)
//! across real processes: exactly once with checksums (bounded and
//! unbounded queues, strings, tuples, plain data), producers killed
//! mid-stream, consumers killed at random while getting into their reused
//! values, and corrupted frames read into a reused `String`.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use shmproc::{GetError, GetTimeoutError, Process, Queue, TryGetError, Value};

/// A 64-bit mix, so that a lost item plus a duplicated one cannot cancel
/// out in a sum.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    (x ^ (x >> 27)).wrapping_mul(0x81da_def4_bc2d_d44d)
}

/// Item `i` of producer `tag`, written into `s` (reused): a string of
/// 0..=300 bytes that names both (past 240 bytes a frame leaves the slot's
/// first line: both payload offsets are used).
fn text_into(s: &mut String, tag: u64, i: u64) {
    s.clear();
    write!(s, "{tag}:{i}:").unwrap();
    let pad = (mix(tag << 40 | i) % 300) as usize;
    s.extend(std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), pad));
}

/// Parses `text_into`'s output back (and checks its padding).
fn parse(s: &str) -> Result<(u64, u64), String> {
    let mut it = s.splitn(3, ':');
    let tag = it.next().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad item {s:?}"))?;
    let i = it.next().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad item {s:?}"))?;
    let mut want = String::new();
    text_into(&mut want, tag, i);
    if want != s {
        return Err(format!("item {s:?} is damaged"));
    }
    Ok((tag, i))
}

const STOP: &str = "stop";

fn n() -> u64 {
    common::count(10_000, 200_000)
}

shmproc::entry! {
    /// Puts `n()` items through `put_ref`, from one reused `String`.
    fn put_ref_strings(args: (Queue<String>, u64)) -> Result<(), String> {
        let (q, tag) = args;
        let mut s = String::new();
        for i in 0..n() {
            text_into(&mut s, tag, i);
            q.put_ref_timeout(&s, common::DEADLINE).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    /// Gets into one reused `String` until STOP; every producer's items
    /// arrive in increasing order; reports count and checksum.
    fn get_into_strings(args: (Queue<String>, Value<u64>, Value<u64>)) -> Result<(), String> {
        let (q, count, sum) = args;
        let (mut c, mut total, mut last) = (0u64, 0u64, [None::<u64>; 2]);
        let mut s = String::new();
        loop {
            q.get_into_timeout(&mut s, common::DEADLINE).map_err(|e| e.to_string())?;
            if s == STOP {
                break;
            }
            let (tag, i) = parse(&s)?;
            let prev = last.get_mut(tag as usize).ok_or("bad tag")?;
            if prev.is_some_and(|p| p >= i) {
                return Err(format!("producer {tag}: {i} after {prev:?}"));
            }
            *prev = Some(i);
            c += 1;
            total = total.wrapping_add(mix(tag << 40 | i));
        }
        count.set(c).map_err(|e| e.to_string())?;
        sum.set(total).map_err(|e| e.to_string())
    }
}

/// 2 producers (`put_ref`) and 2 consumers (`get_into`) on `q`, then one
/// STOP per consumer: each item arrives exactly once.
fn two_by_two_borrowed(q: &Queue<String>) {
    let stats: Vec<_> = (0..2).map(|_| (Value::new(0u64).unwrap(), Value::new(0u64).unwrap())).collect();
    let mut consumers: Vec<_> =
        stats.iter().map(|(c, s)| Process::new(get_into_strings, (q.clone(), c.clone(), s.clone()))).collect();
    let mut producers: Vec<_> = (0..2u64).map(|t| Process::new(put_ref_strings, (q.clone(), t))).collect();
    for p in consumers.iter_mut().chain(producers.iter_mut()) {
        p.start().unwrap();
    }
    for p in &producers {
        common::join(p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "a producer failed");
    }
    let stop = STOP.to_owned();
    for _ in 0..2 {
        q.put_ref(&stop).unwrap();
    }
    for p in &consumers {
        common::join(p).unwrap();
        assert_eq!(p.exitcode(), Some(0), "a consumer failed");
    }
    let count: u64 = stats.iter().map(|(c, _)| c.get().unwrap()).sum();
    let sum = stats.iter().map(|(_, s)| s.get().unwrap()).fold(0, u64::wrapping_add);
    let want = (0..2u64).flat_map(|t| (0..n()).map(move |i| mix(t << 40 | i))).fold(0, u64::wrapping_add);
    assert_eq!((count, sum), (2 * n(), want));
    assert_eq!(q.qsize(), 0);
}

#[test]
fn put_ref_and_get_into_two_producers_two_consumers_exactly_once() {
    two_by_two_borrowed(&Queue::<String>::new(16).unwrap());
}

#[test]
fn put_ref_and_get_into_on_an_unbounded_queue_exactly_once() {
    // A small memory limit: rings are sealed, linked and retired often.
    two_by_two_borrowed(&Queue::<String>::unbounded_with_limit(1 << 20).unwrap());
}

shmproc::entry! {
    /// Plain data: gets `n` u64s into one variable, sums them.
    fn get_into_u64(args: (Queue<u64>, u64, Value<u64>)) -> Result<(), String> {
        let (q, n, sum) = args;
        let (mut v, mut s) = (0u64, 0u64);
        for _ in 0..n {
            q.get_into_timeout(&mut v, common::DEADLINE).map_err(|e| e.to_string())?;
            s = s.wrapping_add(mix(v));
        }
        sum.set(s).map_err(|e| e.to_string())
    }
}

#[test]
fn plain_data_put_ref_and_get_into_cross_processes() {
    let q = Queue::<u64>::new(8).unwrap();
    let sum = Value::new(0u64).unwrap();
    let n = n();
    let mut c = Process::new(get_into_u64, (q.clone(), n, sum.clone()));
    c.start().unwrap();
    for i in 0..n {
        q.put_ref_timeout(&i, common::DEADLINE).unwrap();
    }
    common::join(&c).unwrap();
    assert_eq!(c.exitcode(), Some(0));
    assert_eq!(sum.get().unwrap(), (0..n).map(mix).fold(0, u64::wrapping_add));
}

shmproc::entry! {
    /// Puts text(tag, i) through `put_ref` for i = 0.. until killed or `n`.
    fn put_ref_tagged(args: (Queue<String>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        let mut s = String::new();
        for i in 0..n {
            text_into(&mut s, tag, i);
            q.put_ref(&s).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A `put_ref` producer killed mid-stream: the survivor's items all
/// arrive once, in order (read with `get_into`); the victim's are a
/// prefix of its stream; nobody blocks; `qsize` ends at 0.
fn kill_a_put_ref_producer_mid_stream(q: Queue<String>, round: u64) {
    let m = common::count(10_000, 30_000);
    let mut victim = Process::new(put_ref_tagged, (q.clone(), 1u64, u64::MAX)).with_daemon(true);
    let mut survivor = Process::new(put_ref_tagged, (q.clone(), 0u64, m));
    victim.start().unwrap();
    survivor.start().unwrap();
    let mut next = [0u64; 2];
    let kill_after = 300 + round * 2_917;
    let mut got = 0u64;
    let deadline = Instant::now() + common::DEADLINE;
    let mut s = String::new();
    while next[0] < m {
        assert!(Instant::now() < deadline, "stuck at {next:?}");
        if got == kill_after {
            victim.kill().unwrap();
        }
        match q.get_into_timeout(&mut s, Duration::from_millis(100)) {
            Ok(()) => {}
            Err(GetTimeoutError::TimedOut) => continue,
            Err(e) => panic!("{e}"),
        }
        got += 1;
        let (tag, i) = parse(&s).unwrap();
        assert_eq!(i, next[tag as usize], "producer {tag}: hole or duplicate");
        next[tag as usize] += 1;
    }
    common::join(&survivor).unwrap();
    let _ = victim.kill();
    let _ = common::join(&victim);
    while q.get_into_timeout(&mut s, Duration::from_millis(200)).is_ok() {
        assert_eq!(parse(&s).unwrap(), (1, next[1]), "victim: hole or duplicate");
        next[1] += 1;
    }
    assert_eq!(q.qsize(), 0);
}

#[test]
fn killing_a_put_ref_producer_mid_stream_loses_nothing_of_the_others() {
    for round in 0..3u64 {
        kill_a_put_ref_producer_mid_stream(Queue::<String>::new(32).unwrap(), round);
    }
    for round in 0..2u64 {
        let q = Queue::<String>::new(0).unwrap();
        let name = q.name().to_owned();
        kill_a_put_ref_producer_mid_stream(q, round);
        assert!(
            !std::fs::read_dir("/dev/shm").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(&name)),
            "segments of {name} left"
        );
    }
}

/// Item `i` of the consumer-kill test: 0..20 000 bytes derived from `i`.
fn kill_item_into(v: &mut (u64, Vec<u8>), i: u64) {
    let len = (i.wrapping_mul(7919) % 20_000) as usize;
    v.0 = i;
    v.1.clear();
    v.1.extend((0..len).map(|k| (i as u8).wrapping_mul(31).wrapping_add(k as u8)));
}

shmproc::entry! {
    /// Gets frames into one reused value until the queue is closed;
    /// acknowledges each item's index on `ack` (or `u64::MAX - i` if its
    /// bytes are not item i's).
    fn ack_into(args: (Queue<(u64, Vec<u8>)>, Queue<u64>)) -> Result<(), String> {
        let (q, ack) = args;
        let (mut got, mut want) = ((0, Vec::new()), (0, Vec::new()));
        loop {
            match q.get_into(&mut got) {
                Ok(()) => {
                    kill_item_into(&mut want, got.0);
                    let tag = if got == want { got.0 } else { u64::MAX - got.0 };
                    ack.put(tag).map_err(|e| e.to_string())?;
                }
                Err(GetError::Closed) => return Ok(()),
                Err(e) => return Err(format!("get_into: {e}")),
            }
        }
    }
}

/// Consumers that `get_into` a reused value, SIGKILLed at random points
/// again and again while a `put_ref` producer streams frames of 0..20 KB
/// into a ring of 8 slots: every frame that arrives is whole, none twice,
/// at most one per kill is missing (the one the victim held), nobody
/// blocks, and `qsize` is 0 at the end.
#[test]
fn get_into_consumers_killed_at_random_lose_at_most_their_own_frame() {
    let n = common::count(1_500, 15_000);
    let q = Queue::<(u64, Vec<u8>)>::with_max_frame(8, 20_100).unwrap();
    let ack = Queue::<u64>::new(n + 64).unwrap();
    let spawn = || {
        let mut p = Process::new(ack_into, (q.clone(), ack.clone())).with_daemon(true);
        p.start().unwrap();
        p
    };
    let mut consumers = vec![spawn(), spawn()];
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let mut item = (0, Vec::new());
            for i in 0..n {
                kill_item_into(&mut item, i);
                q.put_ref_timeout(&item, common::DEADLINE).expect("a put blocked past the deadline");
            }
        })
    };
    let kills = common::kill_at_random(&mut consumers, spawn, || producer.is_finished());
    producer.join().unwrap();
    q.close_all();
    common::join_consumers_and_check_acks(&consumers, &ack, n, kills);
    assert_eq!(q.qsize(), 0);
}

/// Corrupted frames read with `get_into`: one with invalid UTF-8 is
/// removed and reported as `Decode`, leaving the reused `String` empty
/// (valid UTF-8, never the bad bytes); one with a length beyond its slot
/// is `Corrupted` and leaves the `String` untouched; the next frame then
/// arrives into the same buffer.
#[test]
fn corrupted_frames_read_into_a_reused_string_are_reported_and_leave_it_valid() {
    use std::os::unix::fs::FileExt;
    let q = Queue::<String>::new(4).unwrap();
    q.put_ref(&"MARKER-one-MARKER".to_string()).unwrap();
    q.put_ref(&"MARKER-two-MARKER".to_string()).unwrap();
    q.put_ref(&"three".to_string()).unwrap();
    let (f, at) = common::find_in_segment(q.name(), b"MARKER-one-MARKER");
    f.write_all_at(&[0xFF], at).unwrap();
    let (f, at) = common::find_in_segment(q.name(), b"MARKER-two-MARKER");
    // A small frame's payload (the String's 8-byte length first) follows
    // the header's `len` word directly.
    f.write_all_at(&u64::MAX.to_ne_bytes(), at - 16).unwrap();
    let mut s = String::with_capacity(64);
    s.push_str("before");
    let buf = s.as_ptr();
    assert!(matches!(q.get_into(&mut s), Err(GetError::Decode(_))));
    assert_eq!(s, "", "a frame that is not UTF-8 leaves the String empty");
    s.push_str("kept");
    assert_eq!(q.get_into_nowait(&mut s), Err(TryGetError::Corrupted));
    assert_eq!(s, "kept", "a frame that is not whole leaves the String as it was");
    q.get_into(&mut s).unwrap();
    assert_eq!(s, "three");
    assert_eq!(s.as_ptr(), buf, "the same buffer throughout");
    assert_eq!(q.qsize(), 0);
}

/// `get_into` of a `Vec<String>` decodes into the strings it already
/// holds, and a closed queue leaves the destination untouched.
#[test]
fn get_into_reuses_nested_buffers_and_leaves_the_destination_on_closed() {
    let q = Queue::<Vec<String>>::new(4).unwrap();
    let item = vec!["a".repeat(40), "b".repeat(40)];
    q.put_ref(&item).unwrap();
    q.put_ref(&vec!["c".to_string()]).unwrap();
    let mut got = vec![String::with_capacity(64), String::with_capacity(64), String::with_capacity(64)];
    let first = got[0].as_ptr();
    q.get_into(&mut got).unwrap();
    assert_eq!(got, item);
    assert_eq!(got[0].as_ptr(), first, "the first element's buffer is reused");
    q.get_into(&mut got).unwrap();
    assert_eq!(got, ["c"]);
    assert_eq!(got[0].as_ptr(), first);
    q.close_all();
    assert_eq!(q.get_into(&mut got), Err(GetError::Closed));
    assert_eq!(got, ["c"]);
}

/// `JoinableQueue` counts borrowed puts as tasks, bounded and unbounded:
/// `join` waits for a `task_done` per `put_ref`.
#[test]
fn joinable_queues_count_put_ref_items_as_tasks() {
    for q in [shmproc::JoinableQueue::<String>::new(4).unwrap(), shmproc::JoinableQueue::<String>::new(0).unwrap()] {
        let s = "task".to_string();
        q.put_ref(&s).unwrap();
        q.put_ref_nowait(&s).unwrap();
        assert_eq!(q.unfinished_tasks(), 2);
        let mut got = String::new();
        for _ in 0..2 {
            q.get_into(&mut got).unwrap();
            assert_eq!(got, s);
            assert!(!q.join_timeout(Duration::from_millis(1)));
            q.task_done().unwrap();
        }
        assert!(q.join_timeout(Duration::from_millis(1)));
        assert!(q.task_done().is_err());
    }
}
