//! The plain-data `map` path: arguments written once into a shared-memory
//! arena the pool keeps for the next map, frames that refer to slices of
//! it, workers that read them there and write values straight into their
//! result ring, results copied once from the ring into their place
//! (src/pool/frame.rs `PodBlock`, worker.rs `run_pod_shared`, manager.rs
//! `recv_result`). Each test's `finish` also checks that the arenas are
//! gone from /dev/shm with the pool.

use super::{
    DEADLINE, alive, finish, kill9, only_the_parked_item_was_lost, park_at, park_file, park_guard, serial, square,
    wait_until, watchdog, watchdog_after,
};
use shmproc::Pool;
use shmproc::pool::{PoolError, TaskError};

shmproc::task! { fn widen(x: u32) -> u64 { u64::from(x) * 3 } }
shmproc::task! { fn sum3(v: [u64; 3]) -> u64 { v[0] + v[1] + v[2] } }
shmproc::task! { fn narrow(x: u64) -> u8 { (x % 251) as u8 } }
shmproc::task! { fn spread(x: u8) -> u64 { u64::from(x) << 40 } }

/// An iterator that yields `n` items while its `size_hint` says `hint`
/// (a contract violation, but safe code): the map still takes every item.
struct Liar {
    next: u64,
    n: u64,
    hint: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.n).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.hint, Some(self.hint))
    }
}

#[test]
fn a_size_hint_that_lies_changes_nothing() {
    let _watchdog = watchdog("a_size_hint_that_lies_changes_nothing");
    let pool = Pool::new(2).unwrap();
    // The first grows the pool's first arena (1 MiB) while it is filled;
    // the second fills a private block (a hint under 64 KiB) that grows.
    for (n, hint) in [(400_000, 10_000), (100_000, 10), (3, 1_000_000), (0, 50), (70_001, 70_000), (5, 0)] {
        let got = pool.map(square, Liar { next: 0, n, hint }).unwrap();
        assert_eq!(got, serial(n), "{n} items, hint {hint}");
    }
    finish(pool, &[]);
}

/// Maps of other widths and sizes, one after the other (each reuses the
/// block the one before left) and from two threads at once (one gets the
/// kept block, the other a new one): every result exact.
#[test]
fn bulk_maps_of_other_widths_reuse_the_block_and_stay_exact() {
    let _watchdog = watchdog("bulk_maps_of_other_widths_reuse_the_block_and_stay_exact");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    assert_eq!(pool.map(square, 0..300_000).unwrap(), serial(300_000));
    let xs: Vec<u32> = (0..100_003).collect();
    assert_eq!(pool.map(widen, xs.clone()).unwrap(), xs.iter().map(|&x| u64::from(x) * 3).collect::<Vec<_>>());
    let triples: Vec<[u64; 3]> = (0..50_000).map(|i| [i, 2 * i, 7]).collect();
    assert_eq!(pool.map(sum3, triples).unwrap(), (0..50_000).map(|i| 3 * i + 7).collect::<Vec<_>>());
    assert_eq!(
        pool.map_chunked(narrow, 0..77_777u64, 1000).unwrap(),
        (0..77_777u64).map(|x| (x % 251) as u8).collect::<Vec<_>>()
    );
    // Values wider than the arguments: a frame's values do not fit in one
    // result frame, so the worker runs it the general way (its arguments
    // copied out of the arena).
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    assert_eq!(pool.map(spread, bytes.clone()).unwrap(), bytes.iter().map(|&b| u64::from(b) << 40).collect::<Vec<_>>());
    assert_eq!(pool.map(square, 0..10).unwrap(), serial(10));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || {
                for r in 0..5u64 {
                    let n = 20_000 + 10_000 * (t + r);
                    assert_eq!(pool.map(square, 0..n).unwrap(), serial(n), "thread {t} round {r}");
                }
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    for h in threads {
        assert!(t0.elapsed() < DEADLINE);
        h.join().unwrap();
    }
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    finish(pool, &[]);
}

shmproc::task! {
    /// Fails (`Err`) at every 10 007th item and panics at every 10 009th
    /// (plain data in and out: the in-place path).
    fn spotty(x: u64) -> Result<u64, String> {
        if x % 10_007 == 5 {
            return Err(format!("{x} refused"));
        }
        if x % 10_009 == 7 {
            panic!("{x} panicked");
        }
        Ok(x ^ 0x5a5a)
    }
}

/// Items that fail or panic in the middle of frames run in place: each
/// fails alone with its message; the values before it in its frame and
/// the items after it are exact.
#[test]
fn failures_in_the_middle_of_in_place_frames_fail_alone() {
    let _watchdog = watchdog("failures_in_the_middle_of_in_place_frames_fail_alone");
    let pool = Pool::new(2).unwrap();
    const N: u64 = 120_000;
    for chunksize in [0, 1_000, 25_000] {
        let all = pool.map_results(spotty, 0..N, chunksize).unwrap();
        assert_eq!(all.len() as u64, N);
        for (i, o) in all.iter().enumerate() {
            let i = i as u64;
            match o {
                Ok(v) => assert!(i % 10_007 != 5 && i % 10_009 != 7 && *v == i ^ 0x5a5a, "item {i}: {o:?}"),
                Err(shmproc::pool::TaskError::Failed { index, message, .. }) => {
                    assert!(*index == i && i % 10_007 == 5 && message == &format!("{i} refused"), "{o:?}")
                }
                Err(shmproc::pool::TaskError::Panicked { index, message, .. }) => {
                    assert!(*index == i && i % 10_009 == 7 && message.contains(&format!("{i} panicked")), "{o:?}")
                }
                Err(e) => panic!("item {i}: {e:?}"),
            }
        }
    }
    assert_eq!(pool.map(square, 0..50_000).unwrap(), serial(50_000));
    finish(pool, &[]);
}

shmproc::task! { fn sum32(v: [u64; 32]) -> u64 { v.iter().sum() } }

/// A map whose arguments pass the size the pool keeps (32 MiB) and are
/// written whole before the first frame goes out (an iterator whose size
/// is not known: a streamed map recycles a small arena instead, see the
/// next test) gets an arena of its own, which neither the pool nor its
/// workers keep once the map is done: its segment is gone from /dev/shm
/// and from the workers' mappings (a mapping would keep its memory).
#[test]
fn an_arena_over_the_kept_size_is_let_go_after_its_map() {
    if !crate::common::dev_shm_has_room("an_arena_over_the_kept_size_is_let_go_after_its_map", 128 << 20) {
        return;
    }
    let _watchdog = watchdog("an_arena_over_the_kept_size_is_let_go_after_its_map");
    let pool = Pool::new(2).unwrap();
    let (_, before) = pool.__created();
    const N: u64 = 140_000; // 140 000 x 256 bytes: 35 MB
    // (Chained with an empty `from_fn`: its size hint has no upper bound,
    // so the map is not streamed; the lower bound sizes the arena.)
    let got = pool.map(sum32, (0..N).map(|i| [i; 32]).chain(std::iter::from_fn(|| None))).unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == 32 * i as u64));
    let (workers, after) = pool.__created();
    let arenas: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(arenas.len(), 1, "one arena for the map: {arenas:?}");
    let arena = arenas[0];
    assert!(!std::path::Path::new(&format!("/dev/shm/{}{arena}", shmproc::NAME_PREFIX)).exists(), "{arena} kept");
    // A worker lets its mapping go right after the frame that used it
    // (after sending its results: waited for, with the tests' deadline).
    for pid in workers {
        wait_until(&format!("worker {pid} to unmap {arena}"), || {
            !std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default().contains(arena.as_str())
        });
    }
    assert_eq!(pool.map(square, 0..100_000).unwrap(), serial(100_000));
    finish(pool, &[]);
}

