//! Review 24: the pool's features together with failures (imap with
//! backpressure and broken inputs, per-task timeouts, callbacks, workers
//! that exit/abort/fork/ignore SIGTERM, pools in loops and threads).
//! No defect was found by these in review 24; they stay as coverage of
//! the combinations tried. Every blocking wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use shmproc::Pool;
use shmproc::pool::{PoolError, TaskError};

shmproc::task! { fn r24_sq(x: u64) -> u64 { x * x } }
shmproc::task! { fn r24_nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms } }
shmproc::task! { fn r24_pid(_x: u64) -> u32 { std::process::id() } }
shmproc::task! { fn r24_exit(x: u64) -> u64 { if x == 3 { std::process::exit(0) } x } }
shmproc::task! { fn r24_abort(x: u64) -> u64 { if x == 3 { std::process::abort() } x } }
shmproc::task! { fn r24_panic_any(x: u64) -> u64 { if x == 3 { std::panic::panic_any(42u32) } x } }
shmproc::task! { fn r24_add((a, b): (u64, u64)) -> u64 { a + b } }
shmproc::task! {
    fn r24_stubborn(_x: u64) -> u64 {
        // SAFETY: SIG_IGN for SIGTERM touches no memory of ours.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        loop { std::thread::sleep(Duration::from_secs(1)) }
    }
}

const DEADLINE: Duration = Duration::from_secs(60);

/// The leak test counts the process's descriptors and /dev/shm entries:
/// it runs alone (write), the others together (read).
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_turn() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|p| p.into_inner())
}

fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn all_gone(created: (Vec<u32>, Vec<String>)) {
    let (pids, names) = created;
    for p in pids {
        assert!(!alive(p), "worker {p} still running");
    }
    for n in names {
        let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
        assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
    }
}

fn close_join(pool: Pool) {
    let created = pool.__created();
    within("close+join", move || {
        pool.close();
        pool.join().unwrap();
        drop(pool);
    });
    all_gone(created);
}

struct Panicky(u64);
impl Iterator for Panicky {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.0 += 1;
        if self.0 == 6 {
            panic!("input broke");
        }
        Some(self.0)
    }
}

#[test]
fn panicking_input() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = Arc::clone(&pool);
    let r = within("imap", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.imap(r24_sq, Panicky(0)).unwrap().max_in_flight(2).count()
        }))
    });
    assert!(r.is_err());
    let p = Arc::clone(&pool);
    let r = within("imap_unordered", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.imap_unordered(r24_sq, Panicky(0)).unwrap().chunksize(3).count()
        }))
    });
    assert!(r.is_err());
    assert_eq!(
        within("apply", {
            let p = Arc::clone(&pool);
            move || p.apply(r24_sq, 3)
        }),
        Ok(9)
    );
    close_join(Arc::into_inner(pool).unwrap());
}

#[test]
fn pool_dropped_under_imap_and_async() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let created = pool.__created();
    let mut it = pool.imap(r24_nap, std::iter::repeat(100_000u64)).unwrap().max_in_flight(3);
    let ar = pool.apply_async(r24_nap, 100_000).unwrap();
    let ready = within("drop", move || {
        drop(pool);
        let a = ar.ready();
        (a, ar.get(), it.next(), it.next())
    });
    assert!(ready.0);
    assert_eq!(ready.1, Err(PoolError::Task(TaskError::Terminated { index: 0 })));
    assert_eq!((ready.2, ready.3), (Some(Err(TaskError::NotSubmitted { index: 0 })), None));
    all_gone(created);
}

#[test]
fn terminate_from_thread_while_consumer_waits() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(2).unwrap());
    let created = pool.__created();
    let p = Arc::clone(&pool);
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        p.terminate();
    });
    let p = Arc::clone(&pool);
    let got =
        within("imap", move || p.imap(r24_nap, std::iter::repeat(100_000u64)).unwrap().take(10).collect::<Vec<_>>());
    assert!(
        got.iter().all(|r| matches!(r, Err(TaskError::Terminated { .. } | TaskError::NotSubmitted { .. }))),
        "{got:?}"
    );
    h.join().unwrap();
    drop(pool);
    all_gone(created);
}

