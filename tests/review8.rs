//! Review 8: the unbounded queue's ring accounting (memory in whole
//! pages, the limit word, ring files) and the batch wait of a blocked put.

mod common;

use shmproc::Options;

/// An unbounded queue filled until `Full` under a sweep of small memory
/// limits takes at most the limit in real memory: /dev/shm gives each
/// ring file whole pages, and the chain counted a ring as its file's
/// exact size (slots plus overhead), so two rings of 13 056 bytes under a
/// limit of 30 000 took 32 768 bytes. Every item comes back, in order.
#[test]
fn rings_under_a_memory_limit_take_at_most_the_limit_in_whole_pages() {
    let mut over = Vec::new();
    // (Limits from the smallest that works to 236 000 bytes; ring
    // headers alone, counted as 4096 bytes, took 0.6-3.3 KB past limits
    // of 106 000-220 000 before that was fixed.)
    for i in 0..36u64 {
        let limit = 26_000 + i * 6_007;
        let name = common::name(&format!("r8-mem{i}"));
        let q = shmproc::Queue::<u64>::create_unbounded(&name, limit, &Options::new()).unwrap();
        let mut n = 0u64;
        while q.put_nowait(n).is_ok() {
            n += 1;
        }
        let used = common::ring_memory(&name);
        if used > limit {
            over.push(("u64", limit, used, n));
        }
        for k in 0..n {
            assert_eq!(q.get_nowait().unwrap(), k);
        }
        let name = format!("{name}s");
        let qs = shmproc::Queue::<String>::create_unbounded(&name, limit, &Options::new()).unwrap();
        let mut m = 0u64;
        while qs.put_nowait(format!("{m:0100}")).is_ok() {
            m += 1;
        }
        let used = common::ring_memory(&name);
        if used > limit {
            over.push(("String", limit, used, m));
        }
        for k in 0..m {
            assert_eq!(qs.get_nowait().unwrap(), format!("{k:0100}"));
        }
        assert!(n > 0 && m > 0, "limit {limit}: nothing fit");
    }
    assert!(over.is_empty(), "(type, limit, ring memory, items) past the limit: {over:?}");
}

/// The largest item an unbounded queue says it takes (`TooLarge`'s
/// `max`) goes into the drained queue, under limits that round to pages
/// differently; one byte more is `TooLarge`.
#[test]
fn the_largest_item_a_limited_queue_names_fits_it() {
    for i in 0..12u64 {
        let limit = 26_000 + i * 7_919;
        let name = common::name(&format!("r8-max{i}"));
        let q = shmproc::Queue::<Vec<u8>>::create_unbounded(&name, limit, &Options::new()).unwrap();
        let max = match q.put_nowait(vec![1u8; limit as usize]) {
            Err(shmproc::TryPutError::TooLarge { max, .. }) => max,
            e => panic!("limit {limit}: {e:?}"),
        };
        for _ in 0..3 {
            q.put_nowait(vec![2u8; 10]).unwrap();
            q.get_nowait().unwrap();
        }
        // A `Vec<u8>`'s encoding is its bytes and an 8-byte length.
        let r = q.put_timeout(vec![3u8; max - 8], std::time::Duration::from_secs(10));
        assert_eq!(r.map_err(|e| e.to_string()), Ok(()), "limit {limit}, max {max}");
        assert_eq!(q.get_nowait().unwrap().len(), max - 8);
        assert!(
            matches!(q.put_nowait(vec![4u8; max - 7]), Err(shmproc::TryPutError::TooLarge { .. })),
            "limit {limit}"
        );
    }
}

