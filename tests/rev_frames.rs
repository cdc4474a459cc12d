//! Hostile review (rev2) of the variable-length MPMC frame ring under
//! `Queue<T>` for encoded items (src/queue/frames.rs, vyukov.rs, mpmc.rs,
//! itemring.rs, chain.rs): frames at the slot's edges, 0-length frames,
//! garbage written into the segment by a peer, the unbounded queue's
//! frame limit.

mod common;

use std::time::Duration;

use shmproc::process::{Entry, HandoffError};
use shmproc::{GetError, Handoff, Process, PutError, Queue, TryGetError};

/// Finds `needle` in the segment file of queue `name`; returns the file
/// and the offset.
fn find_in_segment(name: &str, needle: &[u8]) -> (std::fs::File, u64) {
    let path = format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX);
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("payload in the segment");
    (std::fs::OpenOptions::new().write(true).open(&path).unwrap(), at as u64)
}

/// The offset in the segment file of the slot holding the small `String`
/// frame `marker` (its payload, the String's 8-byte length first, starts
/// 16 bytes into the slot, after the sequence and length words).
fn slot_of_marker(name: &str, marker: &str) -> (std::fs::File, u64) {
    let (f, at) = find_in_segment(name, marker.as_bytes());
    (f, at - 8 - 16)
}

/// CPU ticks (user + system) of `pid` so far, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

shmproc::entry! {
    /// A blocking `get` on a queue whose next slot a peer corrupted: it
    /// must come back with an error (any), not wait forever.
    fn rev_get_blocking(q: Queue<String>) -> Result<(), String> {
        match q.get() {
            Err(_) => Ok(()),
            Ok(v) => Err(format!("a corrupted slot gave an item: {v:?}")),
        }
    }
}

shmproc::entry! {
    /// A blocking `put` on a queue whose next free slot a peer corrupted:
    /// it must come back (an error, or the item landed), not spin forever.
    fn rev_put_blocking(q: Queue<String>) -> Result<(), String> {
        let _ = q.put("after".to_string());
        Ok(())
    }
}

/// Runs `entry(q)` in a child: `Ok(Some(code))` if it ended within 5 s;
/// `Ok(None)` if it is still blocked but asleep (at most 20 CPU ticks,
/// 0.2 CPU-s, in the next 2 s, as `a_blocked_pool_burns_no_cpu` judges
/// sleepers); `Err` if it is blocked and burning CPU (a spinning thread
/// takes about 200 ticks in 2 s). The child is killed if still running.
fn child_returns(entry: impl Entry<Arg = Queue<String>>, q: &Queue<String>) -> Result<Option<i32>, String> {
    let mut p = Process::new(entry, q.clone()).with_daemon(true);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    if p.join_timeout(Duration::from_secs(5)).unwrap() {
        return Ok(p.exitcode());
    }
    let before = cpu_ticks(pid);
    let ended = p.join_timeout(Duration::from_secs(2)).unwrap();
    let used = cpu_ticks(pid).saturating_sub(before);
    if ended {
        return Ok(p.exitcode());
    }
    let _ = p.kill();
    let _ = p.join_timeout(common::DEADLINE);
    if used <= 20 {
        return Ok(None);
    }
    Err(format!("still blocked after 7 s, and it used {used} CPU ticks (1 tick = 10 ms) in the last 2 s: it spins"))
}

/// DEFECT. A peer writes a garbage sequence word into the slot of the
/// next frame (neither "free", "published" nor the next lap's value). The
/// consumer's claim loop (`vyukov.rs` `Ring::pop`, the catch-up branch)
/// gives up after `CORRUPT_STEPS` with `Refused::Now`, i.e. "empty"; a
/// blocking `get` (`mpmc.rs` `pop_wait`) then finds the queue non-empty
/// (`tail != head`), never sleeps, and retries forever: a get that never
/// returns and burns a core, instead of `Corrupted`. `get_nowait` says
/// `Empty` while `qsize()` says 1.
#[test]
fn a_garbage_sequence_word_makes_a_blocking_get_fail_not_spin_forever() {
    use std::os::unix::fs::FileExt;
    let q = Queue::<String>::new(4).unwrap();
    let marker = "MARKER-rev2-seq-get-MARKER";
    q.put(marker.into()).unwrap();
    let (f, slot) = slot_of_marker(q.name(), marker);
    f.write_all_at(&0x0bad_5eed_0000_1234u64.to_ne_bytes(), slot).unwrap();
    assert_eq!(q.qsize(), 1);
    let nowait = q.get_nowait();
    let r = child_returns(rev_get_blocking, &q);
    assert!(
        r.is_ok(),
        "Queue::get on a slot whose sequence word a peer corrupted: {} (get_nowait said {nowait:?}; expected an \
         error such as Corrupted)",
        r.unwrap_err()
    );
    assert_ne!(r.unwrap(), Some(1), "the blocked get returned an item");
}