#[test]
fn close_join_from_thread_while_slow_consumer() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(2).unwrap());
    let created = pool.__created();
    let mut it = pool.imap(r24_sq, 0u64..).unwrap().max_in_flight(4);
    assert_eq!(it.next(), Some(Ok(0)));
    let p = Arc::clone(&pool);
    let h = std::thread::spawn(move || {
        p.close();
        p.join()
    });
    std::thread::sleep(Duration::from_millis(300));
    let rest = within("rest", move || it.take(100).collect::<Vec<_>>());
    // Ok items, then (if join cut the input first) one NotSubmitted.
    let ok = rest.iter().take_while(|r| r.is_ok()).count();
    assert!(
        rest.len() == ok || (rest.len() == ok + 1 && matches!(rest[ok], Err(TaskError::NotSubmitted { .. }))),
        "{rest:?}"
    );
    within("join", move || h.join().unwrap()).unwrap();
    drop(pool);
    all_gone(created);
}

#[test]
fn exit_abort_panic_any() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let (a, b, c) = within("maps", {
        move || {
            let a = pool.map_results(r24_exit, 0..6u64, 1).unwrap();
            let b = pool.map_results(r24_abort, 0..6u64, 2).unwrap();
            let c = pool.map_results(r24_panic_any, 0..6u64, 0).unwrap();
            close_join(pool);
            (a, b, c)
        }
    });
    assert!(matches!(a[3], Err(TaskError::WorkerLost { signal: None, index: 3, .. })), "{a:?}");
    assert!(matches!(b[3], Err(TaskError::WorkerLost { index: 3, .. })), "{b:?}");
    assert!(matches!(c[3], Err(TaskError::Panicked { index: 3, .. })), "{c:?}");
}

#[test]
fn stubborn_terminate_and_timeout() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let created = pool.__created();
    let r = within("timeout", move || {
        let t = pool.apply_async(r24_stubborn, 0).unwrap().timeout(Duration::from_millis(200)).get();
        let r = pool.apply_async(r24_stubborn, 0).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        pool.terminate();
        (t, r.ready(), r.get())
    });
    assert!(matches!(r.0, Err(PoolError::Task(TaskError::TimedOut { .. }))));
    assert!(r.1);
    all_gone(created);
}

#[test]
fn cancel_states() {
    let _turn = shared_turn();
    let pool = Pool::new(1).unwrap();
    let r = within("cancel", move || {
        let done = pool.apply_async(r24_sq, 3).unwrap();
        done.wait();
        done.cancel();
        let running = pool.apply_async(r24_nap, 100_000).unwrap();
        let queued = pool.apply_async(r24_sq, 4).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        queued.cancel();
        running.cancel();
        let after = pool.apply(r24_sq, 5);
        let out = (done.get(), running.get(), queued.get(), after);
        close_join(pool);
        out
    });
    assert_eq!(r.0, Ok(9));
    assert_eq!(r.1, Err(PoolError::Task(TaskError::Cancelled { index: 0 })));
    assert_eq!(r.2, Err(PoolError::Task(TaskError::Cancelled { index: 0 })));
    assert_eq!(r.3, Ok(25));
}

#[test]
fn python_semantics() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let r = within("py", move || {
        let e: Vec<u64> = pool.map(r24_sq, Vec::<u64>::new()).unwrap();
        let e2: Vec<_> = pool.imap(r24_sq, Vec::<u64>::new()).unwrap().collect();
        let e3: Vec<_> = pool.imap_unordered(r24_sq, Vec::<u64>::new()).unwrap().collect();
        let e4 = pool.map_async(r24_sq, Vec::<u64>::new()).unwrap().get();
        let s = pool.starmap(r24_add, [(1, 2), (3, 4)]).unwrap();
        let ar = pool.apply_async(r24_nap, 300).unwrap();
        let succ = ar.successful();
        close_join(pool);
        (e, e2.len(), e3.len(), e4, s, succ)
    });
    assert_eq!(r, (vec![], 0, 0, Ok(vec![]), vec![3, 7], None));
}

#[test]
fn loop_leaks() {
    let _alone = ALONE.write().unwrap_or_else(|p| p.into_inner());
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let shm = || std::fs::read_dir("/dev/shm").unwrap().count();
    within("loop", move || {
        {
            let p = Pool::new(2).unwrap();
            p.map(r24_sq, 0..10u64).unwrap();
        }
        let (f0, s0) = (fds(), shm());
        for i in 0..15 {
            let p = Pool::new(2).unwrap();
            let _ = p.map(r24_sq, 0..100u64).unwrap();
            let mut it = p.imap(r24_nap, std::iter::repeat(10_000)).unwrap();
            if i % 2 == 0 {
                let _ = it.next_timeout(Duration::from_millis(1));
            }
            let ar = p.apply_async(r24_nap, 10_000).unwrap();
            ar.then(|_| {});
            let c = p.__created();
            drop(p);
            drop(it);
            all_gone(c);
        }
        assert_eq!((fds(), shm()), (f0, s0));
    });
}

