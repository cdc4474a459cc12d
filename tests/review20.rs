//! review20: Python `multiprocessing` programs ported by a newcomer from the
//! README and the rustdoc, looking for where shmproc surprises a Python
//! user. Real processes; every wait has a deadline; nothing is left in
//! /dev/shm.

use std::time::Duration;

use shmproc::{
    Array, Barrier, BarrierError, BoundedSemaphore, Condition, Connection, Event, JoinableQueue, Lock, LockError,
    Process, ProcessError, Queue, RLock, Semaphore, SimpleQueue, Value, current_process, parent_process, pipe,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn start(p: &mut Process) {
    p.start().unwrap_or_else(|e| panic!("start {}: {e}", p.name()));
}

/// `p.join()` with a deadline; returns the join's result.
fn join_raw(p: &Process) -> Result<(), ProcessError> {
    match p.join_timeout(DEADLINE) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let _ = p.kill();
            panic!("process {} did not end within {DEADLINE:?}", p.name());
        }
        Err(e) => Err(e),
    }
}

fn join(p: &Process) {
    if let Err(e) = join_raw(p) {
        panic!("process {} failed: {e}", p.name());
    }
    assert_eq!(p.exitcode(), Some(0), "exit code of {}", p.name());
}

// ---------------------------------------------------------------------------
// Process lifecycle:
//
//     def f(name, ev): print(current_process().name, parent_process().pid); ev.wait()
//     p = Process(target=f, args=("bob", ev), name="worker", daemon=True)
//     p.pid is None; p.is_alive() False; p.exitcode None
//     p.start(); p.is_alive(); p.join(0.05) -> still alive; p.terminate(); p.join()
//     p.exitcode == -15; p.close()

shmproc::entry! {
    fn lifecycle_child(args: (String, Event, Queue<(String, u32, bool, String)>)) -> Result<(), String> {
        let (greeting, ev, out) = args;
        let me = current_process();
        let parent = parent_process().ok_or("no parent")?;
        out.put((me.name, parent.pid, me.daemon, greeting)).map_err(s)?;
        ev.wait_timeout(DEADLINE);
        Ok(())
    }
}

#[test]
fn process_lifecycle_terminate_kill_and_exit_codes() {
    let ev = Event::new().unwrap();
    let out = Queue::new(4).unwrap();
    let mut p = Process::new(lifecycle_child, ("hello bob".to_string(), ev.clone(), out.clone()))
        .with_name("worker")
        .with_daemon(true);
    assert_eq!(p.pid(), None);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(matches!(p.join_timeout(Duration::ZERO), Err(ProcessError::NotStarted(_))));
    start(&mut p);
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted(_))));
    let (name, ppid, daemon, greeting) = out.get_timeout(DEADLINE).unwrap();
    assert_eq!((name.as_str(), ppid, daemon, greeting.as_str()), ("worker", std::process::id(), true, "hello bob"));
    assert!(p.is_alive());
    assert!(!p.join_timeout(Duration::from_millis(20)).unwrap());
    assert_eq!(p.exitcode(), None);
    assert!(matches!(p.close(), Err(ProcessError::StillRunning(_))));
    assert!(shmproc::active_children().iter().any(|c| c.pid() == p.pid()));
    p.terminate().unwrap();
    assert!(join_raw(&p).is_err());
    assert_eq!(p.exitcode(), Some(-15));
    assert!(!p.is_alive());
    assert!(!shmproc::active_children().iter().any(|c| c.pid() == p.pid()));
    p.terminate().unwrap(); // no-op on an ended process, as Python's
    p.close().unwrap();
    assert!(matches!(p.join(), Err(ProcessError::Closed(_))));

    let mut k = Process::new(lifecycle_child, ("x".to_string(), ev.clone(), out.clone()));
    start(&mut k);
    out.get_timeout(DEADLINE).unwrap();
    k.kill().unwrap();
    assert!(join_raw(&k).is_err());
    assert_eq!(k.exitcode(), Some(-9));
    assert!(shmproc::cpu_count() >= 1);
}

shmproc::entry! {
    fn exits_with(code: i32) -> Result<(), String> {
        match code {
            0 => Ok(()),
            1 => Err("sys.exit(1)".into()),
            101 => panic!("boom"),
            n => std::process::exit(n),
        }
    }
}

#[test]
fn exit_codes_like_sys_exit() {
    for (code, want) in [(0, 0), (1, 1), (101, 101), (3, 3)] {
        let mut p = Process::new(exits_with, code);
        start(&mut p);
        let r = join_raw(&p);
        assert_eq!(r.is_ok(), want == 0, "{code}: {r:?}");
        assert_eq!(p.exitcode(), Some(want), "code {code}");
    }
}

// ---------------------------------------------------------------------------
// Queue semantics: put/get with timeouts raising Empty/Full, qsize,
// empty, full, close.

shmproc::entry! {
    fn fill_queue(args: (Queue<u64>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            q.put(i).map_err(s)?;
        }
        q.close();
        Ok(())
    }
}

#[test]
fn queue_block_timeout_sizes_and_close() {
    let q = Queue::<u64>::new(3).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    assert_eq!(q.qsize(), 0);
    assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(shmproc::GetTimeoutError::TimedOut)));
    assert!(matches!(q.get_nowait(), Err(shmproc::TryGetError::Empty)));
    let mut p = Process::new(fill_queue, (q.clone(), 3));
    start(&mut p);
    join(&p);
    assert_eq!(q.qsize(), 3);
    assert!(q.full());
    assert!(matches!(q.put_nowait(9), Err(shmproc::TryPutError::Full(9))));
    assert!(matches!(q.put_timeout(9, Duration::from_millis(10)), Err(shmproc::PutTimeoutError::TimedOut(9))));
    assert_eq!((q.get().unwrap(), q.get().unwrap(), q.get().unwrap()), (0, 1, 2));
    // The child's close() closed only its handle.
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
    q.close();
    assert!(q.put(8).is_err());
    assert!(q.get_nowait().is_err());
}

// ---------------------------------------------------------------------------
// JoinableQueue and SimpleQueue across processes.

shmproc::entry! {
    fn jq_worker(args: (JoinableQueue<Option<u64>>, SimpleQueue<u64>)) -> Result<(), String> {
        let (q, out) = args;
        while let Some(x) = q.get().map_err(s)? {
            out.put(x * 10).map_err(s)?;
            q.task_done().map_err(s)?;
        }
        q.task_done().map_err(s)?;
        Ok(())
    }
}