/// A put blocked on a full bounded ring (the batch wait of `push_wait`:
/// a quarter of the ring, at most 64 slots, while it spins) at small and
/// odd capacities, with either wait strategy: one freed slot lets it in
/// (order kept), `close` wakes it with `Closed`, and a short deadline
/// gives `TimedOut`. (Held on main; the 30 s bounds are hang guards.)
#[test]
fn a_put_on_a_small_full_ring_goes_in_on_one_free_slot_and_honours_close_and_deadlines() {
    use shmproc::queue::{MpmcQueue, WaitStrategy};
    use std::time::Duration;
    for wait in [WaitStrategy::Blocking, WaitStrategy::BusyPoll] {
        for cap in [1u64, 2, 3, 4, 5, 8, 9, 16, 255] {
            let q = MpmcQueue::<u64>::new(cap).unwrap().with_wait(wait);
            for i in 0..cap {
                q.try_push(i).unwrap();
            }
            assert!(matches!(
                q.push_timeout(99, Duration::from_millis(5)),
                Err(shmproc::PutTimeoutError::TimedOut(99))
            ));
            let pusher = q.clone();
            let t = std::thread::spawn(move || pusher.push_timeout(cap, Duration::from_secs(30)));
            assert_eq!(q.pop_timeout(Duration::from_secs(30)), Ok(0));
            assert_eq!(t.join().unwrap(), Ok(()), "{wait:?} cap {cap}: the put did not take the one free slot");
            let mut all = vec![0; cap as usize];
            assert_eq!(q.pop_into(&mut all), cap as usize);
            assert_eq!(all, (1..=cap).collect::<Vec<_>>(), "{wait:?} cap {cap}");
            for i in 0..cap {
                q.try_push(i).unwrap();
            }
            let pusher = q.clone();
            let t = std::thread::spawn(move || pusher.push_timeout(7, Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            q.close();
            assert!(matches!(t.join().unwrap(), Err(shmproc::PutTimeoutError::Closed(7))), "{wait:?} cap {cap}");
        }
    }
}

/// A producer streaming items of every size up to the largest one a
/// small limit allows (rings of a few slots, growing frames) to a
/// consumer thread, at limits from the smallest a `Vec<u8>` queue accepts:
/// nothing lost, duplicated or torn, and no put waits for good while the
/// consumer drains. (Held; the 30 s bounds are hang guards.)
#[test]
fn items_of_every_size_up_to_the_largest_stream_through_small_limits() {
    use std::time::Duration;
    for limit in [19_000u64, 24_576, 24_577, 32_768, 40_000] {
        let name = common::name(&format!("r8-stream{limit}"));
        let Ok(q) = shmproc::Queue::<Vec<u8>>::create_unbounded(&name, limit, &Options::new()) else {
            assert!(limit < 24_576, "limit {limit} refused");
            continue;
        };
        let max = match q.put_nowait(vec![0u8; limit as usize]) {
            Err(shmproc::TryPutError::TooLarge { max, .. }) => max - 8,
            e => panic!("limit {limit}: {e:?}"),
        };
        let n = 600usize;
        let size = move |i: usize| (i * 7_919) % (max + 1);
        let item = move |i: usize| (0..size(i)).map(|k| (i + k) as u8).collect::<Vec<u8>>();
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    match q.get_timeout(Duration::from_secs(30)) {
                        Ok(v) if v == item(i) => {}
                        Ok(v) => return Err(format!("item {i}: {} bytes, not its own", v.len())),
                        Err(e) => return Err(format!("item {i}: {e}")),
                    }
                }
                Ok(())
            })
        };
        for i in 0..n {
            q.put_timeout(item(i), Duration::from_secs(30)).unwrap_or_else(|e| panic!("limit {limit}, put {i}: {e}"));
        }
        assert_eq!(consumer.join().unwrap(), Ok(()), "limit {limit}");
        assert_eq!(q.qsize(), 0);
    }
}

/// An unbounded queue created with a memory limit too small for two rings
/// says so, naming the smallest limit that works; that limit works, one
/// byte less does not. (Main said "an item of 0 bytes needs rings of at
/// least N bytes".)
#[test]
fn a_memory_limit_too_small_names_the_smallest_that_works() {
    fn smallest<T: shmproc::Handoff + std::fmt::Debug>(tag: &str) {
        let name = common::name(&format!("r8-small-{tag}"));
        let e = shmproc::Queue::<T>::create_unbounded(&name, 1_000, &Options::new()).unwrap_err().to_string();
        assert!(e.contains("memory limit of 1000 bytes is too small"), "{tag}: {e}");
        let min: u64 =
            e.rsplit("at least ").next().and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok()).unwrap_or(0);
        assert!(min > 1_000, "{tag}: {e}");
        assert!(shmproc::Queue::<T>::create_unbounded(&name, min - 1, &Options::new()).is_err(), "{tag}: {e}");
        let q = shmproc::Queue::<T>::create_unbounded(&name, min, &Options::new());
        assert!(q.is_ok(), "{tag}: {e}: {:?}", q.err());
    }
    smallest::<u64>("u64");
    smallest::<[u64; 40]>("wide");
    smallest::<String>("string");
    smallest::<Vec<u8>>("bytes");
}