#[test]
fn pools_in_threads() {
    let _turn = shared_turn();
    within("threads", move || {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                std::thread::spawn(move || {
                    let method = if i % 2 == 0 {
                        shmproc::process::StartMethod::Fork
                    } else {
                        shmproc::process::StartMethod::Spawn
                    };
                    let p = Pool::builder().processes(2).start_method(method).build().unwrap();
                    let v = p.map(r24_sq, 0..200u64).unwrap();
                    let c = p.__created();
                    close_join(p);
                    all_gone(c);
                    v[199]
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 199 * 199);
        }
    });
}

#[test]
fn callbacks() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(2).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(&pool);
    let tx2 = tx.clone();
    pool.apply_async(r24_sq, 2).unwrap().then(move |_| panic!("callback panics"));
    pool.apply_async(r24_sq, 3).unwrap().then(move |r| {
        let inner = p.apply(r24_sq, r.unwrap());
        tx.send(inner).unwrap();
    });
    pool.apply_async(r24_sq, 3).unwrap().then(move |r| tx2.send(r).unwrap());
    let got = within("callbacks", move || [rx.recv().unwrap(), rx.recv().unwrap()]);
    let mut got = got.map(Result::unwrap);
    got.sort();
    assert_eq!(got, [9, 81]);
    // The callback that applied from inside holds a clone of the pool until
    // it returns, just after its send: wait for it to let go.
    let mut pool = pool;
    let t = std::time::Instant::now();
    let pool = loop {
        match Arc::try_unwrap(pool) {
            Ok(p) => break p,
            Err(still_shared) => {
                assert!(t.elapsed() < std::time::Duration::from_secs(60), "a callback kept the pool");
                pool = still_shared;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    };
    close_join(pool);
}

#[test]
fn huge_n() {
    let _turn = shared_turn();
    for n in [usize::MAX, 1usize << 40, 1 << 30] {
        let r = Pool::new(n);
        assert!(r.is_err());
    }
}

shmproc::task! {
    fn r24_init_once(slot: shmproc::Value<u32>) -> () {
        let n = slot.get().unwrap() + 1;
        let _ = slot.set(n);
        if n > 1 {
            panic!("initializer fails on a replacement");
        }
    }
}

#[test]
fn init_fails_on_replacement() {
    let _turn = shared_turn();
    let slot = shmproc::Value::new(0u32).unwrap();
    let pool =
        Pool::builder().processes(1).maxtasksperchild(1).initializer(r24_init_once, slot.clone()).build().unwrap();
    let created = pool.__created();
    let r = within("maps", move || {
        let a = pool.map_results(r24_sq, 0..6u64, 2).unwrap();
        let b = pool.apply_async(r24_sq, 7).unwrap().get_timeout(Duration::from_secs(20));
        let b = b.map_err(|e| format!("{e:?}"));
        close_join(pool);
        (a, b)
    });
    assert_eq!(&r.0[..2], [Ok(0), Ok(1)]);
    assert!(r.0[2..].iter().all(|x| matches!(x, Err(TaskError::Refused { .. }))), "{:?}", r.0);
    assert!(r.1.is_err());
    all_gone(created);
}

shmproc::task! {
    fn r24_forks(x: u64) -> u64 {
        // SAFETY: getpid(2) touches no memory.
        let worker = unsafe { libc::getpid() };
        // SAFETY: the child only makes async-signal-safe calls, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above. It dies with the worker (PDEATHSIG), so
            // nothing outlives the test.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == worker {
                    libc::sleep(20);
                }
                libc::_exit(0)
            };
        }
        if x == 3 {
            std::process::exit(0);
        }
        x
    }
}

#[test]
fn task_forks() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let r = within("forks", move || {
        let a = pool.map_results(r24_forks, 0..6u64, 1).unwrap();
        close_join(pool);
        a
    });
    assert!(matches!(r[3], Err(TaskError::WorkerLost { index: 3, .. })));
}

