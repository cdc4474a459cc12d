//! Ports of everyday `multiprocessing` programs (the shapes found in
//! tutorials, blog posts and Stack Overflow answers, not the docs' own
//! examples: those are in `python_ports.rs`), written from the README and
//! the rustdoc as a Python user would. Each test gives the Python program
//! and asserts what it prints or returns. Real processes; every wait has a
//! deadline; nothing is left in /dev/shm.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use shmproc::{
    Array, Barrier, BarrierError, Connection, DictProxy, Event, JoinableQueue, ListProxy, Lock, LockError, Manager,
    Pool, Process, Queue, RLock, Value, current_process, parent_process, pipe,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// `p.join()` with a deadline: kills the child and fails on expiry. Returns
/// the join's result (Python's join never raises; ours reports the child's
/// error), so a test can look at it.
fn join_raw(p: &mut Process) -> Result<(), shmproc::ProcessError> {
    match p.join_timeout(DEADLINE) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let _ = p.kill();
            panic!("process {} did not end within {DEADLINE:?}", p.name());
        }
        Err(e) => Err(e),
    }
}

fn join(p: &mut Process) {
    if let Err(e) = join_raw(p) {
        panic!("process {} failed: {e}", p.name());
    }
    assert_eq!(p.exitcode(), Some(0), "exit code of {}", p.name());
}

fn start(p: &mut Process) {
    p.start().unwrap_or_else(|e| panic!("start {}: {e}", p.name()));
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// 1. Producer/consumer with one sentinel (None) per consumer:
//
//     def producer(q, n_consumers):
//         for i in range(100): q.put(i)
//         for _ in range(n_consumers): q.put(None)
//     def consumer(q, out):
//         while True:
//             item = q.get()
//             if item is None: break
//             out.put((current_process().name, item * item))
//     q = Queue(maxsize=10); out = Queue()
//     prod = Process(target=producer, args=(q, 3))
//     cons = [Process(target=consumer, args=(q, out)) for _ in range(3)]
//     ... start all; results = [out.get() for _ in range(100)]; join all
//     sum(r for _, r in results) == sum(i*i for i in range(100))
//     q.empty() -> True

shmproc::entry! {
    fn sentinel_producer(args: (Queue<Option<u64>>, u64)) -> Result<(), String> {
        let (q, n_consumers) = args;
        for i in 0..100 {
            q.put(Some(i)).map_err(s)?;
        }
        for _ in 0..n_consumers {
            q.put(None).map_err(s)?;
        }
        Ok(())
    }
}

shmproc::entry! {
    fn sentinel_consumer(args: (Queue<Option<u64>>, Queue<(String, u64)>)) -> Result<(), String> {
        let (q, out) = args;
        while let Some(item) = q.get().map_err(s)? {
            out.put((current_process().name, item * item)).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn producer_consumer_none_sentinels() {
    let q = Queue::<Option<u64>>::new(10).unwrap();
    let out = Queue::<(String, u64)>::new(0).unwrap();
    let mut prod = Process::new(sentinel_producer, (q.clone(), 3)).with_name("producer");
    let mut cons: Vec<Process> = (0..3)
        .map(|i| Process::new(sentinel_consumer, (q.clone(), out.clone())).with_name(format!("consumer-{i}")))
        .collect();
    start(&mut prod);
    cons.iter_mut().for_each(start);
    let results: Vec<(String, u64)> = (0..100).map(|_| out.get_timeout(DEADLINE).unwrap()).collect();
    join(&mut prod);
    cons.iter_mut().for_each(join);
    assert_eq!(results.iter().map(|(_, r)| r).sum::<u64>(), (0..100).map(|i| i * i).sum::<u64>());
    let names: BTreeSet<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("consumer-")), "{names:?}");
    assert!(q.empty());
    assert!(out.empty());
    assert_eq!(q.qsize(), 0);
}

// ---------------------------------------------------------------------------
// 2. A hand-made worker pool over a JoinableQueue, daemon workers:
//
//     def worker(tasks, results):
//         while True:
//             n = tasks.get()
//             results.put((n, sum(range(n))))
//             tasks.task_done()
//     tasks = JoinableQueue(); results = Queue()
//     workers = [Process(target=worker, args=(tasks, results), daemon=True) for _ in range(3)]
//     for w in workers: w.start()
//     for n in range(1, 31): tasks.put(n)
//     tasks.join()                       # all done
//     print(results.qsize())             # 30
//     print(len(active_children()))      # 3: daemons loop forever
//     for w in workers: w.terminate(); w.join()
//     print([w.exitcode for w in workers])   # [-15, -15, -15]

shmproc::entry! {
    fn jq_daemon_worker(args: (JoinableQueue<u64>, Queue<(u64, u64)>)) -> Result<(), String> {
        let (tasks, results) = args;
        loop {
            let n = tasks.get().map_err(s)?;
            results.put((n, (0..n).sum())).map_err(s)?;
            tasks.task_done().map_err(s)?;
        }
    }
}

#[test]
fn joinable_queue_daemon_workers_terminated_after_join() {
    let tasks = JoinableQueue::<u64>::new(0).unwrap();
    let results = Queue::<(u64, u64)>::new(0).unwrap();
    let mut workers: Vec<Process> =
        (0..3).map(|_| Process::new(jq_daemon_worker, (tasks.clone(), results.clone())).with_daemon(true)).collect();
    workers.iter_mut().for_each(start);
    assert!(workers.iter().all(|w| w.daemon()));
    for n in 1..=30 {
        tasks.put(n).unwrap();
    }
    assert!(tasks.join_timeout(DEADLINE), "tasks.join() did not return");
    assert_eq!(results.qsize(), 30);
    assert_eq!(tasks.unfinished_tasks(), 0);
    let active: BTreeSet<u32> = shmproc::active_children().iter().filter_map(|p| p.pid()).collect();
    for w in &workers {
        assert!(active.contains(&w.pid().unwrap()), "worker {} not in active_children()", w.name());
    }
    for w in &mut workers {
        w.terminate().unwrap();
        let _ = join_raw(w); // Err(Signaled): Python's join returns None here
        assert_eq!(w.exitcode(), Some(-15));
        assert!(!w.is_alive());
    }
    let mut got: BTreeMap<u64, u64> = BTreeMap::new();
    while let Ok((n, r)) = results.get_nowait() {
        got.insert(n, r);
    }
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|(n, r)| *r == n * (n - 1) / 2));
}

