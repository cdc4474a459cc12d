//! Unbounded queues (issue 11, item 2): `Queue::new(0)` grows as a chain
//! of rings that every process follows; a memory limit makes it full,
//! never a SIGBUS; a producer that dies mid-link stalls nobody; nothing
//! is left in /dev/shm.

mod common;

use std::time::Duration;

use shmproc::{GetTimeoutError, JoinableQueue, Process, PutTimeoutError, Queue, TryGetError, TryPutError};

use common::{scrub, segments_of};

/// 10 million items, the figure (about 30 s in a debug build): the
/// test's name says so, so it runs them in every run.
fn items() -> u64 {
    10_000_000
}

shmproc::entry! {
    fn put_count(args: (Queue<u64>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            q.put_nowait(i).map_err(|e| format!("put {i}: {e}"))?;
        }
        Ok(())
    }
}

shmproc::entry! {
    fn drain_count(args: (Queue<u64>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            let v = q.get_timeout(Duration::from_secs(60)).map_err(|e| format!("get {i}: {e}"))?;
            if v != i {
                return Err(format!("got {v}, expected {i}"));
            }
        }
        match q.get_nowait() {
            Err(TryGetError::Empty) => Ok(()),
            r => Err(format!("after the last item: {r:?}")),
        }
    }
}

#[test]
fn an_unbounded_queue_takes_ten_million_items_with_no_consumer_then_drains_in_order_elsewhere() {
    // 10 million slots of 16 bytes (a sequence word and the item), in rings.
    if !common::dev_shm_has_room("an_unbounded_queue_takes_ten_million_items_...", 256 << 20) {
        return;
    }
    let q = Queue::<u64>::new(0).unwrap();
    assert_eq!(q.maxsize(), 0);
    let mut producer = Process::new(put_count, (q.clone(), items()));
    producer.start().unwrap();
    common::join(&producer).unwrap();
    assert_eq!(producer.exitcode(), Some(0), "the producer never blocks nor fails");
    assert_eq!(q.qsize() as u64, items());
    assert!(segments_of(q.name()).len() > 2, "the chain grew: {:?}", segments_of(q.name()));

    let mut consumer = Process::new(drain_count, (q.clone(), items()));
    consumer.start().unwrap();
    common::join(&consumer).unwrap();
    assert_eq!(consumer.exitcode(), Some(0));
    assert!(q.empty());
    // Drained rings were retired and unlinked on the way: only the
    // control segment and the newest ring are left.
    assert!(segments_of(q.name()).len() <= 2, "{:?}", segments_of(q.name()));
    let name = q.name().to_owned();
    drop(q);
    assert_eq!(segments_of(&name), Vec::<String>::new(), "the creator's drop removes every name");
}

#[test]
fn an_unbounded_string_queue_grows_its_frames_for_large_items_in_order() {
    let q = Queue::<String>::new(0).unwrap();
    let sizes = [0usize, 10, 100, 1_000, 70_000, 5, 300_000, 64];
    for (i, n) in sizes.iter().enumerate() {
        q.put(format!("{i}:{}", "s".repeat(*n))).unwrap();
    }
    let other = Queue::<String>::open(q.name()).unwrap();
    for (i, n) in sizes.iter().enumerate() {
        assert_eq!(other.get().unwrap(), format!("{i}:{}", "s".repeat(*n)));
    }
    assert!(other.empty());
    let name = q.name().to_owned();
    drop((q, other));
    assert_eq!(segments_of(&name), Vec::<String>::new());
}

#[test]
fn the_memory_limit_makes_an_unbounded_queue_full_until_drained() {
    let q = Queue::<u64>::unbounded_with_limit(256 << 10).unwrap();
    let mut n = 0u64;
    while q.put_nowait(n).is_ok() {
        n += 1;
        assert!(n < 10_000_000, "the limit is not enforced");
    }
    assert!(n > 1000, "{n}");
    assert!(q.full());
    assert_eq!(q.put_nowait(n), Err(TryPutError::Full(n)));
    assert_eq!(q.put_timeout(n, Duration::from_millis(50)), Err(PutTimeoutError::TimedOut(n)));
    // Draining retires rings and gives their memory back.
    for i in 0..n {
        assert_eq!(q.get_nowait(), Ok(i));
    }
    q.put_timeout(n, Duration::from_secs(30)).unwrap();
    assert_eq!(q.get(), Ok(n));
}

