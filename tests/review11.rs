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