/// DEFECT (same cause, producer side). A garbage sequence word in the next
/// free slot: `Ring::push`'s catch-up branch gives up (`Refused::Now`,
/// "full"), `push_wait` finds the queue not full, never sleeps, and
/// retries forever: a `put` that never returns, burning a core. `PutError`
/// has no variant to report the corruption.
#[test]
fn a_garbage_sequence_word_makes_a_blocking_put_fail_not_spin_forever() {
    use std::os::unix::fs::FileExt;
    let q = Queue::<String>::new(2).unwrap();
    let marker = "MARKER-rev2-seq-put-MARKER";
    q.put(marker.into()).unwrap();
    let (f, slot) = slot_of_marker(q.name(), marker);
    assert_eq!(q.get().as_deref(), Ok(marker));
    // Slot 0 is free for position 2 now (its word says 2); slot 1 for
    // position 1. Corrupt slot 1, where the next put goes.
    let slot1 = slot + q.max_frame() as u64 + 64;
    f.write_all_at(&0x0bad_5eed_0000_4321u64.to_ne_bytes(), slot1).unwrap();
    let r = child_returns(rev_put_blocking, &q);
    assert!(r.is_ok(), "Queue::put on a queue whose next free slot a peer corrupted: {}", r.unwrap_err());
}

/// A type whose encoding is empty: a 0-length frame.
#[derive(Debug, PartialEq, Eq)]
struct Nothing;

impl Handoff for Nothing {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(Nothing)
    }
}

/// COVERAGE (passes). 0-length frames, and frames of exactly the slot's
/// room and one byte more, for frame sizes on both sides of the
/// small-frame bound and of the odd-line rounding: each one round-trips
/// (or is `TooLarge` with its exact length and the limit), interleaved so
/// that a short frame is read from a slot that held a long one.
#[test]
fn frames_at_the_slot_edges_and_empty_frames_round_trip() {
    let q = Queue::<Nothing>::new(3).unwrap();
    for _ in 0..10 {
        q.put(Nothing).unwrap();
        q.put(Nothing).unwrap();
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.get(), Ok(Nothing));
        assert_eq!(q.get(), Ok(Nothing));
    }
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
    for max_frame in [1u64, 56, 63, 64, 65, 176, 177, 240, 241, 300, 1024, 1025, 4096] {
        let q = Queue::<Vec<u8>>::with_max_frame(2, max_frame).unwrap();
        let room = q.max_frame();
        assert!(room as u64 >= max_frame, "max_frame {max_frame}: room {room}");
        // Slot stride: room + 64, a whole number of lines, odd past two.
        let lines = (room + 64) / 64;
        assert_eq!((room + 64) % 64, 0);
        assert!(lines <= 2 || lines % 2 == 1, "max_frame {max_frame}: {lines} lines");
        let exact = vec![0xA5u8; room - 8]; // + its 8-byte length: exactly `room`
        let over = vec![0x5Au8; room - 7];
        for round in 0..3u8 {
            let mut e = exact.clone();
            e[0] = round;
            q.put(e.clone()).unwrap();
            q.put(vec![round]).unwrap();
            assert_eq!(q.get().unwrap(), e, "max_frame {max_frame}: a frame of exactly the room");
            assert_eq!(q.get().unwrap(), vec![round]);
            match q.put(over.clone()) {
                Err(PutError::TooLarge { item, len, max }) => {
                    assert_eq!((item.len(), len, max), (over.len(), room + 1, room), "max_frame {max_frame}")
                }
                r => panic!("max_frame {max_frame}: a frame one byte over the room: {r:?}"),
            }
            assert_eq!(q.qsize(), 0);
        }
    }
}