/// Writes `v` at byte `off` of the segment `shm_name`; the old value.
fn write_word(shm_name: &str, off: u64, v: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let path = format!("/dev/shm/{}{shm_name}", shmproc::NAME_PREFIX);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&v.to_ne_bytes(), off).unwrap();
    u64::from_ne_bytes(b)
}

/// Offset of the memory limit word in an unbounded queue's control block.
const LIMIT_WORD: u64 = 384;

/// A hostile peer rewrites an unbounded queue's memory limit word (read
/// from shared memory by `plan`, `max_item` and the limit checks): puts of
/// small and too-large items, gets and counts return (a bounded result or
/// an error), never panic (a debug build: a failed `debug_assert` or an
/// overflow would), never hang.
#[test]
fn a_hostile_memory_limit_word_gives_bounded_results() {
    use std::time::Duration;
    let limit = 100_000u64;
    for v in [0u64, 1, 7, 4_096, 20_000, 1 << 40, (1 << 63) - 1, 1 << 63, u64::MAX] {
        let name = common::name(&format!("r8-hostile-limit-{v}"));
        let q = shmproc::Queue::<String>::create_unbounded(&name, limit, &Options::new()).unwrap();
        for k in 0..50 {
            q.put_nowait(format!("{k}")).unwrap();
        }
        assert_eq!(write_word(&name, LIMIT_WORD, v), limit, "the limit word moved: fix LIMIT_WORD");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let big = q.put_nowait("b".repeat(30_000)).map_err(|e| e.to_string());
            let huge = q.put_nowait("h".repeat(1 << 20)).map_err(|e| e.to_string());
            let small = q.put_timeout("s".into(), Duration::from_millis(20)).map_err(|e| e.to_string());
            let got = q.get_nowait().map_err(|e| e.to_string());
            (big.is_ok(), huge.is_ok(), small, got, q.qsize(), q.full())
        }));
        drop(q);
        let _ = shmproc::unlink(&name);
        match r {
            Ok(r) => eprintln!("limit word {v:#x}: {r:?}"),
            Err(_) => panic!("a limit word of {v:#x} made a call panic"),
        }
    }
}

/// Hostile ring files: the newest ring's file grown far past the limit,
/// and a foreign file under the next ring's name. Puts give `Full` (the
/// chain cannot grow) or go in, never panic or hang; every item put comes
/// back once, in order; a drained ring takes puts again.
#[test]
fn a_grown_ring_file_or_a_foreign_file_under_the_next_ring_name_loses_nothing() {
    use std::time::Duration;
    for foreign in [false, true] {
        let name = common::name(&format!("r8-ringfile-{foreign}"));
        let q = shmproc::Queue::<u64>::create_unbounded(&name, 100_000, &Options::new()).unwrap();
        let ring0 = format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, q.__ring_name(0).unwrap());
        let path1 = format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, q.__ring_name(1).unwrap());
        if foreign {
            std::fs::write(&path1, b"not a ring").unwrap();
        } else {
            std::fs::OpenOptions::new().write(true).open(&ring0).unwrap().set_len(1 << 40).unwrap();
        }
        let mut n = 0u64;
        while q.put_nowait(n).is_ok() {
            n += 1;
            assert!(n < 1 << 20, "no end to the puts");
        }
        assert!(n > 0);
        assert!(q.put_timeout(u64::MAX, Duration::from_millis(20)).is_err());
        for k in 0..n / 2 {
            assert_eq!(q.get_nowait(), Ok(k));
        }
        let mut m = n;
        while q.put_nowait(m).is_ok() {
            m += 1;
            assert!(m < 1 << 21, "no end to the puts");
        }
        assert!(m > n, "the drained slots take no puts");
        for k in n / 2..m {
            assert_eq!(q.get_nowait(), Ok(k), "foreign {foreign}");
        }
        assert!(q.get_nowait().is_err());
        drop(q);
        let _ = std::fs::remove_file(&path1);
        let _ = shmproc::unlink(&name);
    }
}
