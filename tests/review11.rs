//! Review 11: queues, pipes, `wait` and `Process` under hostile use
//! (kills at random instants, garbage in shared memory, Python-porting
//! surprises). Every test is bounded by a deadline.

mod common;

use std::time::{Duration, Instant};

use shmproc::{Connection, Process, wait};

// ------------------------------------------------- Connection::poll at EOF

shmproc::entry! {
    /// Sends one last message on its end, then returns (the end drops).
    fn r11_send_last(mut conn: Connection) -> Result<(), String> {
        conn.send_bytes(b"last").map_err(|e| e.to_string())
    }
}

/// Python's `Connection.poll(timeout)` returns `True` once the other end
/// is closed (the next `recv` would not block: it raises `EOFError`), so
/// the usual loop `if conn.poll(t): msg = conn.recv()` ends with the
/// `EOFError`. `wait([conn])` says the end is ready then too. Here `poll`
/// must agree: true (at once) when `recv` would fail with `Disconnected`.
#[test]
fn poll_on_an_end_whose_sender_left_is_true_as_in_python() {
    let (mut mine, theirs) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(r11_send_last, theirs);
    p.start().unwrap();
    assert!(mine.poll(common::DEADLINE).unwrap(), "the child's message");
    assert_eq!(mine.recv_bytes().unwrap(), b"last");
    common::join(&p).unwrap();
    let ready: Vec<usize> = wait(&mut [&mut mine], Some(Duration::ZERO)).unwrap().iter().collect();
    assert_eq!(ready, [0], "wait says the end is ready (recv fails at once)");
    let t0 = Instant::now();
    let polled = mine.poll(Duration::from_secs(5)).unwrap();
    let took = t0.elapsed();
    let recv = mine.try_recv_bytes();
    assert!(
        polled,
        "poll said no message after {took:?} although recv fails at once ({recv:?}) and wait said ready: \
         a Python loop `while not conn.poll(t)` never ends"
    );
    assert!(took < Duration::from_secs(2), "poll took {took:?}");
    assert_eq!(recv, Err(shmproc::PipeTryRecvBytesError::Disconnected));
}

// ------------------------------------------- Process::start on a full /dev/shm

/// The variable that tells a re-run (in its private tmpfs) it is the child.
const INNER: &str = "SHMPROC_REVIEW11_INNER";

/// Re-runs `test` alone inside a private 16 MiB tmpfs on /dev/shm; true
/// in the re-run.
fn inside_small_dev_shm(test: &str) -> bool {
    common::rerun_in_tmpfs(test, INNER, Some("16m"), Duration::from_secs(60))
}

/// A `Process::start` refused for lack of room in /dev/shm (its status
/// segment cannot be made) is an error that loses nothing: as in Python,
/// whose `start()` can be called again after an `OSError`, the same
/// `Process` starts once there is room, and the pipe end in its argument
/// reaches the child, whose message arrives.
#[test]
fn a_start_refused_on_a_full_dev_shm_can_be_retried_with_its_argument() {
    if !inside_small_dev_shm("a_start_refused_on_a_full_dev_shm_can_be_retried_with_its_argument") {
        return;
    }
    let (mut mine, theirs) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(r11_send_last, theirs);
    let filler = common::fill_dev_shm("review11-fill", &[1 << 20, 1 << 16, 4096, 1]);
    let first = p.start();
    assert!(first.is_err(), "started on a full /dev/shm");
    drop(filler);
    let again = p.start();
    assert!(again.is_ok(), "after {first:?}, with room again: {again:?}");
    assert_eq!(mine.recv_bytes_timeout(common::DEADLINE), Ok(b"last".to_vec()));
    common::join(&p).unwrap();
}

/// A `Process` whose start was refused (full /dev/shm) and which is then
/// dropped unstarted gives its pipe end back: the peer's `recv` says
/// `Disconnected` (Python: `EOFError` once the unstarted process object
/// and its end are gone), instead of waiting for a child that never was.
#[test]
fn a_pipe_end_of_a_process_whose_start_was_refused_disconnects_when_dropped() {
    if !inside_small_dev_shm("a_pipe_end_of_a_process_whose_start_was_refused_disconnects_when_dropped") {
        return;
    }
    let (mut mine, theirs) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(r11_send_last, theirs);
    let filler = common::fill_dev_shm("review11-fill", &[1 << 20, 1 << 16, 4096, 1]);
    assert!(p.start().is_err(), "started on a full /dev/shm");
    drop(filler);
    drop(p);
    let t0 = Instant::now();
    let r = mine.recv_bytes_timeout(Duration::from_secs(3));
    assert_eq!(
        r,
        Err(shmproc::PipeRecvBytesTimeoutError::Disconnected),
        "after {:?}: the end was never handed to any child",
        t0.elapsed()
    );
}