#[test]
fn last_pool_handle_dropped_in_callback() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(1).unwrap());
    let created = pool.__created();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(&pool);
    pool.apply_async(r24_nap, 300).unwrap().then(move |r| {
        drop(p);
        tx.send(r).unwrap();
    });
    drop(pool);
    let got = within("cb", move || rx.recv().unwrap());
    assert_eq!(got, Ok(300));
    std::thread::sleep(Duration::from_millis(500));
    all_gone(created);
}

#[test]
fn last_pool_handle_dropped_in_callback_after_finish() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(1).unwrap());
    let created = pool.__created();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(&pool);
    let ar = pool.apply_async(r24_nap, 300).unwrap();
    let p2 = Arc::clone(&pool);
    ar.then(move |r| {
        std::thread::sleep(Duration::from_millis(300));
        drop(p);
        tx.send(r).unwrap();
    });
    drop(pool);
    let got = within("cb", move || {
        let r = rx.recv().unwrap();
        drop(p2);
        r
    });
    assert_eq!(got, Ok(300));
    all_gone(created);
}

#[test]
fn imap_kill_timeout_next_timeout() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let r = within("imap", move || {
        let pids: Vec<u32> = pool.map(r24_pid, 0..50u64).unwrap();
        let mut it = pool
            .imap(r24_nap, [10u64, 10, 5000, 10, 100_000, 10, 10, 10])
            .unwrap()
            .max_in_flight(3)
            .chunksize(2)
            .timeout(Duration::from_secs(2));
        let mut out = Vec::new();
        let mut killed = false;
        loop {
            match it.next_timeout(Duration::from_millis(50)) {
                Ok(Some(x)) => out.push(x),
                Ok(None) => break,
                Err(_) => {
                    if !killed {
                        killed = true;
                        for p in &pids {
                            // SAFETY: kill(2) touches no memory.
                            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
        close_join(pool);
        out
    });
    assert_eq!(r.len(), 8);
    assert!(r.iter().all(|x| matches!(x, Ok(10) | Err(TaskError::WorkerLost { .. }))), "{r:?}");
}

#[test]
fn too_large_args() {
    let _turn = shared_turn();
    let pool = Pool::new(2).unwrap();
    let max = shmproc::pool::MAX_ITEM_BYTES;
    let r = within("big", move || {
        let big = "x".repeat(max + 10);
        shmproc::task! { fn r24_len(s: String) -> u64 { s.len() as u64 } }
        let a = pool.apply(r24_len, big.clone());
        let b: Vec<_> =
            pool.imap(r24_len, vec!["a".to_string(), big.clone(), "bb".to_string()]).unwrap().chunksize(2).collect();
        let c: Vec<_> = pool.imap_unordered(r24_len, vec![big.clone(), "a".to_string()]).unwrap().collect();
        let d = pool.map_results(r24_len, vec!["a".to_string(), big.clone()], 2).unwrap();
        let e = pool.starmap_async(r24_len, vec![big]).unwrap().get();
        close_join(pool);
        (a, b, c, d, e)
    });
    let too = |index| TaskError::TooLarge { index, what: "argument", len: max + 10 + 8, max };
    assert_eq!(r.0, Err(PoolError::Task(too(0))));
    assert_eq!(r.1, [Ok(1), Err(too(1)), Ok(2)]);
    assert_eq!(r.2.len(), 2);
    assert!(r.2.contains(&Err(too(0))) && r.2.contains(&Ok(1)));
    assert_eq!(r.3, [Ok(1), Err(too(1))]);
    assert_eq!(r.4, Err(PoolError::Task(too(0))));
}

shmproc::task! { fn r24_panics(x: u64) -> u64 { if x % 2 == 1 { panic!("odd {x}") } x } }

#[test]
fn fork_with_busy_stderr() {
    let _turn = shared_turn();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let chatter = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            use std::io::Write;
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(b"");
            std::thread::yield_now();
            drop(e);
            n += 1;
        }
        n
    });
    let r = within("fork pools", move || {
        let mut out = Vec::new();
        for _ in 0..20 {
            let p = Pool::builder()
                .processes(2)
                .start_method(shmproc::process::StartMethod::Fork)
                .maxtasksperchild(1)
                .build()
                .unwrap();
            out.push(p.map_results(r24_panics, 0..8u64, 1).unwrap());
            let c = p.__created();
            drop(p);
            all_gone(c);
        }
        out
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    chatter.join().unwrap();
    assert_eq!(r.len(), 20);
}

#[test]
fn timeout_per_item_in_chunk() {
    let _turn = shared_turn();
    let pool = Pool::new(1).unwrap();
    let r = within("chunk", move || {
        let a = pool
            .map_async_chunked(r24_nap, [300u64, 300, 300, 300], 4)
            .unwrap()
            .timeout(Duration::from_millis(1000))
            .get();
        let b = pool
            .map_async_chunked(r24_nap, [300u64, 3000, 300, 300], 4)
            .unwrap()
            .timeout(Duration::from_millis(1000))
            .get();
        let c = pool.map_results(r24_sq, 0..4u64, 2).unwrap();
        close_join(pool);
        (a, b, c)
    });
    assert_eq!(r.0, Ok(vec![300; 4]));
    assert!(matches!(r.1, Err(PoolError::Task(TaskError::TimedOut { index: 1, .. }))), "{:?}", r.1);
    assert_eq!(r.2, [Ok(0), Ok(1), Ok(4), Ok(9)]);
}

#[test]
fn builder_timeout_imap() {
    let _turn = shared_turn();
    let pool = Pool::builder().processes(2).task_timeout(Duration::from_millis(500)).build().unwrap();
    let r = within("tt", move || {
        let a: Vec<_> = pool.imap(r24_nap, [10u64, 100_000, 10]).unwrap().collect();
        let b: Vec<_> = pool
            .imap_unordered(r24_nap, [10u64, 100_000, 10])
            .unwrap()
            .timeout(Duration::from_secs(3600))
            .take(2)
            .collect();
        let c = pool.apply_async(r24_nap, 100_000).unwrap().timeout(Duration::from_millis(100)).get();
        let d = pool.map_results(r24_nap, [100_000u64, 5], 1).unwrap();
        close_join(pool);
        (a, b, c, d)
    });
    assert!(matches!(r.0[..], [Ok(10), Err(TaskError::TimedOut { index: 1, .. }), Ok(10)]), "{:?}", r.0);
    assert_eq!(r.1, [Ok(10), Ok(10)]);
    assert!(matches!(r.2, Err(PoolError::Task(TaskError::TimedOut { index: 0, .. }))));
    assert!(matches!(r.3[..], [Err(TaskError::TimedOut { index: 0, .. }), Ok(5)]), "{:?}", r.3);
}

shmproc::task! { fn r24_us(us: u64) -> u64 { std::thread::sleep(Duration::from_micros(us)); us } }

#[test]
fn terminate_during_big_map() {
    let _turn = shared_turn();
    for mode in 0..3 {
        let pool = Arc::new(Pool::new(2).unwrap());
        let created = pool.__created();
        let p = Arc::clone(&pool);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            match mode {
                0 => p.terminate(),
                1 => {
                    p.close();
                    p.join().unwrap()
                }
                _ => {
                    let pids: Vec<u32> = p.__created().0;
                    for x in pids {
                        // SAFETY: kill(2) touches no memory.
                        unsafe { libc::kill(x as i32, libc::SIGKILL) };
                    }
                }
            }
        });
        let p = Arc::clone(&pool);
        let r = within("map", move || {
            let a = p.map(r24_us, vec![50u64; 40_000]);
            a.map(|v| v.len())
        });
        match mode {
            0 => assert!(matches!(r, Err(PoolError::Task(TaskError::Terminated { .. })))),
            1 => assert_eq!(r, Ok(40_000)),
            _ => assert!(matches!(r, Err(PoolError::Task(TaskError::WorkerLost { .. })) | Ok(40_000))),
        }
        h.join().unwrap();
        drop(pool);
        all_gone(created);
    }
}

#[test]
fn maxtasks_chunks() {
    let _turn = shared_turn();
    let pool = Pool::builder().processes(2).maxtasksperchild(2).build().unwrap();
    let r = within("mt", move || {
        let a = pool.map_chunked(r24_sq, 0..3000u64, 7).unwrap();
        let b: Vec<_> = pool.imap(r24_sq, 0..300u64).unwrap().chunksize(3).map(Result::unwrap).collect();
        let strs: Vec<String> = (0..500).map(|i| "s".repeat(i)).collect();
        shmproc::task! { fn r24_slen(s: String) -> u64 { s.len() as u64 } }
        let c = pool.map_chunked(r24_slen, strs, 9).unwrap();
        let d = pool.map_async_chunked(r24_sq, 0..3000u64, 11).unwrap().get().unwrap();
        close_join(pool);
        (a, b, c, d)
    });
    assert_eq!(r.0, (0..3000u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(r.1, (0..300u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(r.2, (0..500u64).collect::<Vec<_>>());
    assert_eq!(r.3, r.0);
}

#[test]
fn terminate_index() {
    let _turn = shared_turn();
    for kind in 0..4 {
        let pool = Arc::new(Pool::new(2).unwrap());
        let p = Arc::clone(&pool);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            p.terminate();
        });
        let p = Arc::clone(&pool);
        let r = within("map", move || match kind {
            0 => {
                let v = p.map_results(r24_us, vec![50u64; 40_000], 10).unwrap();
                // Finished items keep their values; the others are Terminated.
                let ok = v.iter().take_while(|x| x.is_ok()).count();
                assert!(
                    v[ok..]
                        .iter()
                        .enumerate()
                        .all(|(k, x)| x.is_ok() || *x == Err(TaskError::Terminated { index: (ok + k) as u64 }))
                );
                format!("results: {ok} Ok then {:?}", v.get(ok))
            }
            1 => format!("{:?}", p.map_chunked(r24_us, vec![50u64; 40_000], 10).map(|v| v.len())),
            2 => format!("{:?}", p.map(r24_us, vec![50u64; 2_000]).map(|v| v.len())),
            _ => format!("{:?}", p.map_async(r24_us, vec![50u64; 40_000]).unwrap().get().map(|v| v.len())),
        });
        assert!(r.contains("Terminated") || r.contains("Ok("), "kind {kind}: {r}");
        h.join().unwrap();
    }
}

#[test]
fn pod_map_input_panics() {
    let _turn = shared_turn();
    let pool = Arc::new(Pool::new(2).unwrap());
    for kind in 0..3 {
        let p = Arc::clone(&pool);
        let r = within("map", move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let it = (0..200_000u64).map(|x| if x == 150_000 { panic!("input broke at {x}") } else { x });
                match kind {
                    0 => p.map(r24_sq, it).map(|v| v.len()),
                    1 => p.map_async(r24_sq, it).unwrap().get().map(|v| v.len()),
                    _ => p.map_chunked(r24_sq, it, 7).map(|v| v.len()),
                }
            }))
        });
        assert!(r.is_err(), "{kind}");
        let p = Arc::clone(&pool);
        let again = within("again", move || {
            (p.map(r24_sq, 0..300_000u64).unwrap(), p.map_async(r24_sq, 0..300_000u64).unwrap().get().unwrap())
        });
        assert_eq!(again.0, (0..300_000u64).map(|x| x * x).collect::<Vec<_>>(), "{kind}");
        assert_eq!(again.1, again.0);
    }
    close_join(Arc::into_inner(pool).unwrap());
}

