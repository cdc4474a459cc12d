//! Ports of the examples of Python's `multiprocessing` documentation
//! (<https://docs.python.org/3/library/multiprocessing.html>), written from
//! the README and the rustdoc only, as a Python user would. Each test
//! asserts what the Python program prints or returns. Real processes; every
//! wait has a deadline; nothing is left in /dev/shm.

// The Value example writes Python's literal 3.1415927, not PI.
#![allow(clippy::approx_constant)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shmproc::{
    Array, Barrier, Condition, Connection, DictProxy, Event, JoinableQueue, ListProxy, Lock, Manager, Pool, Process,
    Queue, Value, current_process, pipe,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// `p.join()` with a deadline: kills the child and fails on expiry.
fn join(p: &mut Process) {
    match p.join_timeout(DEADLINE) {
        Ok(true) => {}
        Ok(false) => {
            let _ = p.kill();
            panic!("process {} did not end within {DEADLINE:?}", p.name());
        }
        Err(e) => panic!("process {} failed: {e}", p.name()),
    }
    assert_eq!(p.exitcode(), Some(0), "exit code of {}", p.name());
}

fn start(p: &mut Process) {
    p.start().unwrap_or_else(|e| panic!("start {}: {e}", p.name()));
}

// ---------------------------------------------------------------------------
// Exchanging objects between processes: Queues
//
//     def f(q):
//         q.put([42, None, 'hello'])
//     q = Queue(); p = Process(target=f, args=(q,)); p.start()
//     print(q.get())    # prints "[42, None, 'hello']"
//     p.join()

type Item = (i64, Option<i64>, String);

shmproc::entry! {
    fn queue_f(q: Queue<Item>) -> Result<(), String> {
        q.put((42, None, "hello".to_string())).map_err(|e| e.to_string())
    }
}

#[test]
fn queue_exchange() {
    let q = Queue::<Item>::new(0).unwrap();
    let mut p = Process::new(queue_f, q.clone());
    start(&mut p);
    assert_eq!(q.get_timeout(DEADLINE).unwrap(), (42, None, "hello".to_string()));
    join(&mut p);
}

// ---------------------------------------------------------------------------
// Pipes
//
//     def f(conn):
//         conn.send([42, None, 'hello'])
//         conn.close()
//     parent_conn, child_conn = Pipe()
//     p = Process(target=f, args=(child_conn,)); p.start()
//     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//     p.join()

shmproc::entry! {
    fn pipe_f(mut conn: Connection) -> Result<(), String> {
        conn.send_value(&(42i64, None::<i64>, "hello".to_string())).map_err(|e| e.to_string())?;
        conn.close();
        Ok(())
    }
}

#[test]
fn pipe_exchange() {
    let (mut parent_conn, child_conn) = pipe(true).unwrap();
    let mut p = Process::new(pipe_f, child_conn);
    start(&mut p);
    let got: Item = parent_conn.recv_value_timeout(DEADLINE).unwrap();
    assert_eq!(got, (42, None, "hello".to_string()));
    join(&mut p);
}

// ---------------------------------------------------------------------------
// Synchronization between processes
//
//     def f(l, i):
//         l.acquire()
//         try: print('hello world', i)
//         finally: l.release()
//     lock = Lock()
//     for num in range(10): Process(target=f, args=(lock, num)).start()
//
// "print" goes to a shared list here so the test can check it.

shmproc::entry! {
    fn lock_f(args: (Lock, ListProxy<String>, u64)) -> Result<(), String> {
        let (l, out, i) = args;
        let _held = l.lock().map_err(|e| e.to_string())?;
        out.append(format!("hello world {i}")).map_err(|e| e.to_string())
    }
}

#[test]
fn lock_printing() {
    let lock = Lock::new().unwrap();
    let mgr = Manager::new().unwrap();
    let out = mgr.list_anon::<String>().unwrap();
    let mut ps: Vec<Process> = (0..10).map(|num| Process::new(lock_f, (lock.clone(), out.clone(), num))).collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let printed: BTreeSet<String> = out.to_vec().unwrap().into_iter().collect();
    let want: BTreeSet<String> = (0..10).map(|i| format!("hello world {i}")).collect();
    assert_eq!(printed, want);
}

// ---------------------------------------------------------------------------
// Sharing state: shared memory
//
//     def f(n, a):
//         n.value = 3.1415927
//         for i in range(len(a)): a[i] = -a[i]
//     num = Value('d', 0.0); arr = Array('i', range(10))
//     p = Process(target=f, args=(num, arr)); p.start(); p.join()
//     print(num.value)   # 3.1415927
//     print(arr[:])      # [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]