/// A streamed map (its iterator says how many items it yields) passes its
/// arguments through a few frames' worth of arena, recycled a frame at a
/// time, however large the job: 35 MB of arguments go through one arena
/// of at most 4 MiB (it stays in the caches), which the pool keeps for
/// the next map, and every value is exact. (Before, the arena was as
/// large as the job: 8 MB of fresh lines for a million `u64`, the
/// submitting thread's largest cost, and this one was over the kept size.)
#[test]
fn a_streamed_map_recycles_a_small_arena_whatever_its_size() {
    let _watchdog = watchdog("a_streamed_map_recycles_a_small_arena_whatever_its_size");
    let pool = Pool::new(2).unwrap();
    let (_, before) = pool.__created();
    const N: u64 = 140_000; // 140 000 x 256 bytes: 35 MB
    for round in 0..2u64 {
        let got = pool.map(sum32, (0..N).map(|i| [i + round; 32])).unwrap();
        assert!(got.iter().enumerate().all(|(i, &v)| v == 32 * (i as u64 + round)), "round {round}");
        let (_, after) = pool.__created();
        let arenas: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        // The second map reuses the first one's arena.
        assert_eq!(arenas.len(), 1, "one arena for both maps: {arenas:?}");
        let path = format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, arenas[0]);
        let len = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path} kept for the next map: {e}")).len();
        // (4 MiB and the segment's header.)
        assert!(len <= (4 << 20) + 4096, "an arena of {len} bytes for a streamed map");
    }
    assert_eq!(pool.map(square, 0..100_000).unwrap(), serial(100_000));
    finish(pool, &[]);
}