#[test]
fn maxtasks_exit0_nested_pool() {
    let _turn = shared_turn();
    shmproc::task! { fn r24_nested(_x: u64) -> String { format!("{:?}", Pool::new(1).map(|_| ())) } }
    let pool = Pool::builder().processes(2).maxtasksperchild(2).build().unwrap();
    let r = within("mt", move || {
        let a = pool.map_results(r24_exit, 0..8u64, 1).unwrap();
        let b = pool.apply(r24_nested, 0);
        close_join(pool);
        (a, b)
    });
    assert!(matches!(r.0[3], Err(TaskError::WorkerLost { index: 3, .. })));
    assert_eq!(r.0.iter().filter(|x| x.is_ok()).count(), 7);
}

#[test]
fn too_large_in_bounded_imap() {
    let _turn = shared_turn();
    shmproc::task! { fn r24_len2(s: String) -> u64 { s.len() as u64 } }
    let pool = Pool::new(2).unwrap();
    let max = shmproc::pool::MAX_ITEM_BYTES;
    let r = within("imap", move || {
        let items = move || (0..12).map(move |i| if i % 3 == 1 { "x".repeat(max + 1) } else { "y".repeat(i) });
        let mut out = Vec::new();
        for (mif, cs) in [(1, 1), (1, 3), (2, 3), (5, 2)] {
            let a: Vec<_> = pool.imap(r24_len2, items()).unwrap().max_in_flight(mif).chunksize(cs).collect();
            let b: Vec<_> = pool.imap_unordered(r24_len2, items()).unwrap().max_in_flight(mif).chunksize(cs).collect();
            out.push((
                a.len(),
                b.len(),
                a.iter().filter(|x| x.is_ok()).count(),
                b.iter().filter(|x| x.is_ok()).count(),
            ));
        }
        close_join(pool);
        out
    });
    assert!(r.iter().all(|&x| x == (12, 12, 8, 8)), "{r:?}");
}