shmproc::entry! {
    fn value_array_f(args: (Value<f64>, Array<i32>)) -> Result<(), String> {
        let (n, a) = args;
        n.set(3.1415927).map_err(|e| e.to_string())?;
        for i in 0..a.len() {
            let v = a.get(i).map_err(|e| e.to_string())?;
            a.set(i, -v).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn value_and_array() {
    let num = Value::new(0.0f64).unwrap();
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>()).unwrap();
    let mut p = Process::new(value_array_f, (num.clone(), arr.clone()));
    start(&mut p);
    join(&mut p);
    assert_eq!(num.get().unwrap(), 3.1415927);
    assert_eq!(arr.to_vec().unwrap(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
}

// ---------------------------------------------------------------------------
// Sharing state: server process (Manager)
//
//     def f(d, l):
//         d[1] = '1'; d['2'] = 2; d[0.25] = None
//         l.reverse()
//     with Manager() as manager:
//         d = manager.dict(); l = manager.list(range(10))
//         p = Process(target=f, args=(d, l)); p.start(); p.join()
//         print(d)   # {1: '1', '2': 2, 0.25: None}
//         print(l)   # [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
//
// Keys and values of mixed types have no Rust equivalent: String -> String.

shmproc::entry! {
    fn manager_f(args: (DictProxy<String, String>, ListProxy<i64>)) -> Result<(), String> {
        let (d, l) = args;
        d.insert("1".into(), "'1'".into()).map_err(|e| e.to_string())?;
        d.insert("'2'".into(), "2".into()).map_err(|e| e.to_string())?;
        d.insert("0.25".into(), "None".into()).map_err(|e| e.to_string())?;
        l.reverse().map_err(|e| e.to_string())
    }
}

#[test]
fn manager_list_and_dict() {
    let manager = Manager::new().unwrap();
    let d = manager.dict_anon::<String, String>().unwrap();
    let l = manager.list_anon::<i64>().unwrap();
    l.extend(0..10).unwrap();
    let mut p = Process::new(manager_f, (d.clone(), l.clone()));
    start(&mut p);
    join(&mut p);
    let items: Vec<(String, String)> = d.items().unwrap();
    assert_eq!(items, [("1".into(), "'1'".into()), ("'2'".into(), "2".into()), ("0.25".into(), "None".into())]);
    assert_eq!(l, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
}

// ---------------------------------------------------------------------------
// Using a pool of workers
//
//     def f(x): return x*x
//     with Pool(processes=4) as pool:
//         print(pool.map(f, range(10)))            # [0, 1, 4, ..., 81]
//         for i in pool.imap_unordered(f, range(10)): print(i)   # arbitrary order
//         res = pool.apply_async(f, (20,)); print(res.get(timeout=1))   # 400
//         res = pool.apply_async(os.getpid, ()); print(res.get(timeout=1))  # a worker's pid
//         multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//         print([res.get(timeout=1) for res in multiple_results])
//         res = pool.apply_async(time.sleep, (10,))
//         try: print(res.get(timeout=1))
//         except TimeoutError: print("We lacked patience and got a multiprocessing.TimeoutError")
//     # exiting the 'with'-block has stopped the pool

shmproc::task! { fn square(x: u64) -> u64 { x * x } }
shmproc::task! { fn getpid(_: ()) -> u32 { std::process::id() } }
shmproc::task! { fn sleep_secs(s: u64) -> () { std::thread::sleep(Duration::from_secs(s)) } }

#[test]
fn pool_with_block() {
    let squares: Vec<u64> = (0..10).map(|x| x * x).collect();
    let t0;
    {
        let pool = Pool::new(4).unwrap();
        assert_eq!(pool.map(square, 0..10).unwrap(), squares);

        let mut unordered: Vec<u64> = pool.imap_unordered(square, 0..10).unwrap().map(Result::unwrap).collect();
        unordered.sort();
        assert_eq!(unordered, squares);

        assert_eq!(pool.apply_async(square, 20).unwrap().get_timeout(DEADLINE).unwrap(), 400);

        let pid = pool.apply_async(getpid, ()).unwrap().get_timeout(DEADLINE).unwrap();
        assert_ne!(pid, std::process::id());

        let multiple: Vec<_> = (0..4).map(|_| pool.apply_async(getpid, ()).unwrap()).collect();
        let pids: Vec<u32> = multiple.into_iter().map(|r| r.get_timeout(DEADLINE).unwrap()).collect();
        assert!(pids.iter().all(|&p| p != std::process::id()));

        let res = pool.apply_async(sleep_secs, 10).unwrap();
        match res.get_timeout(Duration::from_secs(1)) {
            Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => {}
            other => panic!("expected TimedOut, got {:?}", other.map_err(|e| e.to_string())),
        }
        t0 = Instant::now();
    } // leaving the block terminates the pool: it must not wait for the 10 s sleep
    assert!(t0.elapsed() < Duration::from_secs(9), "dropping the pool waited for a running task");
}

// ---------------------------------------------------------------------------
// The pool example at the end of the page: calculate / mul / plus, and
// error handling (`f(x) = 1.0 / (x - 5.0)` raises ZeroDivisionError for 5).
//
//     TASKS = [(mul, (i, 7)) for i in range(10)] + [(plus, (i, 8)) for i in range(10)]
//     results = [pool.apply_async(calculate, t) for t in TASKS]
//     imap_it = pool.imap(calculatestar, TASKS)
//     imap_unordered_it = pool.imap_unordered(calculatestar, TASKS)
//     ...
//     pool.apply(f, (5,))                 -> raises ZeroDivisionError
//     pool.map(f, list(range(10)))        -> raises ZeroDivisionError
//     list(pool.imap(f, list(range(10)))) -> raises on the 6th item
//     pool.map(pow3, range(100)) == list(map(pow3, range(100)))
//     pool.map(pow3, range(100), chunksize=20)

fn calc(op: &str, a: i64, b: i64) -> String {
    let r = if op == "mul" { a * b } else { a + b };
    format!("{} says that {op}({a}, {b}) = {r}", current_process().name)
}

shmproc::task! {
    fn calculatestar(t: (String, i64, i64)) -> String { calc(&t.0, t.1, t.2) }
}

shmproc::task! {
    fn f_div(x: i64) -> Result<f64, String> {
        if x == 5 { Err("ZeroDivisionError: float division by zero".into()) } else { Ok(1.0 / (x as f64 - 5.0)) }
    }
}

shmproc::task! { fn pow3(x: u64) -> u64 { x * x * x } }

fn tasks() -> Vec<(String, i64, i64)> {
    (0..10).map(|i| ("mul".to_string(), i, 7)).chain((0..10).map(|i| ("plus".to_string(), i, 8))).collect()
}

fn strip_name(s: &str) -> &str {
    &s[s.find(" says that ").expect("says that")..]
}

#[test]
fn pool_calculate_example() {
    let pool = Pool::new(4).unwrap();
    let want: Vec<String> = tasks()
        .iter()
        .map(|(op, a, b)| {
            let r = if op == "mul" { a * b } else { a + b };
            format!(" says that {op}({a}, {b}) = {r}")
        })
        .collect();

    let results: Vec<_> = tasks().into_iter().map(|t| pool.apply_async(calculatestar, t).unwrap()).collect();
    let got: Vec<String> = results.into_iter().map(|r| r.get_timeout(DEADLINE).unwrap()).collect();
    assert_eq!(got.iter().map(|s| strip_name(s).to_string()).collect::<Vec<_>>(), want);
    // A worker's name, as Python's `current_process().name` in a pool worker
    // ("SpawnPoolWorker-3"): not the parent's.
    assert!(got.iter().all(|s| !s.starts_with("MainProcess")), "{got:?}");

    let imap: Vec<String> = pool.imap(calculatestar, tasks()).unwrap().map(Result::unwrap).collect();
    assert_eq!(imap.iter().map(|s| strip_name(s).to_string()).collect::<Vec<_>>(), want);

    let mut unordered: Vec<String> =
        pool.imap_unordered(calculatestar, tasks()).unwrap().map(|r| strip_name(&r.unwrap()).to_string()).collect();
    unordered.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(unordered, want_sorted);

    // Ordinary map and chunksize.
    let serial: Vec<u64> = (0..100).map(|x| x * x * x).collect();
    assert_eq!(pool.map(pow3, 0..100).unwrap(), serial);
    assert_eq!(pool.map_chunked(pow3, 0..100, 20).unwrap(), serial);

    // Error handling.
    let e = pool.apply(f_div, 5).unwrap_err();
    assert!(e.to_string().contains("ZeroDivisionError"), "{e}");
    let e = pool.map(f_div, 0..10).unwrap_err();
    assert!(e.to_string().contains("ZeroDivisionError"), "{e}");
    let it: Vec<_> = pool.imap(f_div, 0..10).unwrap().collect();
    assert_eq!(it.len(), 10);
    for (i, r) in it.iter().enumerate() {
        assert_eq!(r.is_err(), i == 5, "item {i}: {r:?}");
    }
    assert_eq!(it[4].as_ref().unwrap(), &-1.0);

    // Timeouts: res = pool.apply_async(time.sleep, (0.5,)); res.get(0.02) raises TimeoutError
    let res = pool.apply_async(sleep_secs, 1).unwrap();
    let res = match res.get_timeout(Duration::from_millis(20)) {
        Err(shmproc::pool::GetTimeoutError::TimedOut(r)) => r,
        other => panic!("expected TimedOut, got {:?}", other.map_err(|e| e.to_string())),
    };
    res.get_timeout(DEADLINE).unwrap();

    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// A pool whose worker raises:
//
//     def f(x): raise ValueError("bad %d" % x)
//     with Pool(2) as p:
//         r = p.apply_async(f, (3,))
//         r.get(timeout=5)     # raises ValueError('bad 3') in the parent
//         r.successful()       # False

shmproc::task! {
    fn raise_value_error(x: u64) -> Result<u64, String> { Err(format!("ValueError: bad {x}")) }
}

shmproc::task! {
    fn panics(x: u64) -> u64 { panic!("bad {x}") }
}

#[test]
fn pool_worker_raises() {
    let pool = Pool::new(2).unwrap();
    let r = pool.apply_async(raise_value_error, 3).unwrap();
    assert!(r.wait_timeout(DEADLINE));
    assert_eq!(r.successful(), Some(false));
    let e = r.get().unwrap_err();
    assert!(e.to_string().contains("ValueError: bad 3"), "{e}");

    let r = pool.apply_async(panics, 4).unwrap();
    let e = r.get_timeout(DEADLINE).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("bad 4"), "{e}");

    // The pool still works afterwards, as Python's does.
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// Event:
//
//     def f(e, done): e.wait(); done.set()
//     e = Event(); done = Event(); p = Process(target=f, args=(e, done)); p.start()
//     e.set(); done.wait(5) -> True; p.join()

shmproc::entry! {
    fn event_f(args: (Event, Event)) {
        let (e, done) = args;
        e.wait();
        done.set();
    }
}

#[test]
fn event_handshake() {
    let e = Event::new().unwrap();
    let done = Event::new().unwrap();
    let mut p = Process::new(event_f, (e.clone(), done.clone()));
    start(&mut p);
    assert!(!done.wait_timeout(Duration::from_millis(50)));
    e.set();
    assert!(done.wait_timeout(DEADLINE));
    join(&mut p);
}

// ---------------------------------------------------------------------------
// Condition:
//
//     def consumer(cond, v):
//         with cond: cond.wait_for(lambda: v.value == 1)
//     def producer(cond, v):
//         with cond: v.value = 1; cond.notify_all()

shmproc::entry! {
    fn cond_consumer(args: (Condition, Value<u32>, Value<u32>)) -> Result<(), String> {
        let (cond, v, seen) = args;
        let mut g = cond.lock().map_err(|e| e.to_string())?;
        cond.wait_for(&mut g, || v.get().unwrap() == 1).map_err(|e| e.to_string())?;
        seen.get_lock().map_err(|e| e.to_string())?.update(|s| *s += 1);
        Ok(())
    }
}

shmproc::entry! {
    fn cond_producer(args: (Condition, Value<u32>)) -> Result<(), String> {
        let (cond, v) = args;
        let g = cond.lock().map_err(|e| e.to_string())?;
        v.set(1).map_err(|e| e.to_string())?;
        cond.notify_all(&g);
        Ok(())
    }
}

#[test]
fn condition_wait_for() {
    let cond = Condition::new().unwrap();
    let v = Value::new(0u32).unwrap();
    let seen = Value::new(0u32).unwrap();
    let mut cs: Vec<Process> =
        (0..2).map(|_| Process::new(cond_consumer, (cond.clone(), v.clone(), seen.clone()))).collect();
    cs.iter_mut().for_each(start);
    let mut p = Process::new(cond_producer, (cond.clone(), v.clone()));
    start(&mut p);
    join(&mut p);
    cs.iter_mut().for_each(join);
    assert_eq!(seen.get().unwrap(), 2);
}

// ---------------------------------------------------------------------------
// Barrier:
//
//     def f(b, q): q.put(b.wait())
//     b = Barrier(3); three processes; sorted(results) == [0, 1, 2]

shmproc::entry! {
    fn barrier_f(args: (Barrier, Queue<u32>)) -> Result<(), String> {
        let (b, q) = args;
        let i = b.wait_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
        q.put(i).map_err(|e| e.to_string())
    }
}

#[test]
fn barrier_arrival_indices() {
    let b = Barrier::new(3).unwrap();
    let q = Queue::<u32>::new(0).unwrap();
    let mut ps: Vec<Process> = (0..3).map(|_| Process::new(barrier_f, (b.clone(), q.clone()))).collect();
    ps.iter_mut().for_each(start);
    let mut got: Vec<u32> = (0..3).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    ps.iter_mut().for_each(join);
    got.sort();
    assert_eq!(got, [0, 1, 2]);
}

// ---------------------------------------------------------------------------
// JoinableQueue producer/consumer:
//
//     def worker(q, out):
//         while True:
//             item = q.get()
//             if item is None: q.task_done(); break
//             out.put(item * 2); q.task_done()
//     q = JoinableQueue(); for i in range(20): q.put(i)
//     start 3 workers; q.join()   # returns once every item is done
//     for _ in workers: q.put(None)

shmproc::entry! {
    fn jq_worker(args: (JoinableQueue<Option<u64>>, Queue<u64>)) -> Result<(), String> {
        let (q, out) = args;
        loop {
            let item = q.get().map_err(|e| e.to_string())?;
            match item {
                None => {
                    q.task_done().map_err(|e| e.to_string())?;
                    return Ok(());
                }
                Some(i) => {
                    out.put(i * 2).map_err(|e| e.to_string())?;
                    q.task_done().map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

#[test]
fn joinable_queue_task_done() {
    let q = JoinableQueue::<Option<u64>>::new(0).unwrap();
    let out = Queue::<u64>::new(0).unwrap();
    for i in 0..20 {
        q.put(Some(i)).unwrap();
    }
    let mut ps: Vec<Process> = (0..3).map(|_| Process::new(jq_worker, (q.clone(), out.clone()))).collect();
    ps.iter_mut().for_each(start);
    assert!(q.join_timeout(DEADLINE), "q.join() did not return");
    assert_eq!(out.qsize(), 20);
    for _ in 0..3 {
        q.put(None).unwrap();
    }
    ps.iter_mut().for_each(join);
    assert!(q.join_timeout(DEADLINE));
    let mut got: Vec<u64> = (0..20).map(|_| out.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..20).map(|i| i * 2).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// The last example of the page: feeding tasks to worker processes through
// a Queue and collecting results through another.
//
//     def worker(input, output):
//         for func, args in iter(input.get, 'STOP'):
//             output.put(calculate(func, args))
//     task_queue = Queue(); done_queue = Queue()
//     for task in TASKS1: task_queue.put(task)            # (mul, (i, 7)) for i in range(20)
//     for i in range(4): Process(target=worker, args=(task_queue, done_queue)).start()
//     for i in range(len(TASKS1)): print('\t', done_queue.get())
//     for task in TASKS2: task_queue.put(task)            # (plus, (i, 8)) for i in range(10)
//     for i in range(len(TASKS2)): print('\t', done_queue.get())
//     for i in range(4): task_queue.put('STOP')

shmproc::entry! {
    fn queue_worker(args: (Queue<(String, i64, i64)>, Queue<String>)) -> Result<(), String> {
        let (input, output) = args;
        loop {
            let (func, a, b) = input.get().map_err(|e| e.to_string())?;
            if func == "STOP" {
                return Ok(());
            }
            output.put(calc(&func, a, b)).map_err(|e| e.to_string())?;
        }
    }
}

#[test]
fn queue_worker_pool_example() {
    let task_queue = Queue::<(String, i64, i64)>::new(0).unwrap();
    let done_queue = Queue::<String>::new(0).unwrap();
    for i in 0..20 {
        task_queue.put(("mul".into(), i, 7)).unwrap();
    }
    let mut ps: Vec<Process> =
        (0..4).map(|_| Process::new(queue_worker, (task_queue.clone(), done_queue.clone()))).collect();
    ps.iter_mut().for_each(start);
    let names: BTreeSet<String> = ps.iter().map(|p| p.name().to_string()).collect();
    let mut first: Vec<String> = (0..20).map(|_| done_queue.get_timeout(DEADLINE).unwrap()).collect();
    for s in &first {
        let name = &s[..s.find(" says that ").unwrap()];
        assert!(names.contains(name), "{name} is not one of {names:?}");
        assert!(name.starts_with("Process-"), "{s}");
    }
    first.sort_by_key(|s| strip_name(s).to_string());
    let mut want: Vec<String> = (0..20).map(|i| format!(" says that mul({i}, 7) = {}", i * 7)).collect();
    want.sort();
    assert_eq!(first.iter().map(|s| strip_name(s).to_string()).collect::<Vec<_>>(), want);

    for i in 0..10 {
        task_queue.put(("plus".into(), i, 8)).unwrap();
    }
    let mut second: Vec<String> =
        (0..10).map(|_| strip_name(&done_queue.get_timeout(DEADLINE).unwrap()).to_string()).collect();
    second.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!(" says that plus({i}, 8) = {}", i + 8)).collect();
    want.sort();
    assert_eq!(second, want);

    for _ in 0..4 {
        task_queue.put(("STOP".into(), 0, 0)).unwrap();
    }
    ps.iter_mut().for_each(join);
}

// ---------------------------------------------------------------------------
// The pool example's "Testing IMapIterator.next() with timeout":
//
//     it = pool.imap(calculatestar, TASKS)
//     while 1:
//         try: sys.stdout.write('\n\t%s' % it.next(0.02))
//         except StopIteration: break
//         except multiprocessing.TimeoutError: sys.stdout.write('.')

shmproc::task! { fn sleep_ms(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms } }

#[test]
fn imap_next_with_timeout() {
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(sleep_ms, [300, 0, 0]).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut dots = 0;
    loop {
        assert!(started.elapsed() < DEADLINE, "imap did not finish");
        match it.next_timeout(Duration::from_millis(20)) {
            Ok(Some(r)) => got.push(r.unwrap()),
            Ok(None) => break, // StopIteration
            Err(shmproc::pool::NextTimedOut) => dots += 1,
        }
    }
    assert_eq!(got, [300, 0, 0]);
    assert!(dots > 0, "the first item sleeps 300 ms: a 20 ms next must time out at least once");
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------------------
// Pipe: recv on a connection whose peer closed raises EOFError.
//
//     def f(conn): conn.send('x'); conn.close()
//     parent_conn, child_conn = Pipe(); p = Process(target=f, args=(child_conn,)); p.start()
//     child_conn.close(); parent_conn.recv() == 'x'; p.join()
//     parent_conn.recv()   # raises EOFError

shmproc::entry! {
    fn pipe_send_x(mut conn: Connection) -> Result<(), String> {
        conn.send_value(&"x".to_string()).map_err(|e| e.to_string())?;
        conn.close();
        Ok(())
    }
}

#[test]
fn pipe_eof_after_peer_closed() {
    let (mut parent_conn, child_conn) = pipe(true).unwrap();
    let mut p = Process::new(pipe_send_x, child_conn);
    start(&mut p);
    assert_eq!(parent_conn.recv_value_timeout::<String>(DEADLINE).unwrap(), "x");
    join(&mut p);
    let e = parent_conn.recv_value_timeout::<String>(DEADLINE).unwrap_err();
    // Python: EOFError. Here: "the other end of the pipe is gone".
    assert!(e.to_string().contains("gone"), "{e}");
}

// ---------------------------------------------------------------------------
// Process lifecycle (the doc's terminate example):
//
//     p = multiprocessing.Process(target=time.sleep, args=(1000,))
//     p.is_alive() -> False; p.start(); p.is_alive() -> True
//     p.terminate(); time.sleep(0.1); p.is_alive() -> False
//     p.exitcode == -signal.SIGTERM -> True

shmproc::entry! {
    fn sleep_long(s: u64) { std::thread::sleep(Duration::from_secs(s)) }
}

#[test]
fn process_terminate_exitcode() {
    let mut p = Process::new(sleep_long, 1000);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    start(&mut p);
    assert!(p.is_alive());
    p.terminate().unwrap();
    // Python's join() returns None here; shmproc's reports the signal as an
    // error (README: "Err carries the child's error"), so a port cannot `?` it.
    match p.join_timeout(DEADLINE) {
        Err(shmproc::ProcessError::Signaled { signal: 15, .. }) => {}
        other => panic!("expected Signaled(15), got {other:?}"),
    }
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(-15));
}

// ---------------------------------------------------------------------------
// multiprocessing.connection.wait (the doc's example):
//
//     def foo(w):
//         for i in range(10): w.send((i, current_process().name))
//         w.close()
//     readers = []
//     for i in range(4):
//         r, w = Pipe(duplex=False); readers.append(r)
//         p = Process(target=foo, args=(w,)); p.start()
//         w.close()
//     while readers:
//         for r in wait(readers):
//             try: msg = r.recv()
//             except EOFError: readers.remove(r)
//             else: print(msg)

shmproc::entry! {
    fn wait_foo(mut w: Connection) -> Result<(), String> {
        for i in 0..10u64 {
            w.send_value(&(i, current_process().name)).map_err(|e| e.to_string())?;
        }
        w.close();
        Ok(())
    }
}

#[test]
fn connection_wait_readers() {
    let mut readers = Vec::new();
    let mut ps = Vec::new();
    for _ in 0..4 {
        let (r, w) = pipe(false).unwrap();
        readers.push(r);
        let mut p = Process::new(wait_foo, w);
        start(&mut p);
        ps.push(p);
    }
    let names: BTreeSet<String> = ps.iter().map(|p| p.name().to_string()).collect();
    let mut msgs = Vec::new();
    let started = Instant::now();
    while !readers.is_empty() {
        assert!(started.elapsed() < DEADLINE, "readers never all reached EOF");
        let mut objs: Vec<&mut dyn shmproc::Waitable> =
            readers.iter_mut().map(|r| r as &mut dyn shmproc::Waitable).collect();
        let ready: Vec<usize> = shmproc::wait(&mut objs, Some(DEADLINE)).unwrap().iter().collect();
        drop(objs);
        let mut gone = Vec::new();
        for i in ready {
            match readers[i].recv_value_timeout::<(u64, String)>(DEADLINE) {
                Ok(msg) => msgs.push(msg),
                Err(_) => gone.push(i), // EOFError
            }
        }
        gone.sort();
        for i in gone.into_iter().rev() {
            readers.remove(i);
        }
    }
    ps.iter_mut().for_each(join);
    assert_eq!(msgs.len(), 40);
    for name in &names {
        let mine: Vec<u64> = msgs.iter().filter(|(_, n)| n == name).map(|(i, _)| *i).collect();
        assert_eq!(mine, (0..10).collect::<Vec<_>>(), "messages of {name}");
    }
}

// ---------------------------------------------------------------------------
// Shared ctypes objects (the doc's example):
//
//     class Point(Structure): _fields_ = [('x', c_double), ('y', c_double)]
//     def modify(n, x, s, A):
//         n.value **= 2; x.value **= 2; s.value = s.value.upper()
//         for a in A: a.x **= 2; a.y **= 2
//     n = Value('i', 7); x = Value(c_double, 1.0/3.0, lock=False)
//     s = Array('c', b'hello world', lock=lock)
//     A = Array(Point, [(1.875,-6.25), (-5.75,2.0), (2.375,9.5)], lock=lock)
//     -> 49 / 0.1111111111111111 / HELLO WORLD / [(3.515625, 39.0625), (33.0625, 4.0), (5.640625, 90.25)]

#[derive(Clone, Copy, Debug, PartialEq, shmproc::Pod, shmproc::Zeroable)]
#[bytemuck(crate = "shmproc::bytemuck")]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}
shmproc::shm_type!(Point = "python_ports.Point/v1");

shmproc::entry! {
    fn ctypes_modify(args: (Value<i32>, Value<f64>, Array<u8>, Array<Point>)) -> Result<(), String> {
        let (n, x, s, a) = args;
        n.get_lock().map_err(|e| e.to_string())?.update(|v| *v = v.pow(2));
        x.get_lock().map_err(|e| e.to_string())?.update(|v| *v = v.powi(2));
        for i in 0..s.len() {
            let c = s.get(i).map_err(|e| e.to_string())?;
            s.set(i, c.to_ascii_uppercase()).map_err(|e| e.to_string())?;
        }
        for i in 0..a.len() {
            let p = a.get(i).map_err(|e| e.to_string())?;
            a.set(i, Point { x: p.x.powi(2), y: p.y.powi(2) }).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn shared_ctypes() {
    let n = Value::new(7i32).unwrap();
    let x = Value::new(1.0f64 / 3.0).unwrap();
    let s = Array::from_slice(b"hello world").unwrap();
    let a = Array::from_slice(&[Point { x: 1.875, y: -6.25 }, Point { x: -5.75, y: 2.0 }, Point { x: 2.375, y: 9.5 }])
        .unwrap();
    let mut p = Process::new(ctypes_modify, (n.clone(), x.clone(), s.clone(), a.clone()));
    start(&mut p);
    join(&mut p);
    assert_eq!(n.get().unwrap(), 49);
    assert_eq!(x.get().unwrap(), 0.1111111111111111);
    assert_eq!(s.to_vec().unwrap(), b"HELLO WORLD");
    assert_eq!(
        a.to_vec().unwrap(),
        [Point { x: 3.515625, y: 39.0625 }, Point { x: 33.0625, y: 4.0 }, Point { x: 5.640625, y: 90.25 }]
    );
}

// ---------------------------------------------------------------------------
// A shared counter (the usual `with counter.get_lock(): counter.value += 1`):
//
//     def inc(counter):
//         for _ in range(500):
//             with counter.get_lock(): counter.value += 1
//     counter = Value('i', 0); 4 processes; counter.value == 2000

shmproc::entry! {
    fn inc(counter: Value<i64>) -> Result<(), String> {
        for _ in 0..500 {
            // `*g += 1` does not compile (the guard has get/set/update).
            counter.get_lock().map_err(|e| e.to_string())?.update(|v| *v += 1);
        }
        Ok(())
    }
}

#[test]
fn value_counter_with_get_lock() {
    let counter = Value::new(0i64).unwrap();
    let mut ps: Vec<Process> = (0..4).map(|_| Process::new(inc, counter.clone())).collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    assert_eq!(counter.get().unwrap(), 2000);
}

// ---------------------------------------------------------------------------
// Queue and JoinableQueue errors as Python raises them:
//
//     q = Queue(); q.get(timeout=0.05)      -> queue.Empty
//     q.get_nowait()                         -> queue.Empty
//     q = Queue(1); q.put(1); q.put_nowait(2) -> queue.Full
//     jq = JoinableQueue(); jq.task_done()   -> ValueError('task_done() called too many times')
//     q.close(); q.put(1)                    -> ValueError('Queue ... is closed')

#[test]
fn queue_errors_like_python() {
    let q = Queue::<u64>::new(0).unwrap();
    assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(shmproc::GetTimeoutError::TimedOut)));
    assert!(matches!(q.get_nowait(), Err(shmproc::TryGetError::Empty)));
    let q1 = Queue::<u64>::new(1).unwrap();
    q1.put(1).unwrap();
    assert!(matches!(q1.put_nowait(2), Err(shmproc::TryPutError::Full(2))));
    assert!(q1.full());
    assert_eq!(q1.qsize(), 1);

    let jq = JoinableQueue::<u64>::new(0).unwrap();
    let e = jq.task_done().unwrap_err();
    assert!(e.to_string().contains("more times than there were items"), "{e}");

    q.close();
    let e = q.put(1).unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
}

// ---------------------------------------------------------------------------
// Pool.starmap and a Manager queue:
//
//     with Pool(2) as p: p.starmap(mul, [(1, 2), (3, 4)]) -> [2, 12]
//     m = Manager(); q = m.Queue(); child puts 'hi'; q.get() -> 'hi'

shmproc::task! { fn mul(ab: (i64, i64)) -> i64 { ab.0 * ab.1 } }

shmproc::entry! {
    fn put_hi(m: Manager) -> Result<(), String> {
        let q = m.queue::<String>("q", 0).map_err(|e| e.to_string())?;
        q.put("hi".to_string()).map_err(|e| e.to_string())
    }
}

#[test]
fn starmap_and_manager_queue() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.starmap(mul, [(1, 2), (3, 4)]).unwrap(), [2, 12]);
    pool.close();
    pool.join().unwrap();

    let m = Manager::new().unwrap();
    let q = m.queue::<String>("q", 0).unwrap();
    let mut p = Process::new(put_hi, m.clone());
    start(&mut p);
    assert_eq!(q.get_timeout(DEADLINE).unwrap(), "hi");
    join(&mut p);
}

// The literal port of `with counter.get_lock(): counter.value += 1`:
// Python's Value lock is an RLock, so `.value` inside the block works.
#[test]
fn value_access_inside_get_lock() {
    let counter = Value::new(0i64).unwrap();
    let c = counter.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let g = c.get_lock().unwrap();
        let r = c.get().map(|v| v + 1).and_then(|v| c.set(v));
        drop(g);
        // The same for an Array: `with arr.get_lock(): arr[0] = arr[1]; arr[:]`.
        let arr = Array::from_slice(&[1i32, 2]).unwrap();
        let g = arr.get_lock().unwrap();
        arr.set(0, arr.get(1).unwrap()).unwrap();
        assert_eq!(arr.to_vec().unwrap(), [2, 2]);
        drop(g);
        assert!(!arr.get_lock().unwrap().is_empty());
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => {
            println!("get/set inside get_lock: {r:?}");
            r.unwrap();
            assert_eq!(counter.get().unwrap(), 1);
        }
        Err(_) => panic!("Value::get while this thread holds get_lock() hangs (Python's RLock does not)"),
    }
}

// ---------------------------------------------------------------------------
// "Joining processes that use queues" (programming guidelines):
//
//     def f(q): q.put('X' * 1000000)
//     q = Queue(); p = Process(target=f, args=(q,)); p.start()
//     p.join()       # deadlocks in Python: the feeder thread waits for a reader
//     obj = q.get()
//
// With shared memory there is no feeder thread: join first, then get, works.

shmproc::entry! {
    fn put_big(q: Queue<String>) -> Result<(), String> {
        q.put("X".repeat(1_000_000)).map_err(|e| e.to_string())
    }
}

#[test]
fn join_before_get_of_a_large_item() {
    let q = Queue::<String>::new(0).unwrap();
    let mut p = Process::new(put_big, q.clone());
    start(&mut p);
    join(&mut p);
    let obj = q.get_timeout(DEADLINE).unwrap();
    assert_eq!(obj.len(), 1_000_000);
    assert!(obj.bytes().all(|b| b == b'X'));
}

// ---------------------------------------------------------------------------
// Callbacks, and a closed pool:
//
//     result_list = []
//     def log_result(result): result_list.append(result)
//     pool = Pool()
//     for i in range(10): pool.apply_async(square, args=(i,), callback=log_result)
//     pool.apply_async(raise_value_error, (1,), error_callback=log_error)
//     pool.close(); pool.join()
//     sorted(result_list) == [0, 1, 4, ..., 81]    # every callback ran before join returned
//     pool.map(square, [1])  -> ValueError: Pool not running

#[test]
fn apply_async_callbacks_before_join() {
    let pool = Pool::new(2).unwrap();
    let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..10 {
        let results = results.clone();
        pool.apply_async(square, i).unwrap().then(move |r| results.lock().unwrap().push(r.unwrap()));
    }
    let errs = errors.clone();
    pool.apply_async(raise_value_error, 1).unwrap().then(move |r| {
        if let Err(e) = r {
            errs.lock().unwrap().push(e.to_string())
        }
    });
    pool.close();
    pool.join().unwrap();
    let mut got = results.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<u64>>());
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("ValueError: bad 1"), "{errors:?}");
    assert!(matches!(pool.map(square, [1]), Err(shmproc::PoolError::Closed)));
}

// ---------------------------------------------------------------------------
// Semaphore limiting concurrency, and a Barrier that times out:
//
//     def worker(sem, inside, peak):
//         with sem:
//             with inside.get_lock(): inside.value += 1; peak.value = max(peak.value, inside.value)
//             time.sleep(0.05)
//             with inside.get_lock(): inside.value -= 1
//     sem = Semaphore(2); 5 workers; peak.value <= 2
//     b = Barrier(2); b.wait(timeout=0.05) -> BrokenBarrierError; b.broken -> True

shmproc::entry! {
    fn sem_worker(args: (shmproc::Semaphore, Value<u32>, Value<u32>)) -> Result<(), String> {
        let (sem, inside, peak) = args;
        if !sem.acquire_timeout(Duration::from_secs(60)) {
            return Err("semaphore: no unit within 60 s".into());
        }
        {
            let mut g = inside.get_lock().map_err(|e| e.to_string())?;
            let now = g.value() + 1;
            g.set_value(now);
            peak.get_lock().map_err(|e| e.to_string())?.update(|p| *p = (*p).max(now));
        }
        std::thread::sleep(Duration::from_millis(50));
        inside.get_lock().map_err(|e| e.to_string())?.update(|v| *v -= 1);
        sem.release().map_err(|e| e.to_string())
    }
}

#[test]
fn semaphore_and_broken_barrier() {
    let sem = shmproc::Semaphore::new(2).unwrap();
    let inside = Value::new(0u32).unwrap();
    let peak = Value::new(0u32).unwrap();
    let mut ps: Vec<Process> =
        (0..5).map(|_| Process::new(sem_worker, (sem.clone(), inside.clone(), peak.clone()))).collect();
    ps.iter_mut().for_each(start);
    ps.iter_mut().for_each(join);
    let peak = peak.get().unwrap();
    assert!((1..=2).contains(&peak), "peak {peak}");
    assert_eq!(inside.get().unwrap(), 0);

    let b = Barrier::new(2).unwrap();
    assert_eq!(b.wait_timeout(Duration::from_millis(50)), Err(shmproc::BarrierError::TimedOut));
    assert!(b.is_broken());
    assert_eq!(b.wait_timeout(Duration::from_millis(50)), Err(shmproc::BarrierError::Broken));
}

// Nested `with v.get_lock():` blocks (Python's Value/Array lock is an RLock):
//
//     def add(v, n):
//         with v.get_lock(): v.value += n
//     with v.get_lock():
//         add(v, 1); add(v, 2)        # re-acquires in the same thread
//     v.value == 3
#[test]
fn nested_get_lock() {
    let v = Value::new(0i64).unwrap();
    let arr = Array::from_slice(&[0u8; 2]).unwrap();
    let (c, a) = (v.clone(), arr.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let add = |n: i64| c.get_lock().map(|mut g| g.update(|x| *x += n)).map_err(|e| e.to_string());
        let outer = c.get_lock().unwrap();
        let r = add(1).and_then(|_| add(2));
        assert!(c.try_get_lock().is_ok(), "try_get_lock by the holder");
        drop(outer);
        let outer = a.get_lock().unwrap();
        let inner = a.get_lock().map(|mut g| g.set(1, 7)).map_err(|e| e.to_string());
        drop(outer);
        let _ = tx.send(r.and(inner));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => assert_eq!(r, Ok(true)),
        Err(_) => panic!("a nested get_lock() in the holding thread hangs (Python's RLock does not)"),
    }
    assert_eq!(v.get().unwrap(), 3);
    assert_eq!(arr.to_vec().unwrap(), [0, 7]);
    // Released for real: another thread gets it.
    let c = v.clone();
    assert!(std::thread::spawn(move || c.try_get_lock().is_ok()).join().unwrap());
}