// ---------------------------------------------------------------------------
// 3. Pool with an initializer setting per-worker state, and maxtasksperchild:
//
//     def init(prefix):
//         global PREFIX; PREFIX = prefix
//     def tag(x):
//         return (os.getpid(), f"{PREFIX}-{x}")
//     with Pool(2, initializer=init, initargs=("w",), maxtasksperchild=2) as p:
//         out = p.map(tag, range(12), chunksize=1)
//     [t for _, t in out] == ["w-0", ..., "w-11"]
//     len({pid for pid, _ in out}) >= 6     # each worker does at most 2 tasks

static PREFIX: StdMutex<Option<String>> = StdMutex::new(None);

shmproc::task! {
    fn init_prefix(prefix: String) -> () {
        *PREFIX.lock().unwrap() = Some(prefix);
    }
}

shmproc::task! {
    fn tag(x: u64) -> Result<(u32, String), String> {
        let prefix = PREFIX.lock().unwrap().clone().ok_or("initializer did not run in this worker")?;
        Ok((std::process::id(), format!("{prefix}-{x}")))
    }
}

#[test]
fn pool_initializer_and_maxtasksperchild() {
    let pool =
        Pool::builder().processes(2).initializer(init_prefix, "w".to_string()).maxtasksperchild(2).build().unwrap();
    let out = pool.map_chunked(tag, 0..12, 1).unwrap();
    let tags: Vec<String> = out.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(tags, (0..12).map(|x| format!("w-{x}")).collect::<Vec<_>>());
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for (pid, _) in &out {
        *per_pid.entry(*pid).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 2), "a worker ran more than maxtasksperchild=2 tasks: {per_pid:?}");
    assert!(per_pid.len() >= 6, "{per_pid:?}");
    assert!(!per_pid.contains_key(&std::process::id()));
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// 4. map_async with callback and error_callback, and AsyncResult.get(timeout)
//    timing out then succeeding:
//
//     def cube(x): return x ** 3
//     def inverse(x): return 1 / x
//     done = []; errors = []
//     with Pool(2) as p:
//         r = p.map_async(cube, range(6), callback=done.append, error_callback=errors.append)
//         r.wait(); r.successful()           # True
//         e = p.map_async(inverse, [1, 0, 2], callback=done.append, error_callback=errors.append)
//         e.wait(); e.successful()           # False
//         s = p.apply_async(time.sleep_then_return, (0.5, 7))
//         try: s.get(timeout=0.01)
//         except TimeoutError: pass
//         s.get(timeout=60)                   # 7
//     done == [[0, 1, 8, 27, 64, 125]]; type(errors[0]) is ZeroDivisionError

shmproc::task! { fn cube(x: u64) -> u64 { x * x * x } }
shmproc::task! {
    fn inverse(x: i64) -> Result<f64, String> {
        if x == 0 { Err("ZeroDivisionError: division by zero".into()) } else { Ok(1.0 / x as f64) }
    }
}
shmproc::task! {
    fn sleep_then(args: (u64, u64)) -> u64 { std::thread::sleep(Duration::from_millis(args.0)); args.1 }
}

#[test]
fn map_async_callbacks_and_get_timeout() {
    let pool = Pool::new(2).unwrap();
    let done: Arc<StdMutex<Vec<Vec<u64>>>> = Arc::default();
    let errors: Arc<StdMutex<Vec<String>>> = Arc::default();

    let r = pool.map_async(cube, 0..6).unwrap();
    assert!(r.wait_timeout(DEADLINE));
    assert_eq!(r.successful(), Some(true));
    let (d, e) = (done.clone(), errors.clone());
    r.then(move |res| match res {
        Ok(v) => d.lock().unwrap().push(v),
        Err(err) => e.lock().unwrap().push(err.to_string()),
    });

    let r = pool.map_async(inverse, [1, 0, 2]).unwrap();
    assert!(r.wait_timeout(DEADLINE));
    assert_eq!(r.successful(), Some(false));
    let (d, e) = (done.clone(), errors.clone());
    r.then(move |res| match res {
        Ok(v) => d.lock().unwrap().push(v.iter().map(|f| *f as u64).collect()),
        Err(err) => e.lock().unwrap().push(err.to_string()),
    });

    let slow = pool.apply_async(sleep_then, (500, 7)).unwrap();
    let slow = match slow.get_timeout(Duration::from_millis(10)) {
        Err(shmproc::pool::GetTimeoutError::TimedOut(r)) => r,
        other => panic!("expected TimedOut, got {:?}", other.map_err(s)),
    };
    assert!(!slow.ready() || slow.successful() == Some(true));
    assert_eq!(slow.get_timeout(DEADLINE).unwrap(), 7);

    pool.close();
    pool.join().unwrap();
    assert_eq!(*done.lock().unwrap(), [vec![0, 1, 8, 27, 64, 125]]);
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("ZeroDivisionError"), "{errors:?}");
}

// ---------------------------------------------------------------------------
// 5. imap_unordered with a progress counter (the tqdm pattern):
//
//     with Pool(3) as p:
//         done = 0; total = 0
//         for r in p.imap_unordered(work, range(40), chunksize=4):
//             done += 1; total += r
//             print(f"\r{done}/40", end="")
//     total == sum(2*x for x in range(40))

shmproc::task! { fn double_it(x: u64) -> u64 { 2 * x } }