/// DEFECT. An unbounded queue's `max_frame()` ("the largest item encoding
/// a put accepts") says `usize::MAX` (`inner.rs` `Inner::max_frame`, the
/// `Chain` arm), but its puts refuse encodings above `Chain::max_item()`
/// (half the memory limit's worth of slot, `chain.rs` `put` -> `TooLarge {
/// max: self.max_item() }`): the limit a caller can see and the limit the
/// error reports disagree, and the documented idiom
/// `"x".repeat(q.max_frame() + 1)` overflows.
#[test]
fn an_unbounded_queues_max_frame_is_the_limit_its_puts_enforce() {
    let q = Queue::<String>::unbounded_with_limit(1 << 20).unwrap();
    let big = "x".repeat(300_000);
    let Err(PutError::TooLarge { len, max, .. }) = q.put(big) else { panic!("300 000 bytes within a 1 MiB limit") };
    assert_eq!(len, 300_008);
    // The largest accepted encoding goes in, and comes out whole.
    let fits = "y".repeat(max - 8);
    q.put(fits.clone()).unwrap();
    assert_eq!(q.get().unwrap(), fits);
    assert_eq!(q.max_frame(), max, "max_frame() of an unbounded queue vs the `max` its TooLarge reports");
}

/// COVERAGE (passes). Large frames through an unbounded queue across two
/// processes: ring growth for frames larger than the ring before (each
/// larger item seals the ring and links one with larger slots), then
/// small ones again; every item in order and intact, qsize exact at the
/// end, and every ring gone from /dev/shm after the queue is dropped.
#[test]
fn an_unbounded_queue_chains_rings_for_growing_frames_across_processes() {
    let name = format!("rev2-chain-frames-{}", std::process::id());
    let q = Queue::<Vec<u8>>::create_unbounded(&name, 256 << 20, &shmproc::Options::new()).unwrap();
    let sizes: Vec<usize> = (0..40).map(|i| [0, 1, 200, 5_000, 70_000, 300_000, 17, 1_000_000][i % 8] + i).collect();
    let mut p = Process::new(rev_put_sizes, (q.clone(), sizes.clone()));
    p.start().unwrap();
    let _ = common::join(&p);
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(q.qsize(), sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        let v = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(v.len(), n, "item {i}");
        assert!(v.iter().enumerate().all(|(k, &b)| b == (k as u8) ^ (i as u8)), "item {i} torn");
    }
    assert_eq!(q.qsize(), 0);
    assert!(matches!(q.get_nowait(), Err(TryGetError::Empty)));
    drop(q);
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains(&name))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

shmproc::entry! {
    fn rev_put_sizes(args: (Queue<Vec<u8>>, Vec<usize>)) -> Result<(), String> {
        let (q, sizes) = args;
        for (i, &n) in sizes.iter().enumerate() {
            let v: Vec<u8> = (0..n).map(|k| (k as u8) ^ (i as u8)).collect();
            q.put_timeout(v, Duration::from_secs(30)).map_err(|e| format!("item {i} ({n} bytes): {e}"))?;
        }
        Ok(())
    }
}

#[allow(dead_code)]
fn _uses(_: GetError) {}

/// The files in /dev/shm whose names start with the user name `prefix`:
/// (file name, size, first 8 bytes: the magic once the header is written).
fn files_of(prefix: &str) -> Vec<(String, u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mine = format!("{}{prefix}", shmproc::NAME_PREFIX);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&mine) {
            continue;
        }
        let Ok(f) = std::fs::File::open(format!("/dev/shm/{name}")) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut magic = [0u8; 8];
        let _ = f.read_exact_at(&mut magic, 0);
        out.push((name, len, u64::from_le_bytes(magic)));
    }
    out
}

/// Removes every file of `prefix` (the test leaves nothing).
fn remove_all(prefix: &str) {
    for (n, _, _) in files_of(prefix) {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
}

/// The unbounded queue's control words read from its segment file at
/// `off` (`ChainCtl`: `newest` at 128, `oldest` at 256, each on its own
/// 128-byte line after the 128-byte header; `words` at 384: `limit` u64,
/// `mode` u32, `live` u64 at 400).
fn chain_word(name: &str, off: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_ne_bytes(b)
}

/// DEFECT. A consumer that wins `retire`'s CAS (`links.rs` `Links::retire`:
/// `oldest` k -> k + 1) and is killed before `Chain::retired` (chain.rs)
/// removes ring k's name and gives its bytes back leaves ring k for good:
/// rings are created persisted, so `gc` never removes them, and the last
/// holder's cleanup (`unlink_rings`) removes only `oldest..=newest + 1`
/// and temporary names, never a ring below `oldest`. Its bytes also stay
/// counted in `live`, shrinking the memory limit for the queue's life.
/// The test leaves exactly the state such a consumer leaves (ring 0
/// sealed and drained, `oldest` moved to 1 in the control segment, ring
/// 0's name still there), then drops the queue's last handle.
#[test]
fn a_ring_retired_by_a_consumer_killed_before_unlinking_it_is_not_left_behind() {
    use std::os::unix::fs::FileExt;
    let name = format!("rev2-retire-crash-{}", std::process::id());
    let q = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();
    // Ring 0 holds 512 frames of up to 64 bytes; the 513th links ring 1.
    for i in 0..513 {
        q.put(format!("item-{i}")).unwrap();
    }
    let rings = || files_of(&format!("{name}.")).into_iter().map(|f| f.0).collect::<Vec<_>>();
    assert_eq!(rings().len(), 2, "{:?}", rings());
    for i in 0..512 {
        assert_eq!(q.get_nowait().as_deref(), Ok(format!("item-{i}").as_str()));
    }
    assert_eq!((chain_word(&name, 128), chain_word(&name, 256)), (1, 0), "newest, oldest (layout of ChainCtl)");
    assert_eq!(chain_word(&name, 384), 1 << 30, "the limit word (layout of ChainCtl)");
    let f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX)).unwrap();
    // The retiring consumer's CAS: oldest 0 -> 1; then it is killed.
    f.write_all_at(&1u64.to_ne_bytes(), 256).unwrap();
    assert_eq!(q.get_nowait().as_deref(), Ok("item-512"));
    assert_eq!(q.qsize(), 0);
    drop(q);
    let left = files_of(&name);
    remove_all(&name);
    assert!(left.is_empty(), "after the queue's last handle dropped, left in /dev/shm: {left:?}");
}