#[test]
fn a_producer_that_sealed_a_ring_and_died_before_linking_stalls_nobody() {
    let q = Queue::<String>::new(0).unwrap();
    q.put("a".into()).unwrap();
    q.__seal_newest(); // as a producer killed between seal and link
    // A consumer drains the sealed ring and links the successor itself.
    assert_eq!(q.get().as_deref(), Ok("a"));
    assert_eq!(q.get_timeout(Duration::from_millis(20)), Err(GetTimeoutError::TimedOut));
    q.__seal_newest();
    // A producer finds the newest ring sealed and links the successor.
    q.put("b".into()).unwrap();
    assert_eq!(q.get().as_deref(), Ok("b"));
}

#[test]
fn close_all_on_an_unbounded_queue_drains_then_reports_closed() {
    let q = Queue::<u64>::new(0).unwrap();
    let other = q.clone();
    for i in 0..10_000 {
        q.put(i).unwrap();
    }
    q.close_all();
    assert!(matches!(other.put(1), Err(shmproc::PutError::Closed(1))));
    for i in 0..10_000 {
        assert_eq!(other.get(), Ok(i));
    }
    assert_eq!(other.get(), Err(shmproc::GetError::Closed));
}

#[test]
fn an_unbounded_joinable_queue_counts_tasks() {
    let q = JoinableQueue::<String>::new(0).unwrap();
    q.put("a".into()).unwrap();
    q.put("b".into()).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    assert!(!q.join_timeout(Duration::from_millis(10)));
    q.get().unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert!(q.task_done().is_err());
    assert!(q.join_timeout(Duration::from_secs(1)));
}

shmproc::entry! {
    /// Gets `n` items in order from 0 and marks each done.
    fn get_and_confirm(args: (JoinableQueue<u64>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            match q.get_timeout(Duration::from_secs(30)) {
                Ok(v) if v == i => q.task_done().map_err(|e| e.to_string())?,
                r => return Err(format!("item {i}: {r:?}")),
            }
        }
        Ok(())
    }
}

/// The unbounded JoinableQueue's count is read from its rings (each
/// ring's claims, and a base folded into the successor when a ring is
/// retired): across several rings, retired by another process, it stays
/// exact at every step, and `join` returns at the end.
#[test]
fn an_unbounded_joinable_queue_counts_exactly_across_retired_rings() {
    const N: u64 = 60_000; // rings 0..=3 at least (4096, 8192, 16384, 32768 slots)
    let q = JoinableQueue::<u64>::new(0).unwrap();
    for i in 0..N {
        q.put(i).unwrap();
    }
    assert!(segments_of(q.name()).len() > 3, "the chain grew: {:?}", segments_of(q.name()));
    assert_eq!(q.unfinished_tasks(), N);
    // Another process takes and confirms the first 20 000: three rings retired.
    let mut consumer = Process::new(get_and_confirm, (q.clone(), 20_000u64));
    consumer.start().unwrap();
    common::join(&consumer).unwrap();
    assert_eq!(consumer.exitcode(), Some(0));
    assert_eq!(q.unfinished_tasks(), N - 20_000);
    assert_eq!(q.qsize() as u64, N - 20_000);
    for i in 20_000..N {
        assert_eq!(q.get_timeout(Duration::from_secs(30)), Ok(i));
        assert_eq!(q.unfinished_tasks(), N - i, "an item got and not done stays counted");
        q.task_done().unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.task_done().is_err());
    assert!(q.join_timeout(Duration::from_secs(30)));
}