/// A map whose iterator says how many items it yields is streamed: each
/// frame goes to the workers as soon as its arguments are written. Here
/// the input stops at item 400 000 until the worker running item
/// `PARK_AT` (in the second chunk, long sent) has parked and been killed
/// with SIGKILL: only that item fails (`WorkerLost`), the items of its
/// frame after it and every later chunk (written after the kill) are
/// exact, and the pool runs another map. (Before streaming, no frame went
/// out until the whole input was written: the input waited forever.)
#[test]
fn a_worker_killed_while_the_caller_still_writes_later_chunks_fails_only_its_item() {
    let _watchdog = watchdog("a_worker_killed_while_the_caller_still_writes_later_chunks_fails_only_its_item");
    let _park = park_guard();
    let file = park_file(std::process::id());
    let _ = std::fs::remove_file(&file);
    let pool = Pool::new(2).unwrap();
    const N: u64 = 600_000;
    const HOLD: u64 = 400_000;
    let mut victim = 0u32;
    let items = (0..N).inspect(|&x| {
        if x == HOLD {
            wait_until("the victim item to start", || std::fs::read_to_string(&file).is_ok_and(|s| !s.is_empty()));
            victim = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
            std::fs::remove_file(&file).unwrap();
            kill9(victim);
            wait_until("the victim to die", || !alive(victim));
        }
    });
    assert_eq!(items.size_hint(), (N as usize, Some(N as usize)), "the streamed path");
    let all = pool.map_results(park_at, items, 0).unwrap();
    assert!(victim != 0);
    only_the_parked_item_was_lost(&all, N, victim);
    assert_eq!(pool.map(square, 0..300_000).unwrap(), serial(300_000));
    finish(pool, &[victim]);
}

/// `terminate` while a streamed map is still writing its input (called
/// from its iterator, half-way): the map returns at once with an error,
/// nothing hangs, and no worker or segment is left.
#[test]
fn terminate_while_a_streamed_map_writes_its_input_returns_promptly() {
    let _watchdog = watchdog("terminate_while_a_streamed_map_writes_its_input_returns_promptly");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    assert_eq!(pool.map(square, 0..200_000).unwrap(), serial(200_000));
    let p2 = std::sync::Arc::clone(&pool);
    let items = (0..1_000_000u64).inspect(move |&x| {
        if x == 500_000 {
            p2.terminate();
        }
    });
    let r = pool.map(square, items);
    assert!(matches!(r, Err(PoolError::Closed) | Err(PoolError::Task(TaskError::Terminated { .. }))), "{r:?}");
    let (workers, names) = pool.__created();
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    pool.join().unwrap();
    drop(pool);
    super::all_gone(workers, names);
}

/// Streamed maps whose iterators yield fewer or more items than their
/// exact size hints say, on both sides of the arena's room and of frame
/// and chunk boundaries, with explicit chunk sizes too: every item runs
/// once, in order.
///
/// One watchdog per map, scaled to its round trips: the 150 000 items of
/// chunk size 1 take 7.7 s on an idle 2-core machine but over 110 s with
/// two busy loops beside them, so one 120 s watchdog for the whole test
/// failed the binary (2 of 3 loaded runs) with no hang. Still a hang
/// detector: a map that never returns fails the binary.
#[test]
fn streamed_maps_take_every_item_whatever_the_hint_says() {
    let test = "streamed_maps_take_every_item_whatever_the_hint_says";
    let pool = Pool::new(2).unwrap();
    for (n, hint, chunksize) in [
        (20_163, 20_163, 0),
        (20_164, 20_163, 0),
        (20_162, 20_163, 0),
        (131_072, 131_072, 0),
        (131_073, 131_072, 7),
        (300_000, 140_000, 0),
        (9_000, 140_000, 1),
        (150_000, 150_000, 1),
        (100_000, 100_000, 99_999),
    ] {
        let items = Liar { next: 0, n, hint };
        // A 2 x DEADLINE watchdog per 10 000 single-item tasks.
        let round_trips = if chunksize == 1 { n.div_ceil(10_000) as u32 } else { 1 };
        let _watchdog = watchdog_after(test, 2 * DEADLINE * round_trips);
        let got = if chunksize == 0 { pool.map(square, items) } else { pool.map_chunked(square, items, chunksize) };
        assert_eq!(got.unwrap(), serial(n), "{n} items, hint {hint}, chunksize {chunksize}");
    }
    let _watchdog = watchdog(test);
    finish(pool, &[]);
}

/// An iterator whose exact size hint is enormous (2^40 items, 8 TiB of
/// `u64`) but that yields 5 000: the arena made for the hint is capped
/// (`HINT_MAX`), so the map neither reserves terabytes in /dev/shm nor
/// allocates room for 2^40 outcomes; every item runs once, in order, on
/// both the streamed path (exact hint) and the filled one (inexact).
#[test]
fn an_enormous_size_hint_does_not_size_the_arena() {
    let _watchdog = watchdog("an_enormous_size_hint_does_not_size_the_arena");
    let pool = Pool::new(2).unwrap();
    let items = Liar { next: 0, n: 5_000, hint: 1 << 40 };
    assert_eq!(pool.map_chunked(square, items, 100).unwrap(), serial(5_000));
    struct Low(Liar);
    impl Iterator for Low {
        type Item = u64;
        fn next(&mut self) -> Option<u64> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (self.0.hint, None)
        }
    }
    let items = Low(Liar { next: 0, n: 5_000, hint: 1 << 40 });
    assert_eq!(pool.map_chunked(square, items, 100).unwrap(), serial(5_000));
    finish(pool, &[]);
}