#[test]
fn joinable_queue_and_simple_queue() {
    let q = JoinableQueue::new(0).unwrap();
    let out = SimpleQueue::new(0).unwrap();
    let ps: Vec<Process> = (0..2)
        .map(|_| {
            let mut p = Process::new(jq_worker, (q.clone(), out.clone()));
            start(&mut p);
            p
        })
        .collect();
    for i in 0..20 {
        q.put(Some(i)).unwrap();
    }
    assert!(q.join_timeout(DEADLINE));
    assert_eq!(q.unfinished_tasks(), 0);
    let mut got: Vec<u64> = (0..20).map(|_| out.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..20).map(|i| i * 10).collect::<Vec<_>>());
    assert!(out.empty());
    q.put(None).unwrap();
    q.put(None).unwrap();
    assert!(q.join_timeout(DEADLINE));
    ps.iter().for_each(join);
    assert!(q.task_done().is_err());
    assert!(q.task_done().unwrap_err().to_string().contains("more times"), "{}", q.task_done().unwrap_err());
}

// ---------------------------------------------------------------------------
// Pipes.

shmproc::entry! {
    fn pipe_echo(mut c: Connection) -> Result<(), String> {
        loop {
            match c.recv_value::<String>() {
                Ok(m) => c.send_value(&m.to_uppercase()).map_err(s)?,
                Err(shmproc::PipeRecvValueError::Disconnected) => return Ok(()),
                Err(e) => return Err(s(e)),
            }
        }
    }
}

#[test]
fn duplex_pipe_poll_and_eof() {
    let (mut a, b) = pipe(true).unwrap();
    let mut p = Process::new(pipe_echo, b);
    start(&mut p);
    assert!(!a.poll(Duration::from_millis(10)).unwrap());
    a.send_value(&"hi".to_string()).unwrap();
    assert!(a.poll(DEADLINE).unwrap());
    assert_eq!(a.recv_value::<String>().unwrap(), "HI");
    a.close();
    join(&p);
    assert!(a.recv_bytes().is_err());
}

shmproc::entry! {
    fn pipe_writer_then_exit(mut w: Connection) -> Result<(), String> {
        let data = b"0123456789";
        w.send_bytes(&data[2..7]).map_err(s)?; // send_bytes(buf, 2, 5)
        Ok(()) // exits without close
    }
}

#[test]
fn one_way_pipe_eof_when_writer_exits() {
    let (mut r, w) = pipe(false).unwrap();
    assert!(r.send_bytes(b"x").is_err());
    let mut p = Process::new(pipe_writer_then_exit, w);
    start(&mut p);
    join(&p);
    let mut buf = b"ab".to_vec();
    assert_eq!(r.recv_bytes_into(&mut buf).unwrap(), 5);
    assert_eq!(buf, b"23456");
    assert!(r.poll(DEADLINE).unwrap()); // EOF is readable, as in Python
    assert_eq!(r.recv_bytes(), Err(shmproc::PipeRecvBytesError::Disconnected));
}

shmproc::entry! {
    fn pipe_reader_closes(mut r: Connection) -> Result<(), String> {
        r.close();
        Ok(())
    }
}