shmproc::entry! {
    fn put_strings_unbounded(args: (Queue<String>, u64, u64)) -> Result<(), String> {
        let (q, tag, n) = args;
        for i in 0..n {
            q.put(format!("{tag}:{i}")).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn two_producers_into_an_unbounded_queue_keep_their_order_across_rings() {
    const N: u64 = 200_000;
    let q = Queue::<String>::new(0).unwrap();
    let mut ps: Vec<_> = (0..2u64).map(|t| Process::new(put_strings_unbounded, (q.clone(), t, N))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut next = [0u64; 2];
    while next != [N, N] {
        let v = q.get_timeout(Duration::from_secs(60)).unwrap();
        let (t, i) = v.split_once(':').unwrap();
        let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "producer {t}");
        next[t] += 1;
    }
    for p in &ps {
        common::join(p).unwrap();
    }
    assert!(q.empty());
}

#[test]
fn the_rings_of_an_unbounded_queue_take_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("unbounded-mode-{}", std::process::id());
    let q = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new().mode(0o640)).unwrap();
    q.put("x".repeat(10_000)).unwrap(); // a second ring, made for a larger frame
    let files = segments_of(&name);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let mode = std::fs::metadata(format!("/dev/shm/{f}")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{f}");
    }
}

// Each `open` below attaches as another process does (its own mapping of
// the control segment and rings, its own count in the control block).

#[test]
fn items_survive_the_creator_dropping_its_handle_while_others_use_the_queue() {
    const M: u64 = 20_000; // ring 0 of a u64 chain holds 4096
    let q = Queue::<u64>::new(0).unwrap();
    let name = q.name().to_owned();
    let producer = Queue::<u64>::open(&name).unwrap();
    let consumer = Queue::<u64>::open(&name).unwrap();
    assert_eq!(consumer.get_nowait(), Err(TryGetError::Empty)); // it has mapped ring 0
    for i in 0..M {
        producer.put(i).unwrap();
    }
    assert_eq!(producer.qsize() as u64, M);
    drop(q); // the creator leaves; the others go on
    let mut got = 0u64;
    let last = loop {
        match consumer.get_nowait() {
            Ok(v) => {
                assert_eq!(v, got);
                got += 1;
            }
            Err(e) => break e,
        }
    };
    drop((producer, consumer));
    let left = scrub(&name);
    assert_eq!(got, M, "items put and never delivered; the consumer's last get said {last:?}");
    assert_eq!(left, Vec::<String>::new(), "left in /dev/shm after every handle dropped");
}

#[test]
fn rings_created_after_the_creator_dropped_are_removed_by_the_last_handle() {
    let q = Queue::<u64>::new(0).unwrap();
    let name = q.name().to_owned();
    let producer = Queue::<u64>::open(&name).unwrap();
    producer.put(0).unwrap();
    drop(q);
    for i in 1..20_000 {
        producer.put(i).unwrap();
    }
    drop(producer);
    let left = scrub(&name);
    assert_eq!(left, Vec::<String>::new(), "left in /dev/shm after every handle dropped");
}

/// The /dev/shm path of ring `k` of the unbounded queue `q` (its names
/// carry a keyed tag: only a handle knows them).
fn ring_path(q: &Queue<u64>, k: u64) -> String {
    format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, q.__ring_name(k).expect("an unbounded queue"))
}