shmproc::entry! {
    /// Opens the unbounded queue `name` and puts one 30 MiB item (a new
    /// ring of about 60 MiB).
    fn rev_put_huge(name: String) -> Result<(), String> {
        let q = Queue::<Vec<u8>>::open(&name).map_err(|e| e.to_string())?;
        q.put(vec![7u8; 30 << 20]).map_err(|e| e.to_string())
    }
}

/// DEFECT. A producer killed while it creates a ring (`Chain::create_ring`,
/// chain.rs: `live.fetch_add(cost)` reserves the ring's bytes, then
/// `ItemRing::create` makes it under a temporary name: for a large ring,
/// an `fallocate` of tens of MiB, a wide window) never gives the
/// reservation back: `live` keeps it for the queue's life. Two such
/// deaths (60 MiB each) in a queue limited to 130 MiB and the queue can
/// never grow again: a put of a 30 MiB item into the EMPTY queue is
/// refused as `Full` forever (a blocking put would wait forever). The
/// test kills each producer when it sees its temporary ring file with
/// pages not yet reserved (and checks it still has some after the kill).
/// Seen failing before the fix (`live` then counted 120 MiB).
#[test]
fn producers_killed_while_creating_rings_do_not_shrink_the_memory_limit() {
    let name = format!("rev2-live-leak-{}", std::process::id());
    let q = Queue::<Vec<u8>>::create_unbounded(&name, 130 << 20, &shmproc::Options::new()).unwrap();
    let mut leaks = 0;
    let mut tries = 0;
    while leaks < 2 && tries < 10 {
        tries += 1;
        let mut p = Process::new(rev_put_huge, name.clone()).with_daemon(true);
        p.start().unwrap();
        let temp = format!(".t{}x", p.pid().unwrap());
        let t0 = std::time::Instant::now();
        let mut hit = None;
        while hit.is_none() && t0.elapsed() < common::DEADLINE && p.join_timeout(Duration::ZERO).is_ok_and(|d| !d) {
            hit = files_of(&format!("{name}."))
                .into_iter()
                .find(|(n, len, _)| n.contains(&temp) && *len >= 50 << 20 && reserving(n));
            if hit.is_none() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let _ = p.kill();
        let _ = p.join_timeout(common::DEADLINE);
        let still = hit
            .as_ref()
            .is_some_and(|(n, _, _)| files_of(&format!("{name}.")).iter().any(|f| f.0 == *n && reserving(&f.0)));
        if still {
            leaks += 1;
        }
        // Whatever the child managed (a whole ring, its item), empty the queue.
        while q.get_nowait().is_ok() {}
    }
    assert_eq!(leaks, 2, "could not kill two producers while they created a ring in {tries} tries (inconclusive)");
    assert_eq!(q.qsize(), 0);
    let live = chain_word(&name, 400);
    let r = q.put_nowait(vec![1u8; 30 << 20]).map_err(|e| e.to_string());
    drop(q);
    let left = files_of(&name);
    remove_all(&name);
    assert!(
        r.is_ok(),
        "a 30 MiB put into the empty queue (limit 130 MiB) after {leaks} producers were killed creating rings: {r:?} \
         (the control block counts {live} live bytes)"
    );
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

/// Whether /dev/shm file `name` (a full file name) has pages not reserved
/// yet (its creator is in `posix_fallocate`, or was killed there).
fn reserving(name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/dev/shm/{name}")).is_ok_and(|m| m.blocks() * 512 < m.len())
}

/// Item `i` of the consumer-kill test: 0..65 000 bytes derived from `i`.
fn kill_item(i: u64) -> (u64, Vec<u8>) {
    let len = (i.wrapping_mul(7919) % 65_000) as usize;
    (i, (0..len).map(|k| (i as u8).wrapping_mul(31).wrapping_add(k as u8)).collect())
}

shmproc::entry! {
    /// Gets frames until the queue is closed; acknowledges each item's
    /// index on `ack` (or `u64::MAX - i` if its bytes are not item i's).
    fn rev_ack_frames(args: (Queue<(u64, Vec<u8>)>, Queue<u64>)) -> Result<(), String> {
        let (q, ack) = args;
        loop {
            match q.get() {
                Ok((i, v)) => {
                    let tag = if (i, v) == kill_item(i) { i } else { u64::MAX - i };
                    ack.put(tag).map_err(|e| e.to_string())?;
                }
                Err(GetError::Closed) => return Ok(()),
                Err(e) => return Err(format!("get: {e}")),
            }
        }
    }
}

/// COVERAGE (passes). Consumers of large frames (0..64 KiB) killed with
/// SIGKILL at random points, again and again, while a producer streams
/// into a ring of 8 slots: every frame that arrives is whole, none
/// arrives twice, at most one per kill is missing (the one the victim
/// held), nobody blocks, and `qsize` is 0 at the end. (frames.rs kills
/// consumers only at a chosen point, between claim and release.)
#[test]
fn consumers_of_large_frames_killed_at_random_lose_at_most_their_own_frame() {
    let n = common::count(1_500, 15_000);
    let q = Queue::<(u64, Vec<u8>)>::with_max_frame(8, 64 << 10).unwrap();
    let ack = Queue::<u64>::new(n + 64).unwrap();
    let spawn = || {
        let mut p = Process::new(rev_ack_frames, (q.clone(), ack.clone())).with_daemon(true);
        p.start().unwrap();
        p
    };
    let mut consumers = vec![spawn(), spawn()];
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                q.put_timeout(kill_item(i), common::DEADLINE).expect("a put blocked past the deadline");
            }
        })
    };
    let kills = common::kill_at_random(&mut consumers, spawn, || producer.is_finished());
    producer.join().unwrap();
    q.close_all();
    for c in &consumers {
        let _ = common::join(c);
        assert_eq!(c.exitcode(), Some(0), "a consumer failed");
    }
    let missing = common::check_acks(&ack, n, kills);
    assert_eq!(q.qsize(), 0);
    eprintln!("{kills} consumer kills, {missing} items missing of {n}");
}