shmproc::task! {
    fn r24c_work((x, ms): (u64, u64)) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        if x % 97 == 13 {
            panic!("p{x}")
        }
        x
    }
}
shmproc::task! { fn r24c_pod(x: u64) -> u64 { if x % 50_000 == 7 { std::thread::sleep(Duration::from_millis(20)) } x } }

/// Four threads submit every kind of work (apply with cancel and
/// timeout, bounded imaps dropped early, POD maps, callbacks that apply)
/// while workers are killed -9, then the pool is terminated or closed and
/// joined: nothing hangs, nothing is left, and every value or error
/// reported belongs to its own item.
#[test]
fn mixed_work_under_kills_then_terminate_or_join() {
    let _turn = shared_turn();
    for round in 0..6u64 {
        let pool = Arc::new(
            Pool::builder().processes(3).maxtasksperchild(if round % 2 == 0 { 0 } else { 5 }).build().unwrap(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hs = Vec::new();
        for t in 0..4u64 {
            let p = Arc::clone(&pool);
            let stop = Arc::clone(&stop);
            hs.push(std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let r = (i >> 33) % 9;
                    match r {
                        0 => {
                            if let Ok(v) = p.apply(r24c_work, (i % 1000, i % 5)) {
                                assert_eq!(v, i % 1000)
                            }
                        }
                        1 => {
                            if let Ok(a) = p.apply_async(r24c_work, (i % 1000, i % 300)) {
                                if i % 3 == 0 {
                                    a.cancel()
                                }
                                let _ = a.get_timeout(Duration::from_millis(50));
                            }
                        }
                        2 => {
                            if let Ok(a) = p.apply_async(r24c_work, (i % 1000, 200)) {
                                let _ = a.timeout(Duration::from_millis(30)).get();
                            }
                        }
                        3 => {
                            if let Ok(it) = p.imap(r24c_work, (0..50u64).map(|x| (x, x % 3))) {
                                let all: Vec<_> =
                                    it.max_in_flight(3).chunksize((i % 4) as usize).take((i % 60) as usize).collect();
                                for (k, r) in all.iter().enumerate() {
                                    match r {
                                        Ok(v) => assert_eq!(*v, k as u64, "round {round} {all:?}"),
                                        Err(e) => assert_eq!(e.index(), k as u64, "round {round} {all:?}"),
                                    }
                                }
                            }
                        }
                        4 => {
                            if let Ok(it) = p.imap_unordered(r24c_work, (0..).map(|x| (x, 1))) {
                                let mut it = it.max_in_flight(4);
                                for _ in 0..(i % 20) {
                                    let _ = it.next_timeout(Duration::from_millis(5));
                                }
                            }
                        }
                        5 => {
                            let n = i % 200_000;
                            if let Ok(v) = p.map(r24c_pod, 0..n) {
                                assert!(v.len() as u64 == n && v.iter().enumerate().all(|(k, &x)| x == k as u64))
                            }
                        }
                        6 => {
                            if let Ok(a) = p.map_async(r24c_pod, 0..(i % 300_000)) {
                                if i % 2 == 0 {
                                    a.cancel()
                                }
                                if let Ok(v) = a.get() {
                                    assert!(v.iter().enumerate().all(|(k, &x)| x == k as u64))
                                }
                            }
                        }
                        7 => {
                            let (tx, _rx) = std::sync::mpsc::channel();
                            let p2 = Arc::clone(&p);
                            if let Ok(a) = p.apply_async(r24c_work, (i % 1000, 3)) {
                                a.then(move |r| {
                                    let _ = tx.send(r);
                                    let _ = p2.apply(r24c_work, (1, 0));
                                });
                            }
                        }
                        _ => {
                            let pids = p.__created().0;
                            if let Some(&w) = pids.last() {
                                // SAFETY: kill(2) touches no memory.
                                unsafe { libc::kill(w as i32, libc::SIGKILL) };
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let created_p = Arc::clone(&pool);
        within("end", move || {
            if round % 3 == 0 {
                created_p.terminate();
            } else {
                created_p.close();
                if round % 3 == 1 {
                    let _ = created_p.join();
                } else {
                    created_p.terminate();
                }
            }
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        within("threads", move || {
            for h in hs {
                h.join().unwrap()
            }
        });
        let created = pool.__created();
        within("drop", move || drop(pool));
        all_gone(created);
    }
}

/// An ordered `imap` whose pool is terminated (from another thread) while
/// items are in flight yields every submitted item's outcome (values, or
/// `Terminated`), then one `NotSubmitted` for the next index: the k-th
/// result is item k's. It skipped submitted items: the iterator's failed
/// send to the terminating pool marked the job aborted at once, before the
/// manager had failed the items in flight, so it ended at the first hole
/// (seen: `[Err(Terminated { index: 0 }), Err(NotSubmitted { index: 3 })]`).
#[test]
fn an_imap_terminated_mid_way_yields_every_submitted_item_in_order() {
    let _turn = shared_turn();
    for round in 0..40u64 {
        let pool = Arc::new(Pool::new(3).unwrap());
        // Made before the terminating thread starts (a terminated pool
        // refuses a new imap with `Closed`).
        let it = pool.imap(r24c_work, (0..500u64).map(|x| (x * 97 + 1, x % 2))).unwrap().max_in_flight(3);
        let p = Arc::clone(&pool);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5 + round % 20));
            p.terminate();
        });
        let all = within("imap", move || it.collect::<Vec<_>>());
        h.join().unwrap();
        let created = pool.__created();
        drop(pool);
        all_gone(created);
        for (k, r) in all.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, k as u64 * 97 + 1, "round {round}: {all:?}"),
                Err(e) => assert_eq!(e.index(), k as u64, "round {round}: {all:?}"),
            }
        }
        let not_submitted = all.iter().filter(|r| matches!(r, Err(TaskError::NotSubmitted { .. }))).count();
        assert!(
            not_submitted <= 1
                && (not_submitted == 0 || matches!(all.last(), Some(Err(TaskError::NotSubmitted { .. })))),
            "round {round}: {all:?}"
        );
    }
}

/// As the ordered test above, for `imap_unordered` (and a chunk size of
/// 2): the outcomes yielded are those of items 0..n, each once, then at
/// most one `NotSubmitted { index: n }`.
#[test]
fn an_imap_unordered_terminated_mid_way_yields_every_submitted_item_once() {
    let _turn = shared_turn();
    for round in 0..30u64 {
        let pool = Arc::new(Pool::new(3).unwrap());
        let it = pool
            .imap_unordered(r24c_work, (0..500u64).map(|x| (x * 97 + 1, x % 2)))
            .unwrap()
            .max_in_flight(4)
            .chunksize(2);
        let p = Arc::clone(&pool);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5 + round % 20));
            p.terminate();
        });
        let mut all = within("imap_unordered", move || it.collect::<Vec<_>>());
        h.join().unwrap();
        let created = pool.__created();
        drop(pool);
        all_gone(created);
        let last = match all.last() {
            Some(Err(TaskError::NotSubmitted { index })) => {
                let i = *index;
                all.pop();
                Some(i)
            }
            _ => None,
        };
        let mut seen: Vec<u64> = all
            .iter()
            .map(|r| match r {
                Ok(v) => (v - 1) / 97,
                Err(e) => e.index(),
            })
            .collect();
        seen.sort();
        let n = seen.len() as u64;
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "round {round}: {all:?}");
        assert!(last.is_none_or(|i| i == n), "round {round}: {last:?} after {n}");
    }
}

/// Completion callbacks of work submitted while another thread
/// terminates the pool: each runs once by the time `terminate` returns.
#[test]
fn every_callback_runs_by_the_time_terminate_returns() {
    let _turn = shared_turn();
    for round in 0..20u64 {
        let pool = Arc::new(Pool::new(2).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = Arc::clone(&pool);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(round % 7));
            p.terminate();
        });
        let mut n = 0;
        for i in 0..60u64 {
            let tx = tx.clone();
            match pool.apply_async(r24c_work, (i * 97 + 1, i % 2)) {
                Ok(a) => {
                    n += 1;
                    a.then(move |r| tx.send(r.map(|v| (v, i))).unwrap());
                }
                Err(e) => assert_eq!(e, PoolError::Closed),
            }
        }
        if let Ok(it) = pool.imap(r24c_work, (0..20u64).map(|x| (x * 97 + 1, 0))) {
            drop(it);
        }
        within("terminate", move || h.join().unwrap());
        pool.terminate();
        drop(tx);
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got.len(), n, "round {round}");
        for (v, i) in got.into_iter().flatten() {
            assert_eq!(v, i * 97 + 1);
        }
    }
}
