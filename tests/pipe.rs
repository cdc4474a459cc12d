//! Variable-length frames and pipes across real processes.

mod common;

use std::time::Duration;

use shmproc::process::StartMethod;
use shmproc::queue::ByteQueue;
use shmproc::{
    Connection, Event, PipeRecvBytesTimeoutError, PipeRecvError, PipeRecvTimeoutError, PipeSendError,
    PipeSendTimeoutError, PipeTryRecvBytesError, PipeTryRecvError, PipeTrySendError, Process,
};
use shmproc::{RecvError, TrySendError};

const MAX_FRAME: u64 = 3000;
const FRAMES: u32 = 20_000;

/// Deterministic sizes and contents both sides can compute.
fn frame(seq: u32) -> Vec<u8> {
    let mut x = seq.wrapping_mul(2_654_435_761) ^ 0x9E37_79B9;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    let len = (x as u64 % (MAX_FRAME + 1)) as usize;
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

shmproc::entry! {
    fn send_frames(q: ByteQueue) -> Result<(), String> {
        let mut tx = q.producer().map_err(|e| e.to_string())?;
        for seq in 0..FRAMES {
            tx.send(&frame(seq)).map_err(|e| e.to_string())?;
        }
        // Also the edge sizes.
        tx.send(&[]).map_err(|e| e.to_string())?;
        tx.send(&vec![0xAB; MAX_FRAME as usize]).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn frames_of_random_sizes_arrive_intact_across_processes() {
    let q = ByteQueue::new(16 * 1024, MAX_FRAME).unwrap();
    let mut rx = q.consumer().unwrap();
    let mut p = Process::new(send_frames, q.clone());
    p.start().unwrap();
    let mut buf = Vec::new();
    for seq in 0..FRAMES {
        rx.recv_timeout_into(&mut buf, Duration::from_secs(30)).unwrap();
        assert_eq!(buf, frame(seq), "frame {seq}");
    }
    assert_eq!(rx.recv().unwrap(), Vec::<u8>::new());
    assert_eq!(rx.recv().unwrap(), vec![0xAB; MAX_FRAME as usize]);
    common::join(&p).unwrap();
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn oversized_frames_and_bad_sizes_are_clear_errors() {
    let q = ByteQueue::new(4096, 100).unwrap();
    let mut tx = q.producer().unwrap();
    assert_eq!(tx.try_send(&[0; 101]), Err(TrySendError::TooLarge { len: 101, max: 100 }));
    assert!(ByteQueue::new(4096, 3000).is_err(), "frame limit above half the ring");
    assert!(ByteQueue::new(1000, 10).is_err(), "not a power of two");
    assert!(ByteQueue::new(32, 4).is_err(), "too small");
}

#[test]
fn a_corrupted_frame_header_is_reported_not_followed() {
    let q = ByteQueue::new(4096, 100).unwrap();
    let mut tx = q.producer().unwrap();
    let mut rx = q.consumer().unwrap();
    tx.send(b"hello").unwrap();
    // A hostile peer overwrites the published header with a huge length.
    // Data starts after the 128-byte header and the 384-byte control block.
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{}", q.name())).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&99_999u32.to_le_bytes()).unwrap();
    assert_eq!(rx.recv(), Err(RecvError::Corrupted));
}

shmproc::entry! {
    /// Echoes every message back, doubled, until the other end goes away.
    fn echo_doubled(mut conn: Connection) -> Result<(), String> {
        loop {
            match conn.recv::<u64>() {
                Ok(v) => conn.send(&(v * 2)).map_err(|e| e.to_string())?,
                Err(PipeRecvError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[test]
fn pipe_ping_pong_across_processes() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(echo_doubled, b);
    p.start().unwrap();
    for v in 0..1000u64 {
        a.send(&v).unwrap();
        assert_eq!(a.recv::<u64>().unwrap(), v * 2);
    }
    assert!(!a.poll(Duration::from_millis(1)).unwrap());
    a.close();
    common::join(&p).unwrap();
}

shmproc::entry! {
    fn hold_pipe_end(args: (Connection, Event)) {
        let (mut conn, ready) = args;
        conn.send(&1u8).unwrap();
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_killed_peer_gives_disconnected_after_draining() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let ready = Event::new().unwrap();
    let mut p = Process::new(hold_pipe_end, (b, ready.clone())).with_daemon(true);
    p.start().unwrap();
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    p.kill().unwrap();
    assert_eq!(a.recv::<u8>().unwrap(), 1, "what was sent before death is delivered");
    assert_eq!(a.recv::<u8>(), Err(PipeRecvError::Disconnected));
    let _ = common::join(&p);
}

/// Receives with a deadline long enough for any load: `TimedOut` means
/// the death of the peer was never seen (the defect).
fn recv_bounded(conn: &mut Connection) -> Result<Vec<u8>, PipeRecvBytesTimeoutError> {
    conn.recv_bytes_timeout(Duration::from_secs(20))
}

shmproc::entry! {
    fn drop_end_unused(_conn: Connection) {}
}

shmproc::entry! {
    fn sleep_with_end_unused(args: (Connection, Event)) {
        let (_conn, ready) = args;
        ready.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Issue 9 item 11: the child takes no role before it exits, so before the
/// fix no death could be seen and `recv` waited forever (here: TimedOut).
#[test]
fn a_child_that_exits_without_using_its_end_gives_disconnected() {
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        let (mut a, b) = shmproc::pipe(true).unwrap();
        let mut p = Process::new(drop_end_unused, b).with_start_method(m);
        p.start().unwrap();
        assert_eq!(recv_bounded(&mut a), Err(PipeRecvBytesTimeoutError::Disconnected), "{m:?}");
        common::join(&p).unwrap();
    }
}

/// Issue 9 item 11: killed while holding the end unused, or killed right
/// after start (before it could even decode its argument).
#[test]
fn a_child_killed_before_using_its_end_gives_disconnected() {
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        let (mut a, b) = shmproc::pipe(true).unwrap();
        let ready = Event::new().unwrap();
        let mut p = Process::new(sleep_with_end_unused, (b, ready.clone())).with_start_method(m).with_daemon(true);
        p.start().unwrap();
        assert!(ready.wait_timeout(Duration::from_secs(30)), "child did not start");
        p.kill().unwrap();
        assert_eq!(recv_bounded(&mut a), Err(PipeRecvBytesTimeoutError::Disconnected), "{m:?}, killed while holding");
        let _ = common::join(&p);

        let (mut a, b) = shmproc::pipe(true).unwrap();
        let ready = Event::new().unwrap();
        let mut p = Process::new(sleep_with_end_unused, (b, ready)).with_start_method(m).with_daemon(true);
        p.start().unwrap();
        p.kill().unwrap();
        assert_eq!(recv_bounded(&mut a), Err(PipeRecvBytesTimeoutError::Disconnected), "{m:?}, killed at once");
        let _ = common::join(&p);
    }
}

/// Issue 10: `close()` closes this handle only. Before the fix, closing the
/// parent's copy of the child's end took the child's roles and dropped them,
/// so the parent's own sends failed with Disconnected.
#[test]
fn closing_the_parents_copy_of_a_handed_end_leaves_the_child_connected() {
    for shutdown in [false, true] {
        let (mut a, b) = shmproc::pipe(true).unwrap();
        let mut p = Process::new(echo_doubled, b.clone()).with_daemon(true);
        p.start().unwrap();
        let mut b = b;
        b.close(); // like Python's child_conn.close() after p.start()
        drop(b);
        for v in 0..200u64 {
            a.send(&v).unwrap();
            let back = recv_bounded(&mut a).unwrap();
            assert_eq!(back, (v * 2).to_ne_bytes());
        }
        // The child ends only when the last holder of `a` is gone, or the
        // pipe is shut down for everybody.
        let a2 = a.clone();
        if shutdown {
            a.shutdown();
            assert_eq!(a2.clone().send(&1u64), Err(PipeSendError::Closed));
        } else {
            a.close();
        }
        common::join(&p).unwrap();
        drop(a2);
    }
}

/// Copies of an end: the peer sees Disconnected only when the holder that
/// used it closed, or the last copy in the process went.
#[test]
fn an_unused_copy_closed_does_not_disconnect_the_peer() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let mut b2 = b.clone();
    drop(b);
    let r = a.recv_bytes_timeout(Duration::from_millis(5));
    assert_eq!(r, Err(PipeRecvBytesTimeoutError::TimedOut), "one copy left: not disconnected");
    b2.send(&5u8).unwrap();
    assert_eq!(a.recv::<u8>(), Ok(5));
    drop(b2);
    assert_eq!(a.recv::<u8>(), Err(PipeRecvError::Disconnected));
}

shmproc::entry! {
    /// Reads nothing until `go`, then checks that it receives 0, 1, 2...
    /// up to the sentinel `u64::MAX`, and sends back how many it got.
    fn count_after_go(args: (Connection, Event)) -> Result<(), String> {
        let (mut conn, go) = args;
        if !go.wait_timeout(Duration::from_secs(60)) {
            return Err("never told to go".into());
        }
        let mut n = 0u64;
        loop {
            match conn.recv_timeout::<u64>(Duration::from_secs(60)).map_err(|e| e.to_string())? {
                u64::MAX => return conn.send(&n).map_err(|e| e.to_string()),
                v if v == n => n += 1,
                v => return Err(format!("got {v}, expected {n}")),
            }
        }
    }
}

/// Issue 10 item 3: the non-waiting and bounded sends on a full pipe whose
/// reader (another process) is alive but not reading: `Full` and
/// `TimedOut`, and nothing is lost or duplicated by the refused sends.
#[test]
fn try_send_on_a_full_pipe_is_full_and_send_timeout_times_out() {
    let (mut a, b) = shmproc::pipe_with(true, 256, 16).unwrap();
    let go = Event::new().unwrap();
    let mut p = Process::new(count_after_go, (b, go.clone())).with_daemon(true);
    p.start().unwrap();
    let mut sent = 0u64;
    let full = loop {
        match a.try_send(&sent) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(full, PipeTrySendError::Full);
    assert!(sent > 0, "nothing fit in an empty pipe");
    assert_eq!(a.try_send_bytes(&sent.to_ne_bytes()), Err(PipeTrySendError::Full));
    assert_eq!(a.send_timeout(&sent, Duration::from_millis(5)), Err(PipeSendTimeoutError::TimedOut));
    assert_eq!(a.send_bytes_timeout(&sent.to_ne_bytes(), Duration::ZERO), Err(PipeSendTimeoutError::TimedOut));
    // A message above the frame limit is TooLarge in every form, full or not.
    assert_eq!(a.try_send_bytes(&[0; 17]), Err(PipeTrySendError::TooLarge { len: 17, max: 16 }));
    assert_eq!(
        a.send_bytes_timeout(&[0; 17], Duration::ZERO),
        Err(PipeSendTimeoutError::TooLarge { len: 17, max: 16 })
    );
    go.set();
    // Room comes back as the child reads: the bounded forms then succeed.
    a.send_timeout(&sent, Duration::from_secs(30)).unwrap();
    a.send_bytes_timeout(&u64::MAX.to_ne_bytes(), Duration::from_secs(30)).unwrap();
    assert_eq!(a.recv_timeout::<u64>(Duration::from_secs(30)), Ok(sent + 1), "each accepted message arrives once");
    common::join(&p).unwrap();
}

shmproc::entry! {
    /// Sends one value once told to go.
    fn send_after_go(args: (Connection, Event)) -> Result<(), String> {
        let (mut conn, go) = args;
        conn.send(&0u8).map_err(|e| e.to_string())?; // hold the sending role
        if !go.wait_timeout(Duration::from_secs(60)) {
            return Err("never told to go".into());
        }
        conn.send(&42u32).map_err(|e| e.to_string())
    }
}

/// Issue 10 item 3: the non-waiting and bounded receives on an empty pipe
/// whose writer (another process) is alive: `Empty` and `TimedOut`; once
/// the writer is gone and the pipe drained, `Disconnected` (not `Empty`).
#[test]
fn try_recv_on_an_empty_pipe_is_empty_and_recv_timeout_times_out() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let go = Event::new().unwrap();
    let mut p = Process::new(send_after_go, (b, go.clone())).with_daemon(true);
    p.start().unwrap();
    assert_eq!(a.recv_timeout::<u8>(Duration::from_secs(30)), Ok(0));
    assert_eq!(a.try_recv::<u32>(), Err(PipeTryRecvError::Empty));
    assert_eq!(a.try_recv_bytes(), Err(PipeTryRecvBytesError::Empty));
    assert_eq!(a.recv_timeout::<u32>(Duration::from_millis(5)), Err(PipeRecvTimeoutError::TimedOut));
    assert_eq!(a.recv_bytes_timeout(Duration::ZERO), Err(PipeRecvBytesTimeoutError::TimedOut));
    go.set();
    assert_eq!(a.recv_timeout::<u32>(Duration::from_secs(30)), Ok(42));
    common::join(&p).unwrap();
    assert_eq!(a.try_recv::<u32>(), Err(PipeTryRecvError::Disconnected));
    assert_eq!(a.recv_timeout::<u32>(Duration::ZERO), Err(PipeRecvTimeoutError::Disconnected));
}

/// Issue 10 item 3: the frame limit is in the error, with what to do.
#[test]
fn too_large_error_names_the_limit_and_pipe_with() {
    let (mut a, _b) = shmproc::pipe(true).unwrap();
    let max = shmproc::PIPE_MAX_FRAME as usize;
    let e = a.send_bytes(&vec![0; max + 1]).unwrap_err();
    assert_eq!(e, PipeSendError::TooLarge { len: max + 1, max });
    let msg = e.to_string();
    assert!(msg.contains(&max.to_string()) && msg.contains("pipe_with"), "{msg}");
    let (mut a, mut b) = shmproc::pipe_with(true, 4 * shmproc::PIPE_CAPACITY, 2 * shmproc::PIPE_MAX_FRAME).unwrap();
    a.send_bytes(&vec![7; max + 1]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), vec![7; max + 1]);
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    let (mut r, mut w) = shmproc::pipe(false).unwrap();
    assert_eq!(r.send(&1u8), Err(PipeSendError::NotWritable));
    assert_eq!(w.recv::<u8>(), Err(PipeRecvError::NotReadable));
    w.send(&5u8).unwrap();
    assert_eq!(r.recv::<u8>(), Ok(5));
}

// ---- an end handed on unused to a grandchild (review) ----

shmproc::entry! {
    /// The grandchild: waits for the parent's go, then sends 7 on the end
    /// its parent (the child) handed on to it.
    fn send_seven_on_go(args: (Connection, Event)) -> Result<(), String> {
        let (mut end, go) = args;
        if !go.wait_timeout(Duration::from_secs(60)) {
            return Err("no go from the test within 60 s".into());
        }
        end.send(&7u64).map_err(|e| format!("grandchild send: {e}"))
    }
}

shmproc::entry! {
    /// The child: hands the end it received, unused, on to a grandchild,
    /// closes its own copy (as Python programs do after `start()`), says
    /// so, and waits for the grandchild.
    fn hand_on_and_close(args: (Connection, Event, Event)) -> Result<(), String> {
        let (mut end, go, closed) = args;
        let mut g = Process::new(send_seven_on_go, (end.clone(), go)).with_daemon(true);
        g.start().map_err(|e| e.to_string())?;
        end.close();
        drop(end);
        closed.set();
        match g.join_timeout(Duration::from_secs(60)) {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = g.kill();
                Err("grandchild did not finish within 60 s".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A pipe end received by a child and handed on, unused, to a grandchild
/// belongs to the grandchild: the child closing its copy must not tell the
/// peer that the end is gone. Before, the role stayed designated to the
/// child (a role designated to a live process could not be designated
/// again), the child's close gave the designation back and marked the end
/// gone, and the parent's receive reported `Disconnected` although the
/// grandchild was about to send.
#[test]
fn an_end_handed_on_unused_to_a_grandchild_stays_connected() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let (go, closed) = (Event::new().unwrap(), Event::new().unwrap());
    // Not a daemon: a daemon may not start the grandchild (DaemonicParent).
    let mut p = Process::new(hand_on_and_close, (b, go.clone(), closed.clone()));
    p.start().unwrap();
    assert!(closed.wait_timeout(Duration::from_secs(60)), "the child did not hand the end on and close it");
    assert_eq!(a.try_recv::<u64>(), Err(PipeTryRecvError::Empty), "the grandchild still holds the end");
    go.set();
    assert_eq!(a.recv_timeout::<u64>(Duration::from_secs(60)), Ok(7));
    common::join(&p).expect("the child (or the grandchild) failed");
}

/// Issue 10 item 3: a second handle of an end in use gets its operation's
/// `Role` error, shown as the `RoleError` (once: it is not also the
/// source), and every per-operation error widens into `ConnectionError`.
#[test]
fn pipe_role_error_per_operation_and_union() {
    let (mut a, mut b) = shmproc::pipe(true).unwrap();
    let mut a2 = a.clone();
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>(), Ok(1));
    let e = a2.send(&2u8).unwrap_err();
    let PipeSendError::Role(role) = e else { panic!("{e:?}") };
    assert_eq!(e.to_string(), role.to_string());
    assert!(std::error::Error::source(&e).is_none());
    assert_eq!(shmproc::ConnectionError::from(e), shmproc::ConnectionError::Role(role));
    let mut b2 = b.clone();
    assert!(matches!(b2.poll(Duration::ZERO), Err(shmproc::PipePollError::Role(_))));
    assert!(matches!(b2.try_recv_bytes(), Err(PipeTryRecvBytesError::Role(_))));
    assert_eq!(
        shmproc::ConnectionError::from(a.try_send_bytes(&[0; 20_000]).unwrap_err()),
        shmproc::ConnectionError::TooLarge { len: 20_000, max: shmproc::PIPE_MAX_FRAME as usize }
    );
}

// ---- Handoff values, buffers reused, loans (issue 11 items 1 and 4) ----

shmproc::entry! {
    /// Echoes `(u32, String)` values with the number doubled and the text
    /// upper-cased; a message that is not such a value is answered with
    /// the error's text (the child must not panic, and must go on).
    fn value_echo(mut conn: Connection) -> Result<(), String> {
        loop {
            match conn.recv_value_timeout::<(u32, String)>(Duration::from_secs(60)) {
                Ok((n, s)) => conn.send_value(&(n * 2, s.to_uppercase())).map_err(|e| e.to_string())?,
                Err(shmproc::PipeRecvValueTimeoutError::Decode(e)) => {
                    conn.send_value(&(u32::MAX, format!("decode: {e}"))).map_err(|e| e.to_string())?
                }
                Err(shmproc::PipeRecvValueTimeoutError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// `send_value` / `recv_value` carry `Handoff` values (here `(u32,
/// String)`) between processes, in order; a message that does not decode
/// is a `Decode` error in the receiving process, which goes on with the
/// next message (nothing else is lost).
#[test]
fn handoff_values_travel_both_ways_and_bad_messages_are_decode_errors() {
    let (mut a, b) = shmproc::pipe(true).unwrap();
    let mut p = Process::new(value_echo, b).with_daemon(true);
    p.start().unwrap();
    let t = Duration::from_secs(60);
    for i in 0..200u32 {
        let s = format!("value {i} {}", "x".repeat(i as usize));
        a.send_value(&(i, s.clone())).unwrap();
        assert_eq!(a.recv_value_timeout::<(u32, String)>(t).unwrap(), (i * 2, s.to_uppercase()));
    }
    // Not a (u32, String): too short, then a length past the end, then trailing bytes.
    for bad in [vec![1u8, 2], [7u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat(), {
        let mut v = Vec::new();
        shmproc::process::Handoff::encode(&(1u32, String::from("ok")), &mut v);
        v.push(0);
        v
    }] {
        a.send_bytes(&bad).unwrap();
        let (n, msg) = a.recv_value_timeout::<(u32, String)>(t).unwrap();
        assert_eq!(n, u32::MAX, "{msg}");
        assert!(msg.starts_with("decode: "), "{msg}");
    }
    a.send_value(&(21u32, String::from("after"))).unwrap();
    assert_eq!(a.recv_value_timeout::<(u32, String)>(t).unwrap(), (42, "AFTER".to_string()));
    a.close();
    common::join(&p).unwrap();
}

/// Locally: a value of the wrong type is a `Decode` error, and the
/// connection goes on.
#[test]
fn recv_value_of_the_wrong_type_is_a_decode_error_not_a_panic() {
    let (mut a, mut b) = shmproc::pipe(true).unwrap();
    a.send_value(&String::from("text")).unwrap();
    assert!(matches!(b.recv_value::<Vec<u64>>(), Err(shmproc::PipeRecvValueError::Decode(_))));
    a.send_value(&true).unwrap();
    assert_eq!(b.try_recv_value::<u8>(), Ok(1)); // a bool is one byte
    a.send_bytes(&[9]).unwrap();
    let e = b.recv_value::<bool>().unwrap_err();
    assert!(matches!(e, shmproc::PipeRecvValueError::Decode(_)));
    assert!(matches!(shmproc::ConnectionError::from(e), shmproc::ConnectionError::Decode(_)));
    assert_eq!(b.try_recv_value::<bool>(), Err(shmproc::PipeTryRecvValueError::Empty));
}

shmproc::entry! {
    /// Answers each message with its length and byte sum, read in place
    /// through a read loan, and sends a 64 KiB reply through a write loan
    /// for each 'L' message.
    fn loan_echo(mut conn: Connection) -> Result<(), String> {
        loop {
            let loan = match conn.recv_loan() {
                Ok(l) => l,
                Err(shmproc::PipeRecvBytesError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            if loan.len() >= 64 && !(loan.as_ptr() as usize).is_multiple_of(64) {
                return Err(format!("a {}-byte message not 64-aligned", loan.len()));
            }
            // SAFETY: the sending end follows the protocol.
            let bytes = unsafe { loan.as_slice() };
            let (len, sum) = (bytes.len() as u64, bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
            let big = bytes.first() == Some(&b'L');
            loan.release();
            conn.send(&[len, sum]).map_err(|e| e.to_string())?;
            if big {
                let mut w = conn.send_loan(64 * 1024).map_err(|e| e.to_string())?;
                // SAFETY: single producer; the receiver does not read an uncommitted message.
                unsafe { w.as_mut_slice() }.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
                w.commit().map_err(|e| e.to_string())?;
            }
        }
    }
}

/// Pipe loans across processes: messages read in place in the child (64-
/// aligned from 64 bytes on) and a 64 KiB reply written in place there;
/// the parent reuses one buffer with `recv_bytes_into`.
#[test]
fn pipe_loans_and_recv_bytes_into_across_processes() {
    let (mut a, b) = shmproc::pipe_with(true, 1 << 18, 64 * 1024).unwrap();
    let mut p = Process::new(loan_echo, b).with_daemon(true);
    p.start().unwrap();
    let t = Duration::from_secs(60);
    let mut buf = Vec::new();
    for len in [0usize, 1, 63, 64, 65, 1000, 4096, 65_536] {
        let msg: Vec<u8> = (0..len).map(|i| if i == 0 { b'L' } else { (i * 3) as u8 }).collect();
        let mut loan = a.send_loan(len).unwrap();
        loan.write_at(0, &msg);
        loan.commit().unwrap();
        assert_eq!(a.recv_timeout::<[u64; 2]>(t).unwrap(), [len as u64, msg.iter().map(|&b| u64::from(b)).sum()]);
        if len > 0 {
            assert_eq!(a.recv_bytes_timeout_into(&mut buf, t), Ok(64 * 1024));
            assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "reply to {len}");
        }
    }
    a.close();
    common::join(&p).unwrap();
}