/// A queue whose segment would need more than /dev/shm has free (here
/// 2^30 slots of 1088 bytes: 1.17 TB) is refused with `NoSpace` before
/// any page is reserved, and leaves nothing. Before, the creator reserved
/// 64 MiB chunks until /dev/shm (as large as the machine's memory here)
/// was full: the OOM killer then killed processes at random, and a
/// creator killed mid-reservation left a 1 TiB file with 24 GB in use
/// (seen on this machine at 17:08 today; not re-run, it takes the machine
/// down).
#[test]
///
/// The other tests of this binary create and remove segments meanwhile,
/// so the check counts only names this test can own: its own named
/// queue's, and anonymous files of 1 GiB or more (no other test here
/// makes one). Counting every file raced with them and failed in CI.
fn a_segment_larger_than_dev_shm_has_free_is_refused_at_once() {
    let huge = |files: Vec<(String, u64, u64)>| files.into_iter().filter(|f| f.1 >= 1 << 30).count();
    let before = huge(files_of(""));
    let r = Queue::<String>::with_max_frame(1 << 30, 1024);
    assert!(matches!(r, Err(shmproc::OpenError::NoSpace { .. })), "{:?}", r.map(|q| q.max_frame()));
    assert!(huge(files_of("")) <= before, "a file of 1 GiB or more was left in /dev/shm");
    let name = common::name("refused-at-once");
    let r = Queue::<String>::create_with_max_frame(&name, 1 << 30, 1024, &shmproc::Options::default());
    assert!(matches!(r, Err(shmproc::OpenError::NoSpace { .. })), "{:?}", r.map(|q| q.max_frame()));
    assert_eq!(files_of(&name), vec![], "the refused queue left a file in /dev/shm");
}