#[test]
fn a_successor_ring_name_left_half_created_stalls_nobody_and_get_timeout_keeps_its_deadline() {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!("unbounded-wedge-{}", std::process::id());
    let q = Queue::<u64>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();
    // What a producer killed right after shm_open(O_CREAT|O_EXCL) of ring 1
    // left under the old scheme: an empty file under the ring's name.
    let path = ring_path(&q, 1);
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    // And what one killed between creating and linking leaves now: a
    // temporary name, to be removed with the queue.
    let temp = format!("{path}.t999999x0");
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).unwrap();
    let mut n = 0u64;
    let err = loop {
        match q.put_nowait(n) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    for i in 0..n {
        assert_eq!(q.get_nowait(), Ok(i));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let c = q.clone();
    std::thread::spawn(move || {
        let got = c.get_timeout(Duration::from_millis(100));
        // Dropped before the answer: the scrub below must find no handle.
        drop(c);
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(60));
    let _ = std::fs::remove_file(&path);
    drop(q);
    let left = scrub(&name);
    assert!(matches!(err, TryPutError::Full(_)), "put_nowait into an open unbounded queue that cannot grow: {err:?}");
    assert_eq!(got, Ok(Err(GetTimeoutError::TimedOut)), "get_timeout(100 ms) on the drained queue (60 s given)");
    assert_eq!(left, Vec::<String>::new(), "left in /dev/shm");
}

shmproc::entry! {
    fn create_put_and_hang(args: (String, shmproc::Event)) -> Result<(), String> {
        let (name, ready) = args;
        let q = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).map_err(|e| e.to_string())?;
        q.put("stale item of a dead queue".into()).map_err(|e| e.to_string())?;
        ready.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
fn a_queue_created_again_after_its_creator_was_killed_and_the_name_unlinked_starts_empty_with_no_ring_left() {
    let name = format!("unbounded-stale-{}", std::process::id());
    let ready = shmproc::Event::new().unwrap();
    let mut p = Process::new(create_put_and_hang, (name.clone(), ready.clone())).with_daemon(true);
    p.start().unwrap();
    let set = ready.wait_timeout(Duration::from_secs(60));
    p.kill().unwrap();
    let _ = common::join(&p);
    assert!(set, "the child did not create the queue within 60 s");
    shmproc::unlink(&name).unwrap();
    let leaked = segments_of(&name);
    let q = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();
    let first = q.get_nowait();
    drop(q);
    let left = scrub(&name);
    assert_eq!(first, Err(TryGetError::Empty), "a brand-new queue delivered an item (leaked rings: {leaked:?})");
    assert_eq!(leaked, Vec::<String>::new(), "rings left in /dev/shm by the killed creator after unlink(name)");
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn unlinking_a_persisted_unbounded_queue_removes_its_rings_and_a_new_one_starts_empty() {
    let name = format!("unbounded-persist-{}", std::process::id());
    let q = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();
    q.put("from the removed queue".into()).unwrap();
    q.persist();
    drop(q);
    shmproc::unlink(&name).unwrap();
    let left = segments_of(&name);
    let again = Queue::<String>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).unwrap();
    let first = again.get_nowait();
    drop(again);
    scrub(&name);
    assert_eq!(first, Err(TryGetError::Empty), "a new queue served an item of a removed one");
    assert_eq!(left, Vec::<String>::new(), "unlink(name) left these");
}

/// Bytes of this queue's segments in /dev/shm.
fn bytes_of(name: &str) -> u64 {
    segments_of(name).iter().filter_map(|f| std::fs::metadata(format!("/dev/shm/{f}")).ok()).map(|m| m.len()).sum()
}

#[test]
fn the_memory_limit_bounds_the_rings_bytes_over_fill_and_drain_cycles() {
    const LIMIT: u64 = 1 << 20;
    let q = Queue::<u64>::unbounded_with_limit(LIMIT).unwrap();
    let name = q.name().to_owned();
    let (mut most, mut log) = (0u64, Vec::new());
    for _round in 0..9 {
        let mut n = 0u64;
        while q.put_nowait(n).is_ok() {
            n += 1;
        }
        let b = bytes_of(&name);
        most = most.max(b);
        log.push((n, b));
        for i in 0..n {
            assert_eq!(q.get_nowait(), Ok(i));
        }
        if most > 16 * LIMIT {
            break;
        }
    }
    drop(q);
    scrub(&name);
    // The control segment is not counted in the limit (one page or so).
    assert!(
        most <= LIMIT + (64 << 10),
        "a queue limited to {LIMIT} bytes took {most} bytes; (items, bytes) per fill: {log:?}"
    );
    assert!(log.iter().all(|&(n, _)| n > 10_000), "(items, bytes) per fill: {log:?}");
}

#[test]
fn an_item_that_cannot_fit_the_memory_limit_is_refused_as_too_large() {
    const LIMIT: u64 = 1 << 20;
    let q = Queue::<String>::unbounded_with_limit(LIMIT).unwrap();
    let name = q.name().to_owned();
    let big = "x".repeat(8 << 20);
    let r = q.put_nowait(big.clone());
    let r2 = q.put_timeout(big.clone(), Duration::from_secs(30));
    let bytes = bytes_of(&name);
    q.put("fits".into()).unwrap();
    let got = q.get_nowait();
    drop(q);
    scrub(&name);
    let Err(TryPutError::TooLarge { item, len, max }) = r else { panic!("{:?}", r.map_err(|e| e.to_string())) };
    assert_eq!((item == big, len), (true, big.len() + 8), "the item back, with its encoded length");
    assert!(max < len && (max as u64) < LIMIT / 2, "the limit: {max}");
    assert_eq!(r2, Err(PutTimeoutError::TooLarge { item: big, len, max }));
    assert!(bytes <= LIMIT + (64 << 10), "a queue limited to {LIMIT} bytes took {bytes} bytes of /dev/shm");
    assert_eq!(got.as_deref(), Ok("fits"));
}

/// The `max` an unbounded queue's `TooLarge` reports is exact: an item
/// whose encoding is `max` bytes goes in (on an empty queue), one of
/// `max + 1` bytes is refused.
#[test]
fn an_unbounded_queues_too_large_limit_is_exact() {
    const LIMIT: u64 = 1 << 20;
    let q = Queue::<String>::unbounded_with_limit(LIMIT).unwrap();
    let name = q.name().to_owned();
    let Err(TryPutError::TooLarge { max, .. }) = q.put_nowait("x".repeat(LIMIT as usize)) else {
        panic!("not TooLarge")
    };
    let over = q.put_nowait("x".repeat(max - 8 + 1)).map_err(|e| e.to_string());
    let at = q.put_nowait("x".repeat(max - 8)).map_err(|e| e.to_string());
    let got = q.get_nowait().map(|s| s.len());
    drop(q);
    scrub(&name);
    assert!(over.as_ref().is_err_and(|m| m.contains(&format!("({} bytes)", max + 1))), "{over:?}");
    assert_eq!(at, Ok(()), "an item of exactly max = {max} bytes");
    assert_eq!(got, Ok(max - 8));
}

/// CPU time of this process so far, in ms (user + system).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after.split(' ').skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (f[0] + f[1]) * 1000 / hz
}

shmproc::entry! {
    fn fill_drain_and_wait(q: Queue<u64>) -> Result<(), String> {
        // /dev/shm "full" for this process: RLIMIT_FSIZE fails the next
        // ring's reservation (EFBIG, the same NoSpace).
        // SAFETY: plain libc calls on this child process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 100 << 10, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
        let mut n = 0u64;
        let err = loop {
            match q.put_nowait(n) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        if !matches!(err, TryPutError::Full(_)) {
            return Err(format!("put_nowait #{n} with /dev/shm full: {err:?}"));
        }
        for i in 0..n {
            if q.get_nowait() != Ok(i) {
                return Err(format!("item {i}"));
            }
        }
        let before = cpu_ms();
        let r = q.get_timeout(Duration::from_secs(1));
        let used = cpu_ms() - before;
        if r != Err(GetTimeoutError::TimedOut) {
            return Err(format!("get_timeout on the drained queue: {r:?}"));
        }
        // Asleep, it uses next to nothing; a spin takes most of the second.
        if used > 300 {
            return Err(format!("a get blocked for 1 s on an empty queue burned {used} ms of CPU"));
        }
        Ok(())
    }
}

#[test]
fn a_get_on_an_empty_unbounded_queue_with_dev_shm_full_sleeps() {
    let q = Queue::<u64>::new(0).unwrap();
    let mut p = Process::new(fill_drain_and_wait, q.clone());
    p.start().unwrap();
    let _ = common::join(&p);
    assert_eq!(p.exitcode(), Some(0), "the child failed (its stderr says why)");
}

#[test]
fn an_unbounded_joinable_queue_counts_a_put_before_its_item_can_be_got() {
    // One CPU for both threads: the consumer woken by the put's futex wake
    // may run before the producer returns from put.
    // SAFETY: plain libc call on this thread (the threads spawned below inherit it).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    const N: u64 = 20_000;
    let q = JoinableQueue::<u64>::new(0).unwrap();
    let c = q.clone();
    let consumer = std::thread::spawn(move || {
        let (mut refused, mut unfinished_zero) = (0u64, 0u64);
        for _ in 0..N {
            c.get_timeout(Duration::from_secs(60)).unwrap(); // the producer's put wakes it
            if c.unfinished_tasks() == 0 {
                unfinished_zero += 1; // the item we hold is not counted
            }
            if c.task_done().is_err() {
                refused += 1;
            }
        }
        (refused, unfinished_zero)
    });
    for i in 0..N {
        std::thread::sleep(Duration::from_micros(20)); // let the consumer fall asleep
        q.put(i).unwrap();
    }
    let (refused, unfinished_zero) = consumer.join().unwrap();
    assert_eq!((refused, unfinished_zero), (0, 0), "task_done refused, unfinished_tasks() == 0 while holding an item");
    assert!(q.join_timeout(Duration::from_secs(60)));
}

shmproc::entry! {
    fn create_fill_and_leave(args: (String, u64, shmproc::Event, shmproc::Event)) -> Result<(), String> {
        let (name, n, created, opened) = args;
        let q = Queue::<u64>::create_unbounded(&name, 1 << 30, &shmproc::Options::new()).map_err(|e| e.to_string())?;
        created.set();
        if !opened.wait_timeout(Duration::from_secs(60)) {
            return Err("the parent did not open the queue within 60 s".into());
        }
        for i in 0..n {
            q.put(i).map_err(|e| e.to_string())?;
        }
        Ok(()) // the creator's handle drops here: its process leaves first
    }
}

#[test]
fn a_creator_process_that_exits_first_takes_no_ring_from_the_consumer_process() {
    const M: u64 = 20_000; // several rings
    let name = format!("unbounded-creator-leaves-{}", std::process::id());
    let (created, opened) = (shmproc::Event::new().unwrap(), shmproc::Event::new().unwrap());
    let mut p = Process::new(create_fill_and_leave, (name.clone(), M, created.clone(), opened.clone()));
    p.start().unwrap();
    assert!(created.wait_timeout(Duration::from_secs(60)), "the child did not create the queue within 60 s");
    let q = Queue::<u64>::open(&name).unwrap();
    opened.set();
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let mut got = 0u64;
    let last = loop {
        match q.get_nowait() {
            Ok(v) => {
                assert_eq!(v, got);
                got += 1;
            }
            Err(e) => break e,
        }
    };
    drop(q);
    let left = scrub(&name);
    assert_eq!(got, M, "items put by the exited creator and lost; the last get said {last:?}");
    assert_eq!(left, Vec::<String>::new(), "left in /dev/shm after the last handle dropped");
}