#[test]
fn imap_unordered_progress_counter() {
    let pool = Pool::new(3).unwrap();
    let mut progress = Vec::new();
    let mut total = 0;
    let started = Instant::now();
    for (done, r) in pool.imap_unordered(double_it, 0..40).unwrap().chunksize(4).enumerate() {
        assert!(started.elapsed() < DEADLINE);
        total += r.unwrap();
        progress.push(format!("{}/40", done + 1));
    }
    assert_eq!(total, (0..40).map(|x| 2 * x).sum::<u64>());
    assert_eq!(progress.len(), 40);
    assert_eq!(progress.last().unwrap(), "40/40");
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// 6. A Manager dict of lists mutated from children:
//
//     def record(d, key, values):
//         for v in values: d[key].append(v)      # Python: lost! the proxy's
//     with Manager() as m:                      # d[key] is a copy of the list
//         d = m.dict()
//         for k in "abc": d[k] = m.list()       # ... unless the values are proxies
//         ps = [Process(target=record, args=(d, k, range(i*10, i*10+5))) for i, k in enumerate("abc")]
//         ...
//         {k: list(v) for k, v in d.items()} == {'a': [0..4], 'b': [10..14], 'c': [20..24]}

shmproc::entry! {
    fn record(args: (DictProxy<String, ListProxy<u64>>, String, u64)) -> Result<(), String> {
        let (d, key, base) = args;
        for v in base..base + 5 {
            d.get(&key).map_err(s)?.ok_or("no such key")?.append(v).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn manager_dict_of_lists_appends_from_children() {
    let m = Manager::new().unwrap();
    let d = m.dict_anon::<String, ListProxy<u64>>().unwrap();
    for k in ["a", "b", "c"] {
        d.insert(k.to_string(), m.list_anon().unwrap()).unwrap();
    }
    let mut ps: Vec<Process> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, k)| Process::new(record, (d.clone(), k.to_string(), i as u64 * 10)))
        .collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let got: BTreeMap<String, Vec<u64>> =
        d.items().unwrap().into_iter().map(|(k, v)| (k, v.to_vec().unwrap())).collect();
    let want: BTreeMap<String, Vec<u64>> =
        [("a", 0), ("b", 10), ("c", 20)].iter().map(|(k, b)| (k.to_string(), (*b..b + 5).collect())).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// 7. An Array of doubles filled by slices in parallel, and a shared total:
//
//     def fill(arr, total, start, end):
//         chunk = [math.sqrt(i) for i in range(start, end)]
//         with arr.get_lock(): arr[start:end] = chunk
//         with total.get_lock(): total.value += sum(chunk)
//     arr = Array('d', 100); total = Value('d', 0.0)
//     ps = [Process(target=fill, args=(arr, total, k*25, (k+1)*25)) for k in range(4)]
//     arr[:] == [math.sqrt(i) for i in range(100)]

shmproc::entry! {
    fn fill_slice(args: (Array<f64>, Value<f64>, usize, usize)) -> Result<(), String> {
        let (arr, total, start, end) = args;
        let chunk: Vec<f64> = (start..end).map(|i| (i as f64).sqrt()).collect();
        let written = arr.get_lock().map_err(s)?.write(start, &chunk);
        if written != chunk.len() {
            return Err(format!("wrote {written} of {}", chunk.len()));
        }
        total.get_lock().map_err(s)?.update(|t| *t += chunk.iter().sum::<f64>());
        Ok(())
    }
}

#[test]
fn array_of_f64_filled_by_slices() {
    let arr = Array::from_slice(&[0.0f64; 100]).unwrap();
    let total = Value::new(0.0f64).unwrap();
    let mut ps: Vec<Process> =
        (0..4).map(|k| Process::new(fill_slice, (arr.clone(), total.clone(), k * 25, (k + 1) * 25))).collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let want: Vec<f64> = (0..100).map(|i| (i as f64).sqrt()).collect();
    assert_eq!(arr.to_vec().unwrap(), want);
    let sum: f64 = want.iter().sum();
    assert!((total.get().unwrap() - sum).abs() < 1e-9);
    // arr[90:] through the lock guard's read
    let g = arr.get_lock().unwrap();
    let mut tail = [0.0; 10];
    assert_eq!(g.read(90, &mut tail), 10);
    assert_eq!(tail[..], want[90..]);
}

// ---------------------------------------------------------------------------
// 8. Event-driven graceful shutdown:
//
//     def worker(stop, q, handled):
//         while not stop.is_set():
//             try: item = q.get(timeout=0.05)
//             except queue.Empty: continue
//             with handled.get_lock(): handled.value += 1
//     stop = Event(); q = Queue(); handled = Value('i', 0)
//     ws = [Process(target=worker, args=(stop, q, handled)) for _ in range(3)]
//     for i in range(20): q.put(i)
//     while handled.value < 20: time.sleep(0.01)
//     stop.set(); for w in ws: w.join()
//     [w.exitcode for w in ws] == [0, 0, 0]

shmproc::entry! {
    fn graceful_worker(args: (Event, Queue<u64>, Value<u32>)) -> Result<(), String> {
        let (stop, q, handled) = args;
        while !stop.is_set() {
            match q.get_timeout(Duration::from_millis(50)) {
                Ok(_) => handled.get_lock().map_err(s)?.update(|h| *h += 1),
                Err(shmproc::GetTimeoutError::TimedOut) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

#[test]
fn event_graceful_shutdown() {
    let stop = Event::new().unwrap();
    let q = Queue::<u64>::new(0).unwrap();
    let handled = Value::new(0u32).unwrap();
    let mut ws: Vec<Process> =
        (0..3).map(|_| Process::new(graceful_worker, (stop.clone(), q.clone(), handled.clone()))).collect();
    ws.iter_mut().for_each(start);
    for i in 0..20 {
        q.put(i).unwrap();
    }
    let started = Instant::now();
    while handled.get().unwrap() < 20 {
        assert!(started.elapsed() < DEADLINE, "workers handled {} of 20", handled.get().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.set();
    ws.iter_mut().for_each(join);
    assert!(ws.iter().all(|w| w.exitcode() == Some(0)));
    assert_eq!(handled.get().unwrap(), 20);
}

// ---------------------------------------------------------------------------
// 9. Lock.acquire(timeout) against a child that holds it, and RLock re-entry:
//
//     def hold(lock, held, release):
//         with lock: held.set(); release.wait()
//     lock = Lock(); held = Event(); release = Event()
//     p = Process(target=hold, args=(lock, held, release)); p.start(); held.wait()
//     lock.acquire(timeout=0.1)     # False
//     lock.acquire(block=False)     # False
//     release.set(); lock.acquire(timeout=60)  # True
//     lock.release(); p.join()
//
//     def recurse(rlock, n, out):
//         with rlock:
//             if n: recurse(rlock, n - 1, out)
//             else: out.value = 1
//     r = RLock(); Process(target=recurse, args=(r, 5, out)) -> out.value == 1

shmproc::entry! {
    fn hold_lock(args: (Lock, Event, Event)) -> Result<(), String> {
        let (lock, held, release) = args;
        let _g = lock.lock().map_err(s)?;
        held.set();
        if !release.wait_timeout(Duration::from_secs(60)) {
            return Err("release never set".into());
        }
        Ok(())
    }
}

fn recurse(r: &RLock, n: u32, out: &Value<u32>) -> Result<(), String> {
    let _g = r.lock().map_err(s)?;
    if r.level() != 6 - n {
        return Err(format!("level {} at depth {n}", r.level()));
    }
    if n > 0 { recurse(r, n - 1, out) } else { out.set(1).map_err(s) }
}

shmproc::entry! {
    fn rlock_recurse(args: (RLock, Value<u32>)) -> Result<(), String> {
        let (r, out) = args;
        recurse(&r, 5, &out)?;
        if r.is_owned() { Err("still owned after the outer block".into()) } else { Ok(()) }
    }
}

#[test]
fn lock_acquire_timeout_and_rlock_reentry() {
    let lock = Lock::new().unwrap();
    let (held, release) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(hold_lock, (lock.clone(), held.clone(), release.clone()));
    start(&mut p);
    assert!(held.wait_timeout(DEADLINE));
    assert!(matches!(lock.lock_timeout(Duration::from_millis(100)), Err(LockError::TimedOut)));
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    assert!(lock.is_locked());
    release.set();
    let g = lock.lock_timeout(DEADLINE).unwrap();
    drop(g);
    join(&mut p);

    let r = RLock::new().unwrap();
    let out = Value::new(0u32).unwrap();
    let mut p = Process::new(rlock_recurse, (r.clone(), out.clone()));
    start(&mut p);
    join(&mut p);
    assert_eq!(out.get().unwrap(), 1);
    // Released for real: the parent takes it without waiting.
    assert!(r.try_lock().is_ok());
}

// ---------------------------------------------------------------------------
// 10. Queue.get(timeout) -> Empty, qsize / empty / full across processes:
//
//     def fill(q, n):
//         for i in range(n): q.put(i)
//     q = Queue(maxsize=3)
//     q.empty() -> True; q.full() -> False
//     try: q.get(timeout=0.05)
//     except queue.Empty: print("empty")
//     p = Process(target=fill, args=(q, 3)); p.start(); p.join()
//     q.qsize() -> 3; q.full() -> True
//     try: q.put(99, timeout=0.05)
//     except queue.Full: print("full")
//     [q.get() for _ in range(3)] -> [0, 1, 2]

shmproc::entry! {
    fn fill_queue(args: (Queue<String>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            q.put(format!("item-{i}")).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn queue_timeouts_and_sizes_across_processes() {
    let q = Queue::<String>::new(3).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    assert_eq!(q.maxsize(), 3);
    assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(shmproc::GetTimeoutError::TimedOut)));
    let mut p = Process::new(fill_queue, (q.clone(), 3));
    start(&mut p);
    join(&mut p);
    assert_eq!(q.qsize(), 3);
    assert!(q.full());
    assert!(!q.empty());
    match q.put_timeout("99".into(), Duration::from_millis(50)) {
        Err(shmproc::PutTimeoutError::TimedOut(item)) => assert_eq!(item, "99"),
        other => panic!("expected TimedOut, got {:?}", other.map_err(s)),
    }
    let got: Vec<String> = (0..3).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    assert_eq!(got, ["item-0", "item-1", "item-2"]);
    assert!(q.empty());
}

// ---------------------------------------------------------------------------
// 11. Pipe(duplex=False) with poll(timeout), send_bytes / recv_bytes:
//
//     def sender(w, go):
//         go.wait()
//         for chunk in (b"abc", b"", b"x" * 5000): w.send_bytes(chunk)
//         w.close()
//     r, w = Pipe(duplex=False)
//     p = Process(target=sender, args=(w, go)); p.start(); w.close()
//     r.poll(0.05)        # False: nothing yet
//     go.set()
//     r.poll(60)          # True
//     [r.recv_bytes() for _ in range(3)] == [b"abc", b"", b"x"*5000]
//     r.send_bytes(b"no") # OSError: connection is read-only
//     p.join(); r.recv_bytes()   # EOFError

shmproc::entry! {
    fn bytes_sender(args: (Connection, Event)) -> Result<(), String> {
        let (mut w, go) = args;
        if !go.wait_timeout(Duration::from_secs(60)) {
            return Err("go never set".into());
        }
        for chunk in [b"abc".to_vec(), Vec::new(), vec![b'x'; 5000]] {
            w.send_bytes(&chunk).map_err(s)?;
        }
        w.close();
        Ok(())
    }
}

#[test]
fn one_way_pipe_poll_and_bytes() {
    let (mut r, mut w) = pipe(false).unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    let go = Event::new().unwrap();
    let mut p = Process::new(bytes_sender, (w.clone(), go.clone()));
    start(&mut p);
    w.close();
    assert!(!r.poll(Duration::from_millis(50)).unwrap());
    go.set();
    assert!(r.poll(DEADLINE).unwrap());
    let got: Vec<Vec<u8>> = (0..3).map(|_| r.recv_bytes_timeout(DEADLINE).unwrap()).collect();
    assert_eq!(got, [b"abc".to_vec(), Vec::new(), vec![b'x'; 5000]]);
    let e = r.send_bytes(b"no").unwrap_err();
    assert!(e.to_string().contains("cannot send"), "{e}");
    join(&mut p);
    let e = r.recv_bytes_timeout(DEADLINE).unwrap_err();
    assert!(e.to_string().contains("gone"), "{e}");
}

// ---------------------------------------------------------------------------
// 12. Process lifecycle: names, parent, a killed child, a panicking one, close:
//
//     def report(q):
//         q.put((current_process().name, parent_process().pid, parent_process().name))
//     def crash(): raise RuntimeError("boom")
//     q = Queue()
//     p = Process(target=report, args=(q,), name="reporter"); p.start()
//     q.get() == ("reporter", os.getpid(), "MainProcess"); p.join()
//     k = Process(target=time.sleep, args=(100,)); k.start(); k.kill(); k.join()
//     k.exitcode == -9
//     c = Process(target=crash); c.start(); c.join(); c.exitcode == 1   (shmproc: 101 for a panic)
//     c.close(); c.is_alive()  -> ValueError: process object is closed
//     parent_process() is None in the main process; cpu_count() >= 1

shmproc::entry! {
    fn report_identity(q: Queue<(String, u32, String)>) -> Result<(), String> {
        let parent = parent_process().ok_or("no parent_process() in a child")?;
        q.put((current_process().name, parent.pid, parent.name)).map_err(s)
    }
}

shmproc::entry! {
    fn sleep_forever(_: ()) { std::thread::sleep(Duration::from_secs(100)) }
}

shmproc::entry! {
    fn crash(_: ()) { panic!("RuntimeError: boom") }
}

#[test]
fn process_lifecycle_kill_panic_close() {
    assert!(parent_process().is_none());
    assert_eq!(current_process().name, "MainProcess");
    assert!(shmproc::cpu_count() >= 1);

    let q = Queue::<(String, u32, String)>::new(0).unwrap();
    let mut p = Process::new(report_identity, q.clone()).with_name("reporter");
    start(&mut p);
    assert_eq!(q.get_timeout(DEADLINE).unwrap(), ("reporter".to_string(), std::process::id(), "MainProcess".into()));
    join(&mut p);

    let mut k = Process::new(sleep_forever, ());
    start(&mut k);
    assert!(k.is_alive());
    k.kill().unwrap();
    assert!(matches!(join_raw(&mut k), Err(shmproc::ProcessError::Signaled { signal: 9, .. })));
    assert_eq!(k.exitcode(), Some(-9));
    assert!(!k.is_alive());

    let mut c = Process::new(crash, ()).with_name("crasher");
    start(&mut c);
    let e = join_raw(&mut c).unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    assert_eq!(c.exitcode(), Some(101));
    c.close().unwrap();
    assert!(matches!(c.start(), Err(shmproc::ProcessError::Closed(_))));
    assert!(matches!(c.join(), Err(shmproc::ProcessError::Closed(_))));
    assert!(!shmproc::active_children().iter().any(|a| a.pid() == k.pid()));
}

// ---------------------------------------------------------------------------
// 13. Barrier with a timeout, and abort releasing the waiters:
//
//     def wait_at(b, q):
//         try: q.put(("ok", b.wait(timeout=60)))
//         except BrokenBarrierError: q.put(("broken", -1))
//     b = Barrier(3); q = Queue()
//     ps = [Process(target=wait_at, args=(b, q)) for _ in range(2)]; start
//     while b.n_waiting < 2: time.sleep(0.01)
//     b.abort()
//     [q.get() for _ in ps] == [("broken", -1)] * 2; b.broken -> True
//     b.reset(); b.broken -> False; b.parties -> 3

shmproc::entry! {
    fn wait_at_barrier(args: (Barrier, Queue<(String, i64)>)) -> Result<(), String> {
        let (b, q) = args;
        let r = match b.wait_timeout(Duration::from_secs(60)) {
            Ok(i) => ("ok".to_string(), i as i64),
            Err(BarrierError::Broken) => ("broken".to_string(), -1),
            Err(e) => (e.to_string(), -2),
        };
        q.put(r).map_err(s)
    }
}

#[test]
fn barrier_abort_releases_waiters() {
    let b = Barrier::new(3).unwrap();
    let q = Queue::<(String, i64)>::new(0).unwrap();
    let mut ps: Vec<Process> = (0..2).map(|_| Process::new(wait_at_barrier, (b.clone(), q.clone()))).collect();
    ps.iter_mut().for_each(start);
    let started = Instant::now();
    while b.n_waiting() < 2 {
        assert!(started.elapsed() < DEADLINE, "n_waiting {}", b.n_waiting());
        std::thread::sleep(Duration::from_millis(10));
    }
    b.abort();
    let got: Vec<(String, i64)> = (0..2).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    assert_eq!(got, vec![("broken".to_string(), -1); 2]);
    ps.iter_mut().for_each(join);
    assert!(b.is_broken());
    b.reset();
    assert!(!b.is_broken());
    assert_eq!(b.parties(), 3);
    assert_eq!(b.n_waiting(), 0);
}

// ---------------------------------------------------------------------------
// 14. Subclassing Process (the tutorial favourite):
//
//     class Squarer(Process):
//         def __init__(self, numbers, out):
//             super().__init__(); self.numbers = numbers; self.out = out
//         def run(self):
//             for n in self.numbers: self.out.put((self.name, n * n))
//     out = Queue(); p = Squarer([1, 2, 3], out); p.start(); p.join()
//     [out.get()[1] for _ in range(3)] == [1, 4, 9]

struct Squarer {
    numbers: Vec<u64>,
    out: Queue<(String, u64)>,
}

// Python pickles the instance; here its fields are listed once (before
// `handoff_struct!` a port wrote the two-method `Handoff` impl by hand).
shmproc::handoff_struct!(Squarer { numbers, out });

impl shmproc::process::Run for Squarer {
    fn run(self) -> Result<(), String> {
        for n in self.numbers {
            self.out.put((current_process().name, n * n)).map_err(s)?;
        }
        Ok(())
    }
}
shmproc::entry!(impl Run for Squarer);

#[test]
fn process_subclass_run() {
    let out = Queue::<(String, u64)>::new(0).unwrap();
    let mut p = Process::from_run(Squarer { numbers: vec![1, 2, 3], out: out.clone() }).with_name("squarer");
    start(&mut p);
    join(&mut p);
    let got: Vec<(String, u64)> = (0..3).map(|_| out.get_timeout(DEADLINE).unwrap()).collect();
    assert_eq!(got, [("squarer".to_string(), 1), ("squarer".to_string(), 4), ("squarer".to_string(), 9)]);
}

// ---------------------------------------------------------------------------
// 15. Misuse of a Process object, as Python reports it:
//
//     p = Process(target=f)
//     p.join()        # AssertionError: can only join a started process
//     p.start(); p.start()   # AssertionError: cannot start a process twice
//     p.close()       # ValueError: Cannot close a process while it is still running
//     def bye(): sys.exit(3)
//     q = Process(target=bye); q.start(); q.join(); q.exitcode == 3
//     def fails(): raise ValueError("nope")
//     r = Process(target=fails); ...; r.exitcode == 1

shmproc::entry! {
    fn wait_for_event(e: Event) -> Result<(), String> {
        if e.wait_timeout(Duration::from_secs(60)) { Ok(()) } else { Err("never set".into()) }
    }
}

shmproc::entry! {
    fn exit_3(_: ()) { std::process::exit(3) }
}

shmproc::entry! {
    fn fails(_: ()) -> Result<(), String> { Err("ValueError: nope".into()) }
}

#[test]
fn process_misuse_and_exit_codes() {
    let e = Event::new().unwrap();
    let mut p = Process::new(wait_for_event, e.clone());
    assert!(matches!(p.join(), Err(shmproc::ProcessError::NotStarted(_))));
    assert!(matches!(p.join_timeout(Duration::from_millis(1)), Err(shmproc::ProcessError::NotStarted(_))));
    assert_eq!(p.pid(), None);
    start(&mut p);
    assert!(matches!(p.start(), Err(shmproc::ProcessError::AlreadyStarted(_))));
    assert!(matches!(p.close(), Err(shmproc::ProcessError::StillRunning(_))));
    assert!(!p.join_timeout(Duration::from_millis(20)).unwrap());
    assert_eq!(p.exitcode(), None);
    e.set();
    join(&mut p);
    p.close().unwrap();

    let mut q = Process::new(exit_3, ());
    start(&mut q);
    assert!(matches!(join_raw(&mut q), Err(shmproc::ProcessError::Exited { code: 3, .. })));
    assert_eq!(q.exitcode(), Some(3));

    let mut r = Process::new(fails, ());
    start(&mut r);
    let err = join_raw(&mut r).unwrap_err();
    assert!(err.to_string().contains("ValueError: nope"), "{err}");
    assert_eq!(r.exitcode(), Some(1));
}

// ---------------------------------------------------------------------------
// 16. Word count into a Manager dict from several processes:
//
//     def count(lines, d, lock):
//         for line in lines:
//             for w in line.split():
//                 with lock: d[w] = d.get(w, 0) + 1
//     m = Manager(); d = m.dict(); lock = m.Lock()
//     chunks = [text[i::3] for i in range(3)]; 3 processes
//     dict(d) == collections.Counter(text.split())

const TEXT: &[&str] =
    &["the quick brown fox", "jumps over the lazy dog", "the dog barks", "a fox runs", "the end", "quick quick quick"];

shmproc::entry! {
    fn count_words(args: (Vec<String>, DictProxy<String, u64>)) -> Result<(), String> {
        let (lines, d) = args;
        for line in lines {
            for w in line.split_whitespace() {
                d.update_with(&w.to_string(), 0, |n| *n += 1).map_err(s)?;
            }
        }
        Ok(())
    }
}

#[test]
fn manager_dict_word_count() {
    let m = Manager::new().unwrap();
    let d = m.dict_anon::<String, u64>().unwrap();
    let mut ps: Vec<Process> = (0..3)
        .map(|i| {
            let chunk: Vec<String> = TEXT.iter().skip(i).step_by(3).map(|s| s.to_string()).collect();
            Process::new(count_words, (chunk, d.clone()))
        })
        .collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for w in TEXT.iter().flat_map(|l| l.split_whitespace()) {
        *want.entry(w.to_string()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> = d.items().unwrap().into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(d.get(&"the".to_string()).unwrap(), Some(4));
    assert_eq!(d.get(&"cat".to_string()).unwrap(), None);
}

// ---------------------------------------------------------------------------
// 17. imap over an endless generator, stopping early:
//
//     def naturals():
//         n = 0
//         while True: yield n; n += 1
//     with Pool(2) as p:
//         for r in p.imap(square, naturals()):
//             if r > 50: break
//             seen.append(r)
//     seen == [0, 1, 4, 9, 16, 25, 36, 49]      # leaving the block terminates the pool

shmproc::task! { fn sq(x: u64) -> u64 { x * x } }

#[test]
fn imap_endless_generator_break_early() {
    let mut seen = Vec::new();
    {
        let pool = Pool::new(2).unwrap();
        for r in pool.imap(sq, 0u64..).unwrap() {
            let r = r.unwrap();
            if r > 50 {
                break;
            }
            seen.push(r);
        }
    }
    assert_eq!(seen, [0, 1, 4, 9, 16, 25, 36, 49]);
}

// ---------------------------------------------------------------------------
// 18. A stop flag in a Value (Python: Value(c_bool, False)), threads and
//     processes sharing one Queue:
//
//     def pump(q, running):
//         n = 0
//         while running.value: q.put(n); n += 1; time.sleep(0.001)
//     running = Value(c_bool, True); q = Queue()
//     p = Process(target=pump, args=(q, running)); p.start()
//     t = Thread(target=lambda: [q.get() for _ in range(10)]); t.start(); t.join()
//     running.value = False; p.join()
//
// There is no Value<bool> (bool is not plain data: not every byte is a bool);
// a port uses Value<u8>.

shmproc::entry! {
    fn pump(args: (Queue<u64>, Value<u8>)) -> Result<(), String> {
        let (q, running) = args;
        let mut n = 0;
        while running.get().map_err(s)? != 0 {
            q.put(n).map_err(s)?;
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

#[test]
fn stop_flag_value_and_thread_consumer() {
    let q = Queue::<u64>::new(0).unwrap();
    let running = Value::new(1u8).unwrap();
    let mut p = Process::new(pump, (q.clone(), running.clone()));
    start(&mut p);
    let qt = q.clone();
    let t =
        std::thread::spawn(move || (0..10).map(|_| qt.get_timeout(DEADLINE).map_err(s)).collect::<Result<Vec<_>, _>>());
    let got = t.join().unwrap().unwrap();
    assert_eq!(got, (0..10).collect::<Vec<u64>>());
    running.set(0).unwrap();
    join(&mut p);
}

// ---------------------------------------------------------------------------
// 19. Synchronisation objects made by a Manager (the usual way to hand them
//     to pool workers in Python), found by name in a child:
//
//     def worker(m_objs):
//         ev, sem, b, cond, rl, v = m_objs
//         b.wait(timeout=60)             # both sides arrived
//         ev.wait(60)
//         with rl:
//             with rl: v.value += 1      # RLock re-entry
//         with cond: cond.notify_all()
//         sem.release()
//     with Manager() as m:
//         ev = m.Event(); sem = m.Semaphore(0); b = m.Barrier(2)
//         cond = m.Condition(); rl = m.RLock(); v = m.Value('i', 0)
//         p = Process(target=worker, args=((ev, sem, b, cond, rl, v),)); p.start()
//         b.wait(timeout=60); ev.set()
//         sem.acquire(timeout=60) -> True; v.value == 1; p.join()
//
// Before Manager::event / semaphore / barrier / condition / rlock existed,
// only `lock`, `value`, `array`, `queue`, `list`, `dict` had a Manager form.

shmproc::entry! {
    fn manager_sync_worker(m: Manager) -> Result<(), String> {
        let b = m.barrier("b", 2).map_err(s)?;
        b.wait_timeout(Duration::from_secs(60)).map_err(s)?;
        if !m.event("ev").map_err(s)?.wait_timeout(Duration::from_secs(60)) {
            return Err("event never set".into());
        }
        let rl = m.rlock("rl").map_err(s)?;
        let v = m.value("v", 0i64).map_err(s)?;
        {
            let _outer = rl.lock().map_err(s)?;
            let _inner = rl.lock().map_err(s)?;
            v.get_lock().map_err(s)?.update(|x| *x += 1);
        }
        let cond = m.condition("cond").map_err(s)?;
        let g = cond.lock().map_err(s)?;
        cond.notify_all(&g);
        drop(g);
        m.bounded_semaphore("bs", 1).map_err(s)?.release().err().ok_or("over-release of a bounded semaphore passed")?;
        m.semaphore("sem", 0).map_err(s)?.release().map_err(s)
    }
}

#[test]
fn manager_sync_primitives_found_by_name_in_a_child() {
    let m = Manager::new().unwrap();
    let ev = m.event("ev").unwrap();
    let sem = m.semaphore("sem", 0).unwrap();
    let b = m.barrier("b", 2).unwrap();
    m.condition("cond").unwrap();
    m.rlock("rl").unwrap();
    m.bounded_semaphore("bs", 1).unwrap();
    let v = m.value("v", 0i64).unwrap();
    let mut p = Process::new(manager_sync_worker, m.clone());
    start(&mut p);
    b.wait_timeout(DEADLINE).unwrap();
    ev.set();
    assert!(sem.acquire_timeout(DEADLINE));
    join(&mut p);
    assert_eq!(v.get().unwrap(), 1);
    let kinds: Vec<(String, shmproc::Kind)> = m.names().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    use shmproc::Kind;
    assert_eq!(
        kinds,
        [
            ("b".to_string(), Kind::Barrier),
            ("bs".into(), Kind::BoundedSemaphore),
            ("cond".into(), Kind::Condition),
            ("ev".into(), Kind::Event),
            ("rl".into(), Kind::RLock),
            ("sem".into(), Kind::Semaphore),
            ("v".into(), Kind::Value),
        ]
    );
    assert!(matches!(m.event("sem"), Err(shmproc::OpenError::WrongKind { .. })));
}

// ---------------------------------------------------------------------------
// 20. The Stack Overflow classic "Synchronized objects should only be shared
//     through inheritance": a Value handed to Pool workers by the initializer
//     and kept in a global:
//
//     def init(c):
//         global counter; counter = c
//     def bump(_):
//         with counter.get_lock():
//             counter.value += 1; return counter.value
//     counter = Value('i', 0)
//     with Pool(3, initializer=init, initargs=(counter,)) as p:
//         sorted(p.map(bump, range(50))) == list(range(1, 51))
//     counter.value == 50
//
// (In shmproc a Value could also be passed as the task's argument.)

static COUNTER: std::sync::OnceLock<Value<u64>> = std::sync::OnceLock::new();

shmproc::task! {
    fn init_counter(c: Value<u64>) -> () {
        let _ = COUNTER.set(c);
    }
}

shmproc::task! {
    fn bump(_x: u64) -> Result<u64, String> {
        let c = COUNTER.get().ok_or("initializer did not run")?;
        let mut g = c.get_lock().map_err(s)?;
        Ok(g.update(|v| {
            *v += 1;
            *v
        }))
    }
}

#[test]
fn pool_value_through_initializer_global() {
    let counter = Value::new(0u64).unwrap();
    let pool = Pool::builder().processes(3).initializer(init_counter, counter.clone()).build().unwrap();
    let mut got = pool.map(bump, 0..50).unwrap();
    got.sort();
    assert_eq!(got, (1..=50).collect::<Vec<u64>>());
    assert_eq!(counter.get().unwrap(), 50);
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// 21. A bounded buffer with a Condition (producers wait while full,
//     consumers while empty), the buffer a Manager list:
//
//     def producer(cond, buf, items):
//         for x in items:
//             with cond:
//                 cond.wait_for(lambda: len(buf) < 2)
//                 buf.append(x); cond.notify_all()
//     def consumer(cond, buf, n, out):
//         for _ in range(n):
//             with cond:
//                 cond.wait_for(lambda: len(buf) > 0)
//                 out.put(buf.pop(0)); cond.notify_all()
//     2 producers of 10 items each, 1 consumer of 20; sorted(out) == all 20

shmproc::entry! {
    fn cond_producer(args: (shmproc::Condition, ListProxy<u64>, u64)) -> Result<(), String> {
        let (cond, buf, base) = args;
        for x in base..base + 10 {
            let mut g = cond.lock().map_err(s)?;
            if !cond.wait_for_timeout(&mut g, Duration::from_secs(60), || buf.len() < 2).map_err(s)? {
                return Err("buffer never had room".into());
            }
            buf.append(x).map_err(s)?;
            cond.notify_all(&g);
        }
        Ok(())
    }
}

shmproc::entry! {
    fn cond_consumer(args: (shmproc::Condition, ListProxy<u64>, u64, Queue<u64>)) -> Result<(), String> {
        let (cond, buf, n, out) = args;
        for _ in 0..n {
            let mut g = cond.lock().map_err(s)?;
            if !cond.wait_for_timeout(&mut g, Duration::from_secs(60), || !buf.is_empty()).map_err(s)? {
                return Err("buffer never had an item".into());
            }
            out.put(buf.pop_at(0).map_err(s)?).map_err(s)?;
            cond.notify_all(&g);
        }
        Ok(())
    }
}

#[test]
fn condition_bounded_buffer() {
    let m = Manager::new().unwrap();
    let buf = m.list_anon::<u64>().unwrap();
    let cond = shmproc::Condition::new().unwrap();
    let out = Queue::<u64>::new(0).unwrap();
    let mut ps = [
        Process::new(cond_producer, (cond.clone(), buf.clone(), 0)),
        Process::new(cond_producer, (cond.clone(), buf.clone(), 100)),
        Process::new(cond_consumer, (cond.clone(), buf.clone(), 20, out.clone())),
    ];
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let mut got: Vec<u64> = (0..20).map(|_| out.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..10).chain(100..110).collect::<Vec<u64>>());
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// 22. A supervisor process that starts its own workers (grandchildren):
//
//     def work(q, i): q.put((current_process().name, parent_process().name, i * i))
//     def supervisor(q):
//         ws = [Process(target=work, args=(q, i)) for i in range(3)]
//         for w in ws: w.start()
//         for w in ws: w.join()
//     q = Queue(); s = Process(target=supervisor, args=(q,), name="sup"); s.start(); s.join()
//     sorted(q.get() for _ in range(3)) ==
//         [("Process-1:1"...)] -> names "sup:1".. in Python? No: a child's
//         children are named "Process-1:1", "Process-1:2", ... after the
//         parent's _identity, whatever the parent's name.
//
// Python also works when the parent kept no handle of `q`; shmproc's
// creator removes the name when its last handle drops, so the supervisor
// could not hand `q` on then (see the report): the parent keeps `q` here.

shmproc::entry! {
    fn grand_work(args: (Queue<(String, String, u64)>, u64)) -> Result<(), String> {
        let (q, i) = args;
        let parent = parent_process().ok_or("no parent")?;
        q.put((current_process().name, parent.name, i * i)).map_err(s)
    }
}

shmproc::entry! {
    fn supervise(q: Queue<(String, String, u64)>) -> Result<(), String> {
        let mut ws: Vec<Process> = (0..3).map(|i| Process::new(grand_work, (q.clone(), i))).collect();
        for w in &mut ws {
            w.start().map_err(s)?;
        }
        for w in &ws {
            if !w.join_timeout(Duration::from_secs(60)).map_err(s)? {
                let _ = w.kill();
                return Err(format!("{} hung", w.name()));
            }
        }
        Ok(())
    }
}

#[test]
fn supervisor_starts_grandchildren() {
    let q = Queue::<(String, String, u64)>::new(0).unwrap();
    let mut sup = Process::new(supervise, q.clone()).with_name("sup");
    start(&mut sup);
    join(&mut sup);
    let mut got: Vec<(String, String, u64)> = (0..3).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    let ident = sup.identity().iter().map(|i| i.to_string()).collect::<Vec<_>>().join(":");
    let want: Vec<(String, String, u64)> =
        (0..3u64).map(|i| (format!("Process-{ident}:{}", i + 1), "sup".to_string(), i * i)).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// 23. The other Stack Overflow classic: a Lock for the pool's workers made
//     right in the Pool call's initargs (the parent keeps no handle):
//
//     def init(l, c):
//         global lock, counter; lock = l; counter = c
//     def locked_bump(_):
//         with lock: counter.value += 1
//     counter = Value('i', 0)
//     with Pool(2, initializer=init, initargs=(Lock(), counter), maxtasksperchild=3) as p:
//         p.map(locked_bump, range(12), chunksize=1)
//     counter.value == 12
//
// The Rust port moves the new Lock into the builder. Before the fix the
// builder encoded the Lock and dropped it at once, which removed its name:
// every worker failed in the initializer ("shared object ... not found") and
// the map failed with "the pool's workers keep failing to start".

static LOCKED: std::sync::OnceLock<(Lock, Value<u64>)> = std::sync::OnceLock::new();

shmproc::task! {
    fn init_lock(args: (Lock, Value<u64>)) -> () {
        let _ = LOCKED.set(args);
    }
}

shmproc::task! {
    fn locked_bump(_x: u64) -> Result<(), String> {
        let (lock, counter) = LOCKED.get().ok_or("initializer did not run")?;
        let _held = lock.lock().map_err(s)?;
        counter.set(counter.get().map_err(s)? + 1).map_err(s)
    }
}

#[test]
fn pool_initializer_arg_made_inline_stays_open() {
    let counter = Value::new(0u64).unwrap();
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_lock, (Lock::new().unwrap(), counter.clone()))
        .maxtasksperchild(3)
        .build()
        .unwrap();
    pool.map_chunked(locked_bump, 0..12, 1).unwrap();
    assert_eq!(counter.get().unwrap(), 12);
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// 24. Instances of your own class through queues (pickled in Python):
//
//     @dataclass
//     class Order: id: int; item: str; qty: int; note: Optional[str]
//     @dataclass
//     class Receipt: order_id: int; total: float; by: str
//     def clerk(orders, receipts):
//         for o in iter(orders.get, None):
//             receipts.put(Receipt(o.id, o.qty * 2.5, current_process().name))
//     orders = Queue(); receipts = Queue(); 2 clerks
//     for i in range(6): orders.put(Order(i, f"item{i}", i + 1, None if i % 2 else "rush"))
//     orders.put(None) x2; sorted receipts by order_id -> totals [2.5, 5.0, ...]

#[derive(Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    item: String,
    qty: u32,
    note: Option<String>,
}
shmproc::handoff_struct!(Order { id, item, qty, note });

#[derive(Debug, Clone, PartialEq)]
struct Receipt {
    order_id: u64,
    total: f64,
    by: String,
}
shmproc::handoff_struct!(Receipt { order_id, total, by });

shmproc::entry! {
    fn clerk(args: (Queue<Option<Order>>, Queue<Receipt>)) -> Result<(), String> {
        let (orders, receipts) = args;
        while let Some(o) = orders.get().map_err(s)? {
            if o.item != format!("item{}", o.id) || o.note.is_some() != (o.id % 2 == 0) {
                return Err(format!("order arrived changed: {o:?}"));
            }
            receipts.put(Receipt { order_id: o.id, total: o.qty as f64 * 2.5, by: current_process().name }).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn own_structs_through_queues() {
    let orders = Queue::<Option<Order>>::new(0).unwrap();
    let receipts = Queue::<Receipt>::new(0).unwrap();
    let mut clerks: Vec<Process> = (0..2)
        .map(|i| Process::new(clerk, (orders.clone(), receipts.clone())).with_name(format!("clerk-{i}")))
        .collect();
    clerks.iter_mut().for_each(start);
    for i in 0..6u64 {
        let note = if i % 2 == 0 { Some("rush".to_string()) } else { None };
        orders.put(Some(Order { id: i, item: format!("item{i}"), qty: i as u32 + 1, note })).unwrap();
    }
    for _ in &clerks {
        orders.put(None).unwrap();
    }
    let mut got: Vec<Receipt> = (0..6).map(|_| receipts.get_timeout(DEADLINE).unwrap()).collect();
    clerks.iter_mut().for_each(join);
    got.sort_by_key(|r| r.order_id);
    assert_eq!(got.iter().map(|r| r.total).collect::<Vec<_>>(), [2.5, 5.0, 7.5, 10.0, 12.5, 15.0]);
    assert!(got.iter().all(|r| r.by.starts_with("clerk-")), "{got:?}");
}

// ---------------------------------------------------------------------------
// 25. map_async with a chunksize (big inputs, few round trips):
//
//     def tag(x): return (os.getpid(), x * 3)
//     with Pool(2) as p:
//         r = p.map_async(tag, range(8), chunksize=8)
//         out = r.get(timeout=60)
//     [v for _, v in out] == [0, 3, ..., 21]
//     len({pid for pid, _ in out}) == 1     # one chunk runs in one worker
//
// Before `map_async_chunked` only `map` had a chunked form (`map_chunked`).

shmproc::task! { fn pid_times3(x: u64) -> (u32, u64) { (std::process::id(), x * 3) } }

#[test]
fn map_async_with_chunksize() {
    let pool = Pool::new(2).unwrap();
    let out = pool.map_async_chunked(pid_times3, 0..8, 8).unwrap().get_timeout(DEADLINE).unwrap();
    assert_eq!(out.iter().map(|(_, v)| *v).collect::<Vec<_>>(), (0..8).map(|x| x * 3).collect::<Vec<_>>());
    let pids: BTreeSet<u32> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(pids.len(), 1, "one chunk of 8 ran in {pids:?}");
    pool.close();
    pool.join().unwrap();
}