// ------------------------------------ qsize / empty after a killed producer

shmproc::entry! {
    /// Claims a put's slot in each queue and stops there, as a producer
    /// killed between its claim and its publication; sets `claimed`, then
    /// hangs until killed.
    fn r11_claim_puts_and_hang(
        args: (shmproc::Queue<u64>, shmproc::Queue<String>, shmproc::JoinableQueue<u64>, shmproc::Queue<u64>, shmproc::Event),
    ) -> Result<(), String> {
        let (q, qs, jq, qu, claimed) = args;
        let all = [q.__claim_and_stop(false), qs.__claim_and_stop(false), jq.__claim_and_stop(false), qu.__claim_and_stop(false)];
        if all != [true; 4] {
            return Err(format!("claims: {all:?}"));
        }
        claimed.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Drains `q` as a Python program does (`while not q.empty(): q.get()`),
/// every get bounded: the items got, or an error naming the queue.
macro_rules! drain_while_not_empty {
    ($q:expr, $what:literal) => {{
        let mut got = Vec::new();
        while !$q.empty() {
            match $q.get_timeout(Duration::from_secs(5)) {
                Ok(v) => got.push(v),
                Err(e) => panic!("{}: empty() said an item is there, then get: {e:?} (got {got:?})", $what),
            }
        }
        got
    }};
}

/// A producer killed between claiming its slot and publishing it put
/// nothing: `qsize` is 0 and `empty` is true at once (bounded `Queue` of
/// plain data and of `String`s, `JoinableQueue`, unbounded `Queue`), so a
/// ported drain loop `while not q.empty(): q.get()` ends, items put later
/// are counted exactly, and `join` returns after their `task_done`s.
/// Before, the dead slot counted as an item until a `get` had waited on it:
/// `empty()` said false on a queue holding nothing, and the loop's `get`
/// blocked for good.
#[test]
fn a_producer_killed_mid_put_leaves_qsize_and_empty_exact() {
    let q = shmproc::Queue::<u64>::new(8).unwrap();
    let qs = shmproc::Queue::<String>::new(8).unwrap();
    let jq = shmproc::JoinableQueue::<u64>::new(8).unwrap();
    let qu = shmproc::Queue::<u64>::new(0).unwrap();
    let claimed = shmproc::Event::new().unwrap();
    let mut p = Process::new(r11_claim_puts_and_hang, (q.clone(), qs.clone(), jq.clone(), qu.clone(), claimed.clone()))
        .with_daemon(true);
    p.start().unwrap();
    let ok = claimed.wait_timeout(common::DEADLINE);
    p.kill().unwrap();
    let _ = common::join(&p);
    assert!(ok, "the child did not claim");
    let sizes = [q.qsize(), qs.qsize(), jq.qsize(), qu.qsize()];
    let empties = [q.empty(), qs.empty(), jq.empty(), qu.empty()];
    assert_eq!(sizes, [0; 4], "qsize after the killed put (empty(): {empties:?})");
    assert_eq!(empties, [true; 4], "empty() after the killed put");
    for i in 1..=2u64 {
        q.put(i).unwrap();
        qs.put(format!("s{i}")).unwrap();
        jq.put(i).unwrap();
        qu.put(i).unwrap();
    }
    assert_eq!([q.qsize(), qs.qsize(), jq.qsize(), qu.qsize()], [2; 4]);
    assert_eq!(drain_while_not_empty!(q, "Queue<u64>"), [1, 2]);
    assert_eq!(drain_while_not_empty!(qs, "Queue<String>"), ["s1", "s2"]);
    assert_eq!(drain_while_not_empty!(jq, "JoinableQueue<u64>"), [1, 2]);
    assert_eq!(drain_while_not_empty!(qu, "unbounded Queue<u64>"), [1, 2]);
    jq.task_done().unwrap();
    jq.task_done().unwrap();
    assert!(jq.join_timeout(Duration::from_secs(5)), "join after both task_done");
}