#[test]
fn send_to_a_pipe_whose_reader_left_fails_like_broken_pipe() {
    let (r, mut w) = pipe(false).unwrap();
    let mut p = Process::new(pipe_reader_closes, r);
    start(&mut p);
    join(&p);
    let msg = vec![7u8; 1000];
    let mut err = None;
    for _ in 0..200 {
        match w.send_bytes_timeout(&msg, DEADLINE) {
            Ok(()) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(shmproc::PipeSendTimeoutError::Disconnected));
}

// ---------------------------------------------------------------------------
// Locks and semaphores.

#[test]
fn lock_acquire_timeout_in_the_holding_thread_and_rlock_release_errors() {
    let lock = Lock::new().unwrap();
    let g = lock.lock().unwrap();
    // Python: lock.acquire(timeout=0.01) -> False (non-reentrant)
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    assert!(matches!(lock.lock_timeout(Duration::from_millis(10)), Err(LockError::TimedOut)));
    drop(g);
    let r = RLock::new().unwrap();
    assert!(r.release().is_err()); // release of an unowned RLock
    let g1 = r.lock().unwrap();
    let g2 = r.lock().unwrap();
    assert_eq!(r.level(), 2);
    drop(g1);
    drop(g2);
    assert_eq!(r.level(), 0);
}

shmproc::entry! {
    fn sem_releaser(args: (Semaphore, Event)) -> Result<(), String> {
        let (sem, ev) = args;
        ev.wait_timeout(DEADLINE);
        sem.release().map_err(s)
    }
}

#[test]
fn semaphores_across_processes() {
    let sem = Semaphore::new(0).unwrap();
    let ev = Event::new().unwrap();
    let mut p = Process::new(sem_releaser, (sem.clone(), ev.clone()));
    start(&mut p);
    assert!(!sem.acquire_timeout(Duration::from_millis(10)));
    ev.set();
    assert!(sem.acquire_timeout(DEADLINE));
    join(&p);
    let b = BoundedSemaphore::new(2).unwrap();
    assert!(b.release().is_err());
    assert!(b.try_acquire());
    b.release().unwrap();
    assert_eq!(b.get_value(), 2);
}

// ---------------------------------------------------------------------------
// Condition.wait_for with a predicate on shared state, and a timeout.

shmproc::entry! {
    fn cond_producer(args: (Condition, Value<u32>)) -> Result<(), String> {
        let (c, v) = args;
        for _ in 0..5 {
            let g = c.lock().map_err(s)?;
            v.set(v.get().map_err(s)? + 1).map_err(s)?;
            c.notify_all(&g);
            drop(g);
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

#[test]
fn condition_wait_for_predicate_and_timeout() {
    let c = Condition::new().unwrap();
    let v = Value::new(0u32).unwrap();
    {
        let mut g = c.lock().unwrap();
        assert!(!c.wait_for_timeout(&mut g, Duration::from_millis(10), || v.get().unwrap() >= 5).unwrap());
    }
    let mut p = Process::new(cond_producer, (c.clone(), v.clone()));
    start(&mut p);
    {
        let mut g = c.lock().unwrap();
        assert!(c.wait_for_timeout(&mut g, DEADLINE, || v.get().unwrap() >= 5).unwrap());
    }
    join(&p);
}

// ---------------------------------------------------------------------------
// Barrier.

shmproc::entry! {
    fn barrier_party(args: (Barrier, Queue<i64>)) -> Result<(), String> {
        let (b, out) = args;
        let r = match b.wait_timeout(DEADLINE) {
            Ok(i) => i as i64,
            Err(BarrierError::Broken) => -1,
            Err(e) => return Err(s(e)),
        };
        out.put(r).map_err(s)
    }
}

#[test]
fn barrier_parties_abort_and_broken() {
    let b = Barrier::new(3).unwrap();
    let out = Queue::new(8).unwrap();
    let ps: Vec<Process> = (0..2)
        .map(|_| {
            let mut p = Process::new(barrier_party, (b.clone(), out.clone()));
            start(&mut p);
            p
        })
        .collect();
    let me = b.wait_timeout(DEADLINE).unwrap();
    let mut idx = vec![me as i64, out.get_timeout(DEADLINE).unwrap(), out.get_timeout(DEADLINE).unwrap()];
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    ps.iter().for_each(join);
    assert_eq!(b.parties(), 3);
    // abort while two wait
    let ps: Vec<Process> = (0..2)
        .map(|_| {
            let mut p = Process::new(barrier_party, (b.clone(), out.clone()));
            start(&mut p);
            p
        })
        .collect();
    let until = std::time::Instant::now() + DEADLINE;
    while b.n_waiting() < 2 {
        assert!(std::time::Instant::now() < until);
        std::thread::sleep(Duration::from_millis(1));
    }
    b.abort();
    assert_eq!((out.get_timeout(DEADLINE).unwrap(), out.get_timeout(DEADLINE).unwrap()), (-1, -1));
    ps.iter().for_each(join);
    assert!(b.is_broken());
    assert_eq!(b.wait(), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.is_broken());
    assert_eq!(b.wait_timeout(Duration::from_millis(10)), Err(BarrierError::TimedOut));
    assert!(b.is_broken());
}

// ---------------------------------------------------------------------------
// Value / Array.

shmproc::entry! {
    fn add_many(args: (Value<i32>, u32)) -> Result<(), String> {
        let (v, n) = args;
        for _ in 0..n {
            let mut g = v.get_lock().map_err(s)?;
            g.update(|x| *x += 1);
        }
        Ok(())
    }
}

#[test]
fn shared_counter_four_processes() {
    let v = Value::new(0i32).unwrap();
    let ps: Vec<Process> = (0..4)
        .map(|_| {
            let mut p = Process::new(add_many, (v.clone(), 500));
            start(&mut p);
            p
        })
        .collect();
    ps.iter().for_each(join);
    assert_eq!(v.get().unwrap(), 2000);
}

shmproc::entry! {
    fn array_slices(a: Array<f64>) -> Result<(), String> {
        let mut g = a.get_lock().map_err(s)?;
        let mut mid = [0.0; 3];
        assert_eq!(g.read(1, &mut mid), 3);
        let neg: Vec<f64> = mid.iter().map(|x| -x).collect();
        g.write(1, &neg); // a[1:4] = [-x for x in a[1:4]]
        Ok(())
    }
}

#[test]
fn array_of_doubles_slices() {
    let a = Array::from_slice(&[0.0f64, 1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut p = Process::new(array_slices, a.clone());
    start(&mut p);
    join(&p);
    assert_eq!(a.to_vec().unwrap(), [0.0, -1.0, -2.0, -3.0, 4.0]);
    assert!(matches!(a.get(5), Err(shmproc::ArrayError::IndexOutOfRange { .. })));
}

// ---------------------------------------------------------------------------
// wait on several objects.

shmproc::entry! {
    fn set_later(args: (Event, Queue<u8>)) -> Result<(), String> {
        let (ev, q) = args;
        q.put(1).map_err(s)?;
        ev.set();
        Ok(())
    }
}

#[test]
fn wait_on_queue_event_pipe_and_process() {
    let ev = Event::new().unwrap();
    let mut q = Queue::<u8>::new(2).unwrap();
    let (mut r, _w) = pipe(false).unwrap();
    let mut ev2 = ev.clone();
    let mut p = Process::new(set_later, (ev.clone(), q.clone()));
    let ready = shmproc::wait(&mut [&mut q, &mut r, &mut ev2], Some(Duration::from_millis(10))).unwrap();
    assert!(ready.is_empty());
    start(&mut p);
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let ready = shmproc::wait(&mut [&mut q, &mut r, &mut ev2, &mut p], Some(DEADLINE)).unwrap();
        assert!(!ready.contains(1));
        if ready.contains(0) && ready.contains(2) && ready.contains(3) {
            break;
        }
        assert!(std::time::Instant::now() < until);
        std::thread::sleep(Duration::from_millis(1));
    }
    join(&p);
}

// ---------------------------------------------------------------------------
// Batch 2: edge values a Python program sends without thinking.

shmproc::entry! {
    fn echo_values(args: (Queue<String>, Queue<Vec<u8>>, Connection)) -> Result<(), String> {
        let (qs, qv, mut c) = args;
        for _ in 0..3 {
            let x = qs.get_timeout(DEADLINE).map_err(s)?;
            qs.put(x).map_err(s)?;
        }
        let v = qv.get_timeout(DEADLINE).map_err(s)?;
        qv.put(v).map_err(s)?;
        for _ in 0..2 {
            let b = c.recv_bytes().map_err(s)?;
            c.send_bytes(&b).map_err(s)?;
        }
        let t = c.recv_value::<(String, Vec<u64>, Option<String>)>().map_err(s)?;
        c.send_value(&t).map_err(s)?;
        Ok(())
    }
}

#[test]
fn empty_and_large_values_round_trip() {
    let qs = Queue::<String>::new(0).unwrap();
    let qv = Queue::<Vec<u8>>::new(4).unwrap();
    let (mut a, b) = pipe(true).unwrap();
    let mut p = Process::new(echo_values, (qs.clone(), qv.clone(), b));
    start(&mut p);
    let big = "x".repeat(300_000);
    qs.put(String::new()).unwrap();
    qs.put(big.clone()).unwrap();
    qs.put("é".to_string()).unwrap();
    qv.put(Vec::new()).unwrap();
    a.send_bytes(b"").unwrap();
    a.send_bytes(&[1u8; 16 * 1024]).unwrap();
    a.send_value(&(String::new(), Vec::<u64>::new(), None::<String>)).unwrap();
    join(&p);
    let mut got: Vec<String> = (0..3).map(|_| qs.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    assert_eq!(got, [String::new(), big, "é".to_string()]);
    assert_eq!(qv.get_timeout(DEADLINE).unwrap(), Vec::<u8>::new());
    assert_eq!(a.recv_bytes().unwrap(), b"");
    assert_eq!(a.recv_bytes().unwrap(), vec![1u8; 16 * 1024]);
    assert_eq!(a.recv_value::<(String, Vec<u64>, Option<String>)>().unwrap(), (String::new(), Vec::new(), None));
}

shmproc::task! { fn sq(x: u64) -> u64 { x * x } }
shmproc::task! { fn add2(args: (u64, u64)) -> u64 { args.0 + args.1 } }
shmproc::task! {
    fn fail_on_3(x: u64) -> Result<u64, String> { if x == 3 { Err("ValueError: 3".into()) } else { Ok(x) } }
}
shmproc::task! { fn slow(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms } }

#[test]
fn pool_edge_cases() {
    assert!(shmproc::Pool::new(0).is_err()); // Python: ValueError
    let pool = shmproc::Pool::new(2).unwrap();
    assert_eq!(pool.map(sq, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.starmap(add2, Vec::<(u64, u64)>::new()).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.imap(sq, Vec::<u64>::new()).unwrap().count(), 0);
    assert_eq!(pool.starmap(add2, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    assert!(pool.map(fail_on_3, 0..6).is_err());
    // the pool still works after a failed map
    assert_eq!(pool.map(sq, 0..4).unwrap(), [0, 1, 4, 9]);
    let r: Vec<u64> = pool.imap(sq, 0..5).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(r, [0, 1, 4, 9, 16]);
    let ar = pool.apply_async(sq, 7).unwrap();
    assert_eq!(ar.get().unwrap(), 49);
    assert!(matches!(pool.join(), Err(shmproc::PoolError::StillOpen))); // Python: ValueError("Pool is still running")
    pool.close();
    assert!(pool.apply_async(sq, 1).is_err()); // Python: ValueError("Pool not running")
    assert!(pool.map(sq, [1]).is_err());
    pool.join().unwrap();

    let pool = shmproc::Pool::new(2).unwrap();
    let pending = pool.apply_async(slow, 30_000).unwrap();
    assert!(!pending.ready());
    assert_eq!(pending.successful(), None);
    pool.terminate();
    assert!(pending.get_timeout(DEADLINE).is_err());
    pool.join().unwrap();
}

#[test]
fn wait_edge_cases() {
    // the same queue twice, a not-started process, a closed connection
    let mut q = Queue::<u8>::new(2).unwrap();
    let mut q2 = q.clone();
    q.put(1).unwrap();
    let ready = shmproc::wait(&mut [&mut q, &mut q2], Some(Duration::from_millis(10))).unwrap();
    assert!(ready.contains(0) && ready.contains(1));
    let mut p = Process::new(exits_with, 0);
    // Ready as its join is: that fails at once (NotStarted).
    assert!(shmproc::wait(&mut [&mut p], Some(Duration::from_millis(10))).unwrap().contains(0));
    let (mut a, _b) = pipe(true).unwrap();
    a.close();
    // Ready as its recv is: that fails at once (Closed).
    assert!(shmproc::wait(&mut [&mut a], Some(Duration::from_millis(10))).unwrap().contains(0));
    let mut ev = Event::new().unwrap();
    let r = shmproc::wait(&mut [&mut ev], Some(Duration::ZERO)).unwrap();
    assert!(r.is_empty());
}

// ---------------------------------------------------------------------------
// Batch 3: the same programs with the Fork start method (Python's default
// on Linux before 3.14).

use shmproc::process::StartMethod;

fn forked<E: shmproc::process::Entry>(f: E, arg: E::Arg) -> Process {
    let mut p = Process::new(f, arg).with_start_method(StartMethod::Fork);
    start(&mut p);
    p
}

#[test]
fn fork_pipe_eof_counter_queue_and_barrier() {
    let (mut r, w) = pipe(false).unwrap();
    let p = forked(pipe_writer_then_exit, w);
    join(&p);
    assert_eq!(r.recv_bytes_timeout(DEADLINE).unwrap(), b"23456");
    assert_eq!(r.recv_bytes_timeout(DEADLINE), Err(shmproc::PipeRecvBytesTimeoutError::Disconnected));

    let v = Value::new(0i32).unwrap();
    let ps: Vec<Process> = (0..4).map(|_| forked(add_many, (v.clone(), 300))).collect();
    ps.iter().for_each(join);
    assert_eq!(v.get().unwrap(), 1200);

    let q = Queue::<u64>::new(3).unwrap();
    let p = forked(fill_queue, (q.clone(), 3));
    join(&p);
    assert_eq!(q.qsize(), 3);
    q.put_nowait(1).unwrap_err();

    let b = Barrier::new(3).unwrap();
    let out = Queue::new(8).unwrap();
    let ps: Vec<Process> = (0..2).map(|_| forked(barrier_party, (b.clone(), out.clone()))).collect();
    b.wait_timeout(DEADLINE).unwrap();
    ps.iter().for_each(join);

    let (mut a, c) = pipe(true).unwrap();
    let p = forked(pipe_echo, c);
    a.send_value(&"fork".to_string()).unwrap();
    assert_eq!(a.recv_value_timeout::<String>(DEADLINE).unwrap(), "FORK");
    a.close();
    join(&p);

    let q = JoinableQueue::new(0).unwrap();
    let out = SimpleQueue::new(0).unwrap();
    let ps: Vec<Process> = (0..2).map(|_| forked(jq_worker, (q.clone(), out.clone()))).collect();
    for i in 0..10 {
        q.put(Some(i)).unwrap();
    }
    assert!(q.join_timeout(DEADLINE));
    q.put(None).unwrap();
    q.put(None).unwrap();
    ps.iter().for_each(join);
    assert_eq!((0..10).map(|_| out.get_timeout(DEADLINE).unwrap()).sum::<u64>(), 450);
}

#[test]
fn fork_pool() {
    let pool = shmproc::Pool::builder().processes(2).start_method(StartMethod::Fork).build().unwrap();
    assert_eq!(pool.map(sq, 0..100).unwrap(), (0..100).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.apply_async(add2, (2, 3)).unwrap().get().unwrap(), 5);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn huge_timeouts_mean_forever_not_a_panic() {
    let m = Duration::MAX;
    let q = Queue::<u64>::new(2).unwrap();
    q.put_timeout(1, m).unwrap();
    assert_eq!(q.get_timeout(m).unwrap(), 1);
    let l = Lock::new().unwrap();
    drop(l.lock_timeout(m).unwrap());
    let ev = Event::new().unwrap();
    ev.set();
    assert!(ev.wait_timeout(m));
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait_timeout(m), Ok(0));
    let sem = Semaphore::new(1).unwrap();
    assert!(sem.acquire_timeout(m));
    let (mut a, mut c) = pipe(true).unwrap();
    a.send_bytes_timeout(b"x", m).unwrap();
    assert!(c.poll(m).unwrap());
    assert_eq!(c.recv_bytes_timeout(m).unwrap(), b"x");
    let cond = Condition::new().unwrap();
    let mut g = cond.lock().unwrap();
    assert!(cond.wait_for_timeout(&mut g, m, || true).unwrap());
    drop(g);
    let v = Value::new(1u8).unwrap();
    drop(v.get_lock_timeout(m).unwrap());
    let mut q2 = q.clone();
    q.put(2).unwrap();
    assert!(shmproc::wait(&mut [&mut q2], Some(m)).unwrap().contains(0));
    let jq = JoinableQueue::<u8>::new(1).unwrap();
    assert!(jq.join_timeout(m));
    let p = forked(exits_with, 0);
    assert!(p.join_timeout(m).unwrap());
    let pool = shmproc::Pool::new(1).unwrap();
    assert_eq!(pool.apply_async(sq, 3).unwrap().timeout(m).get_timeout(m).ok(), Some(9));
    let mut it = pool.imap(sq, [2u64]).unwrap();
    assert_eq!(it.next_timeout(m).unwrap().unwrap().unwrap(), 4);
}

shmproc::task! { fn pid_of(_x: u64) -> u64 { u64::from(std::process::id()) } }
shmproc::task! { fn pid_of_s(_x: String) -> u64 { u64::from(std::process::id()) } }

fn per_pid(pids: &[u64]) -> std::collections::BTreeMap<u64, usize> {
    let mut m = std::collections::BTreeMap::new();
    for p in pids {
        *m.entry(*p).or_insert(0) += 1;
    }
    m
}

#[test]
fn maxtasksperchild_counts_chunks_in_every_map_form() {
    let pool = shmproc::Pool::builder().processes(2).maxtasksperchild(1).build().unwrap();
    // map of plain data: chunksize ceil(40 / 8) = 5, so 8 chunks: 8 workers of 5 items.
    let pids = pool.map(pid_of, 0..40).unwrap();
    let m = per_pid(&pids);
    assert!(m.values().all(|&n| n <= 5), "map u64: {m:?}");
    let pids = pool.map_chunked(pid_of, 0..12, 3).unwrap();
    let m = per_pid(&pids);
    assert!(m.values().all(|&n| n <= 3), "{m:?}");
    let pids = pool.map(pid_of_s, (0..40).map(|i| i.to_string())).unwrap();
    let m = per_pid(&pids);
    assert!(m.values().all(|&n| n <= 5), "{m:?}");
    let pids: Vec<u64> = pool.imap(pid_of, 0..10).unwrap().map(|r| r.unwrap()).collect();
    let m = per_pid(&pids);
    assert!(m.values().all(|&n| n <= 1), "{m:?}");
    let pids: Vec<u64> = (0..6).map(|i| pool.apply_async(pid_of, i).unwrap()).map(|r| r.get().unwrap()).collect();
    let m = per_pid(&pids);
    assert!(m.values().all(|&n| n <= 1), "{m:?}");
    pool.close();
    pool.join().unwrap();
}

shmproc::entry! {
    fn fill_strings(args: (Queue<String>, u64)) -> Result<(), String> {
        let (q, n) = args;
        for i in 0..n {
            q.put(format!("item-{i}")).map_err(s)?;
        }
        Ok(())
    }
}

#[test]
fn unbounded_queue_sizes_across_its_rings() {
    let q = Queue::<u64>::new(0).unwrap();
    let p = forked(fill_queue, (q.clone(), 100_000));
    join(&p);
    assert_eq!(q.qsize(), 100_000);
    assert!(!q.full());
    for i in 0..50_000 {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    assert_eq!(q.qsize(), 50_000);
    let qs = JoinableQueue::<String>::new(0).unwrap();
    let mut p = Process::new(fill_strings, (Queue::<String>::new(1).unwrap(), 0));
    drop(p.close());
    let qq = Queue::<String>::new(0).unwrap();
    p = forked(fill_strings, (qq.clone(), 30_000));
    join(&p);
    assert_eq!(qq.qsize(), 30_000);
    for i in 0..30_000 {
        assert_eq!(qq.get_nowait().unwrap(), format!("item-{i}"));
    }
    assert!(qq.empty());
    assert_eq!(qq.qsize(), 0);
    for i in 0..5000 {
        qs.put(i.to_string()).unwrap();
    }
    assert_eq!(qs.unfinished_tasks(), 5000);
    for _ in 0..5000 {
        qs.get().unwrap();
        qs.task_done().unwrap();
    }
    assert!(qs.join_timeout(DEADLINE));
    assert!(qs.task_done().is_err());
}

shmproc::entry! {
    fn conn_via_queue(q: Queue<Connection>) -> Result<(), String> {
        let mut c = q.get_timeout(DEADLINE).map_err(s)?;
        let m = c.recv_value::<String>().map_err(s)?;
        c.send_value(&format!("{m}!")).map_err(s)?;
        Ok(()) // exits: the peer learns it
    }
}

#[test]
fn a_connection_sent_through_a_queue_to_a_running_child() {
    let q = Queue::<Connection>::new(2).unwrap();
    let p = forked(conn_via_queue, q.clone());
    let (mut a, b) = pipe(true).unwrap();
    q.put(b).unwrap();
    a.send_value(&"hey".to_string()).unwrap();
    assert_eq!(a.recv_value_timeout::<String>(DEADLINE).unwrap(), "hey!");
    join(&p);
    assert_eq!(a.recv_value_timeout::<String>(DEADLINE), Err(shmproc::PipeRecvValueTimeoutError::Disconnected));

    let mut p = Process::new(conn_via_queue, q.clone());
    start(&mut p);
    let (mut a, b) = pipe(true).unwrap();
    q.put(b).unwrap();
    a.send_value(&"spawned".to_string()).unwrap();
    assert_eq!(a.recv_value_timeout::<String>(DEADLINE).unwrap(), "spawned!");
    join(&p);
    assert_eq!(a.recv_value_timeout::<String>(DEADLINE), Err(shmproc::PipeRecvValueTimeoutError::Disconnected));
}

shmproc::task! {
    fn report_to(args: (Queue<String>, u64)) -> Result<u64, String> {
        let (q, x) = args;
        q.put(format!("worker got {x}")).map_err(s)?;
        Ok(x * 2)
    }
}

shmproc::task! {
    fn append_to(args: (shmproc::ListProxy<u64>, u64)) -> Result<(), String> {
        args.0.append(args.1).map_err(s)
    }
}

#[test]
fn manager_queue_and_list_given_to_pool_workers() {
    // The Python idiom: mp.Queue cannot go to Pool workers, so
    //   m = Manager(); q = m.Queue(); pool.starmap(f, [(q, i) for i in range(8)])
    let m = shmproc::Manager::new().unwrap();
    let q = m.queue::<String>("progress", 0).unwrap();
    let l = m.list::<u64>("seen").unwrap();
    let pool = shmproc::Pool::new(2).unwrap();
    let r = pool.starmap(report_to, (0..8).map(|i| (q.clone(), i))).unwrap();
    assert_eq!(r, (0..8).map(|i| i * 2).collect::<Vec<_>>());
    let mut msgs: Vec<String> = (0..8).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    msgs.sort();
    assert_eq!(msgs.len(), 8);
    let plain = Queue::<String>::new(0).unwrap();
    let asyncs: Vec<_> = (0..4).map(|i| pool.apply_async(report_to, (plain.clone(), i)).unwrap()).collect();
    for a in asyncs {
        a.get().unwrap();
    }
    assert_eq!(plain.qsize(), 4);
    pool.map(append_to, (0..20).map(|i| (l.clone(), i))).unwrap();
    let mut v = l.to_vec().unwrap();
    v.sort();
    assert_eq!(v, (0..20).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

shmproc::entry! {
    fn cond_lock_once(args: (Condition, Value<u32>, Event)) -> Result<(), String> {
        let (c, v, started) = args;
        started.set();
        {
            let _g = c.lock_timeout(DEADLINE).map_err(s)?;
        }
        {
            let _g = v.get_lock_timeout(DEADLINE).map_err(s)?;
        }
        // Both locks must be free now: the parent takes them after join.
        Ok(())
    }
}

#[test]
fn a_child_forked_while_the_parent_holds_nested_guards_releases_its_own_guard() {
    // Python: with cond: with cond: Process(target=f, args=(cond,)).start()
    let c = Condition::new().unwrap();
    let v = Value::new(0u32).unwrap();
    let started = Event::new().unwrap();
    let p;
    {
        let g1 = c.lock().unwrap();
        let g2 = c.lock().unwrap();
        let v1 = v.get_lock().unwrap();
        let v2 = v.get_lock().unwrap();
        p = forked(cond_lock_once, (c.clone(), v.clone(), started.clone()));
        assert!(started.wait_timeout(DEADLINE));
        drop((g2, g1, v2, v1));
    }
    join(&p);
    let cond = c.try_lock().map(drop).map_err(|e| format!("{e:?}"));
    let value = v.try_get_lock().map(drop).map_err(|e| format!("{e:?}"));
    assert_eq!((cond, value), (Ok(()), Ok(())), "the locks after the child took and dropped each once");
}

// ---------------------------------------------------------------------------
// Barrier(3, action=f): the pattern the Barrier docs give (index 0 runs the
// action between two waits; nobody leaves before it finished).

shmproc::entry! {
    fn barrier_with_action(args: (Barrier, Value<u32>, Queue<u32>)) -> Result<(), String> {
        let (b, v, out) = args;
        if b.wait_timeout(DEADLINE).map_err(s)? == 0 {
            v.set(v.get().map_err(s)? + 100).map_err(s)?;
        }
        b.wait_timeout(DEADLINE).map_err(s)?;
        out.put(v.get().map_err(s)?).map_err(s)
    }
}

#[test]
fn barrier_action_between_two_waits() {
    let b = Barrier::new(3).unwrap();
    let v = Value::new(0u32).unwrap();
    let out = Queue::new(4).unwrap();
    let ps: Vec<Process> = (0..3)
        .map(|_| {
            let mut p = Process::new(barrier_with_action, (b.clone(), v.clone(), out.clone()));
            start(&mut p);
            p
        })
        .collect();
    ps.iter().for_each(join);
    // Every party saw the action's effect, and it ran once.
    assert_eq!((0..3).map(|_| out.get_timeout(DEADLINE).unwrap()).collect::<Vec<_>>(), [100, 100, 100]);
}

shmproc::entry! {
    fn child_with_pool(out: Queue<Vec<u64>>) -> Result<(), String> {
        let pool = shmproc::Pool::new(2).map_err(s)?;
        let r = pool.map(sq, 0..10).map_err(s)?;
        pool.close();
        pool.join().map_err(s)?;
        out.put(r).map_err(s)
    }
}

#[test]
fn a_pool_inside_a_child_and_results_outliving_the_with_block() {
    let out = Queue::new(2).unwrap();
    let mut p = Process::new(child_with_pool, out.clone());
    start(&mut p);
    assert_eq!(out.get_timeout(DEADLINE).unwrap(), (0..10).map(|x| x * x).collect::<Vec<u64>>());
    join(&p);
    let p = forked(child_with_pool, out.clone());
    assert_eq!(out.get_timeout(DEADLINE).unwrap(), (0..10).map(|x| x * x).collect::<Vec<u64>>());
    join(&p);

    // with Pool(2) as pool: r = pool.map_async(slow, ...)  -> leaving terminates
    let r = {
        let pool = shmproc::Pool::new(2).unwrap();
        pool.map_async(slow, [30_000u64, 30_000]).unwrap()
    };
    assert!(r.get_timeout(DEADLINE).is_err());
}

shmproc::entry! {
    fn send_then_hold(args: (Connection, Event, u64)) -> Result<(), String> {
        let (mut c, release, id) = args;
        c.send_value(&id).map_err(s)?;
        release.wait_timeout(DEADLINE);
        Ok(())
    }
}

#[test]
fn one_pipe_end_is_used_by_one_process_at_a_time() {
    // Python lets two processes given the same end send under a Lock; here
    // an end is held by the process using it until it drops the end or
    // exits (documented on Connection): another's send fails with Role.
    let (mut parent, child) = pipe(true).unwrap();
    let release = Event::new().unwrap();
    let p1 = forked(send_then_hold, (child.clone(), release.clone(), 1));
    assert_eq!(parent.recv_value_timeout::<u64>(DEADLINE).unwrap(), 1);
    let mut p2 = Process::new(send_then_hold, (child.clone(), release.clone(), 2));
    start(&mut p2);
    let e = join_raw(&p2).unwrap_err().to_string();
    assert!(e.contains("role") && e.contains("held by live process"), "{e}");
    release.set();
    join(&p1);
    let p3 = forked(send_then_hold, (child.clone(), release.clone(), 3));
    assert_eq!(parent.recv_value_timeout::<u64>(DEADLINE).unwrap(), 3);
    join(&p3);
}

#[test]
fn manager_dict_order_like_python() {
    let m = shmproc::Manager::new().unwrap();
    let d = m.dict::<String, u64>("order").unwrap();
    let k = |x: &str| x.to_string();
    d.insert(k("a"), 1).unwrap();
    d.insert(k("b"), 2).unwrap();
    d.insert(k("a"), 3).unwrap(); // update keeps its place
    assert_eq!(d.keys().unwrap(), [k("a"), k("b")]);
    assert_eq!(d.popitem().unwrap(), (k("b"), 2)); // LIFO by insertion
    d.insert(k("c"), 5).unwrap();
    d.del(&k("a")).unwrap();
    d.insert(k("a"), 4).unwrap(); // re-inserted: at the end
    assert_eq!(d.items().unwrap(), [(k("c"), 5), (k("a"), 4)]);
    assert_eq!(d.setdefault(k("c"), 9).unwrap(), 5);
    assert_eq!(d.setdefault(k("z"), 9).unwrap(), 9);
    assert_eq!(d.keys().unwrap(), [k("c"), k("a"), k("z")]);
    assert_eq!(d.pop(&k("nope")), Err(shmproc::ContainerError::KeyNotFound));
    let l = m.list::<i64>("l").unwrap();
    assert!(matches!(l.pop(), Err(shmproc::ContainerError::Empty(_))));
    l.extend([3, 1, 2]).unwrap();
    assert_eq!(l.pop_at(-1).unwrap(), 2);
    assert_eq!(l.get(-2).unwrap(), 3);
}

#[test]
fn a_stopped_child_is_alive_and_has_no_exit_code() {
    let ev = Event::new().unwrap();
    let out = Queue::new(4).unwrap();
    let mut p = Process::new(lifecycle_child, ("x".to_string(), ev.clone(), out.clone()));
    start(&mut p);
    out.get_timeout(DEADLINE).unwrap();
    let pid = p.pid().unwrap() as i32;
    // SAFETY: signalling our own live child (not reaped: it waits on `ev`).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(!p.join_timeout(Duration::from_millis(50)).unwrap());
    assert!(shmproc::active_children().iter().any(|c| c.pid() == p.pid()));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    ev.set();
    join(&p);
}

shmproc::entry! {
    fn name_of_my_child(out: Queue<String>) -> Result<(), String> {
        let p = Process::new(exits_with, 0);
        out.put(format!("{} {:?}", p.name(), p.identity())).map_err(s)
    }
}

#[test]
fn a_childs_first_child_is_named_like_pythons_under_both_start_methods() {
    // Python: the first child of Process-N is Process-N:1, however many
    // children its parent had made before it.
    let out = Queue::new(4).unwrap();
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let _warm: Vec<Process> = (0..3).map(|_| Process::new(exits_with, 0)).collect();
        let mut p = Process::new(name_of_my_child, out.clone()).with_start_method(method);
        let n = p.identity()[0];
        start(&mut p);
        join(&p);
        assert_eq!(out.get_timeout(DEADLINE).unwrap(), format!("Process-{n}:1 [{n}, 1]"), "{method:?}");
    }
}

shmproc::entry! {
    fn read_value(v: Value<u32>) -> Result<(), String> {
        v.get().map(drop).map_err(s)
    }
}

#[test]
fn an_object_gone_before_the_child_opens_it_is_exit_code_2() {
    let v = Value::new(5u32).unwrap();
    shmproc::unlink(v.name()).unwrap();
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = Process::new(read_value, v.clone()).with_start_method(method);
        start(&mut p);
        let r = join_raw(&p);
        // Fork inherits the mapping, so the child has the object (code 0).
        let want = if method == StartMethod::Spawn { 2 } else { 0 };
        assert_eq!(p.exitcode(), Some(want), "{method:?}: {r:?}");
    }
}

#[test]
fn refused_puts_do_not_count_as_unfinished_tasks() {
    let q = JoinableQueue::<u64>::new(1).unwrap();
    q.put(1).unwrap();
    assert!(q.put_nowait(2).is_err());
    assert!(q.put_timeout(3, Duration::from_millis(5)).is_err());
    assert_eq!(q.unfinished_tasks(), 1);
    let qs = JoinableQueue::<String>::new(1).unwrap();
    qs.put("a".into()).unwrap();
    assert!(qs.put_nowait("b".into()).is_err());
    assert!(qs.put_timeout("c".into(), Duration::from_millis(5)).is_err());
    assert!(qs.put("x".repeat(5000)).is_err()); // TooLarge
    let other = JoinableQueue::<String>::open(qs.name()).unwrap();
    other.close();
    assert!(other.put("d".into()).is_err());
    assert_eq!(qs.unfinished_tasks(), 1);
    qs.get().unwrap();
    qs.task_done().unwrap();
    assert!(qs.join_timeout(Duration::from_millis(100)));
    let qu = JoinableQueue::<String>::unbounded_with_limit(1 << 20).unwrap();
    let mut n = 0u64;
    while qu.put_nowait("y".repeat(1000)).is_ok() {
        n += 1;
        assert!(n < 100_000);
    }
    assert!(
        qu.put_timeout("z".into(), Duration::from_millis(5)).is_err() || {
            n += 1;
            true
        }
    );
    assert_eq!(qu.unfinished_tasks(), n);
    assert_eq!(qu.qsize() as u64, n);
}

shmproc::task! {
    fn exit_on(x: u64) -> u64 {
        match x {
            3 => std::process::exit(3),
            5 => std::process::abort(),
            _ => x,
        }
    }
}

#[test]
fn pool_task_that_exits_or_aborts_fails_only_its_item() {
    let pool = shmproc::Pool::new(2).unwrap();
    let r = pool.map_results(exit_on, 0..8, 1).unwrap();
    for (i, x) in r.iter().enumerate() {
        match i {
            3 | 5 => assert!(matches!(x, Err(shmproc::pool::TaskError::WorkerLost { .. })), "item {i}: {x:?}"),
            _ => assert_eq!(x.as_ref().ok(), Some(&(i as u64)), "item {i}"),
        }
    }
    assert_eq!(pool.map(sq, 0..4).unwrap(), [0, 1, 4, 9]);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn processes_started_from_several_threads_at_once_with_both_methods() {
    let q = Queue::<u64>::new(0).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let q = q.clone();
            sc.spawn(move || {
                for i in 0..6u64 {
                    let method = if (t + i) % 2 == 0 { StartMethod::Fork } else { StartMethod::Spawn };
                    let mut p = Process::new(fill_queue, (q.clone(), 2)).with_start_method(method);
                    start(&mut p);
                    let _ = shmproc::active_children();
                    let mut objs: [&mut dyn shmproc::Waitable; 1] = [&mut p];
                    assert!(shmproc::wait(&mut objs, Some(DEADLINE)).unwrap().contains(0));
                    join(&p);
                }
            });
        }
    });
    assert_eq!(q.qsize(), 4 * 6 * 2);
}

shmproc::entry! {
    fn sum_queue(args: (Queue<u64>, u64, Queue<u64>)) -> Result<(), String> {
        let (q, n, out) = args;
        let mut total = 0;
        for _ in 0..n {
            total += q.get_timeout(DEADLINE).map_err(s)?;
        }
        out.put(total).map_err(s)
    }
}

#[test]
fn an_unbounded_queue_outlives_its_creators_handle_while_children_use_it() {
    // Python: q = Queue(); start producer and consumer; del q in the parent.
    let n = 300_000u64;
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let out = Queue::<u64>::new(2).unwrap();
        let (mut a, mut b);
        {
            let q = Queue::<u64>::new(0).unwrap();
            a = Process::new(fill_queue, (q.clone(), n)).with_start_method(method);
            b = Process::new(sum_queue, (q.clone(), n, out.clone())).with_start_method(method);
            start(&mut a);
            start(&mut b);
        } // the creator's handles drop here
        assert_eq!(out.get_timeout(DEADLINE), Ok(n * (n - 1) / 2), "{method:?}");
        join(&a);
        join(&b);
    }
}

// Python with fork: module-level objects are inherited, not passed:
//     lock = Lock(); q = Queue(); total = Value('i', 0)
//     def f(i):
//         with lock: total.value += i
//         q.put(i)
type Globals = (Lock, Queue<u64>, Value<i64>);
// A Mutex<Option> rather than a OnceLock, so the test can drop the objects
// at its end (a static is never dropped: its segments would stay).
static INHERITED: std::sync::Mutex<Option<Globals>> = std::sync::Mutex::new(None);

shmproc::entry! {
    fn use_inherited(i: u64) -> Result<(), String> {
        let (lock, q, total) = INHERITED.lock().map_err(s)?.clone().ok_or("not inherited")?;
        {
            let _g = lock.lock().map_err(|e| s(e.without_guard()))?;
            total.set(total.get().map_err(s)? + i as i64).map_err(s)?;
        }
        q.put(i).map_err(s)
    }
}

#[test]
fn forked_children_use_objects_inherited_through_a_static() {
    let (lock, q, total) = (Lock::new().unwrap(), Queue::new(0).unwrap(), Value::new(0i64).unwrap());
    *INHERITED.lock().unwrap() = Some((lock, q.clone(), total.clone()));
    let ps: Vec<Process> = (1..=4).map(|i| forked(use_inherited, i)).collect();
    ps.iter().for_each(join);
    assert_eq!(total.get().unwrap(), 10);
    let mut got: Vec<u64> = (0..4).map(|_| q.get_timeout(DEADLINE).unwrap()).collect();
    got.sort();
    assert_eq!(got, [1, 2, 3, 4]);
    INHERITED.lock().unwrap().take();
}

/// The names in /dev/shm of the segments of queue `name` (its control
/// segment and rings).
fn segments_of(name: &str) -> Vec<String> {
    let prefix = format!("shmproc.{name}");
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default()
}

#[test]
fn forked_children_keep_an_unbounded_queue_whose_parent_let_go() {
    // Python (fork): q = Queue(); start a producer and a consumer of q;
    // del q; the parent goes on with other work (is_alive() here, which
    // releases its kept copy of the children's arguments).
    let n = 300_000u64;
    let out = Queue::<u64>::new(2).unwrap();
    let (a, b, name);
    {
        let q = Queue::<u64>::new(0).unwrap();
        name = q.name().to_string();
        a = forked(fill_queue, (q.clone(), n));
        b = forked(sum_queue, (q.clone(), n, out.clone()));
    }
    for _ in 0..20 {
        let _ = (a.is_alive(), b.is_alive());
        std::thread::sleep(Duration::from_millis(5));
    }
    let sum = out.get_timeout(Duration::from_secs(30));
    join(&a);
    join(&b);
    assert_eq!((sum, segments_of(&name)), (Ok(n * (n - 1) / 2), vec![]), "the sum, and the queue's segments left");
}
