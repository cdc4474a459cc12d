//! Model tests (proptest, against VecDeques) of the byte-frame operations
//! the older models left out. The `ByteQueue` model (moved here from
//! `tests/pipe.rs` and extended) now has every public operation of both
//! ends: the copies, the loans (committed, dropped, held across a
//! `close`), the `_timeout` forms (zero timeouts: they time out exactly
//! when the try forms say `Full` / `Empty`), the blocking forms (only when
//! the model says they cannot block), `recv_into` reusing one buffer,
//! `poll`, `close`, and each end dropped and its role taken again (a
//! dropped loan's skipped wrap gap left unpublished). The `Connection`
//! model does the same for a pipe's bytes: `send_bytes` and its twins,
//! `send`/`recv` of plain data (a message of the wrong size is
//! `WrongSize` and consumed), `recv_bytes_into` and its twins, the loans,
//! `poll` (true at the peer's EOF), `close` and `shutdown`.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use proptest::prelude::*;
use shmproc::queue::ByteQueue;
use shmproc::{CommitError, Connection, TryRecvError, TrySendError};

const ZERO: Duration = Duration::ZERO;

/// The variant of an error result ("Ok" for success), to compare the
/// error enums of the many forms with one expectation.
fn kind<T, E: Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => {
            let s = format!("{e:?}");
            s.split([' ', '(', '{']).next().unwrap_or_default().to_string()
        }
    }
}

// ---- ByteQueue ----

const RING: usize = 512;
const MAX: usize = 120;

/// The most ring bytes a frame takes: header, alignment padding (payloads
/// of 64 bytes or more start 64-aligned), payload rounded up to 8.
fn size(len: usize) -> usize {
    (if len < 64 { 8 } else { 64 }) + len.div_ceil(8) * 8
}

#[derive(Debug, Clone, Copy)]
enum BOp {
    TrySend,
    LoanCommit,
    LoanDrop,
    TryRecvInto,
    RecvLoanRelease,
    RecvLoanDrop,
    /// `send_timeout(0)` or `send_loan_timeout(0)` then commit.
    SendZero,
    /// `recv_timeout(0)`, `recv_timeout_into(0)` or `recv_loan_timeout(0)` then release.
    RecvZero,
    /// `send` / `send_loan`, only when the model says it cannot block.
    Send,
    /// `recv` / `recv_into` / `recv_loan`, only when it cannot block.
    Recv,
    Poll,
    /// A write loan taken, the ring closed, then the loan committed.
    LoanAcrossClose,
    /// A read loan taken, the ring closed, then the loan released.
    ReadLoanAcrossClose,
    NewProducer,
    NewConsumer,
    Close,
}

fn b_op() -> impl Strategy<Value = BOp> {
    use BOp::*;
    prop_oneof![
        6 => Just(TrySend), 4 => Just(LoanCommit), 2 => Just(LoanDrop),
        5 => Just(TryRecvInto), 4 => Just(RecvLoanRelease), 2 => Just(RecvLoanDrop),
        4 => Just(SendZero), 4 => Just(RecvZero), 3 => Just(Send), 3 => Just(Recv), 2 => Just(Poll),
        2 => Just(NewProducer), 2 => Just(NewConsumer),
        1 => Just(LoanAcrossClose), 1 => Just(ReadLoanAcrossClose), 1 => Just(Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The byte ring behaves like a VecDeque of frames: FIFO, frames
    /// intact, nothing lost or duplicated; a refused send is `Full` (or a
    /// zero timeout `TimedOut`) only when the ring really has no room for
    /// it; after `close`, sends and loans are refused and receives drain
    /// then say `Closed`; every payload of 64 bytes or more read in place
    /// is 64-aligned.
    #[test]
    fn byte_queue_matches_a_vecdeque_model(ops in proptest::collection::vec((b_op(), 0usize..=MAX + 4, 0u8..3), 0..300)) {
        let q = ByteQueue::new(RING as u64, MAX as u64).unwrap();
        let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut closed = false;
        let mut buf = b"stale".to_vec();
        for (i, (op, len, form)) in ops.into_iter().enumerate() {
            let frame: Vec<u8> = (0..len).map(|j| (i * 13 + j) as u8).collect();
            // Full means no room: queued frames, at most one pending wrap
            // gap (< one max frame) plus this frame and its own wrap gap
            // (< the frame) exceed the ring.
            let used: usize = model.iter().map(|f| size(f.len())).sum();
            let must_fit = used + size(MAX) + 2 * size(len) <= RING;
            // What a send must answer, "Full" standing for "Full or Ok".
            let send_want = if len > MAX { "TooLarge" } else if closed { "Closed" } else if must_fit { "Ok" } else { "Full" };
            let recv_want = if !model.is_empty() { "Ok" } else if closed { "Closed" } else { "Empty" };
            let check_send = |got: String, full: &str| -> Result<bool, TestCaseError> {
                if send_want == "Full" {
                    prop_assert!(got == "Ok" || got == full, "a send with {} bytes used gave {}", used, got);
                } else {
                    prop_assert_eq!(got.as_str(), send_want);
                }
                Ok(got == "Ok")
            };
            match op {
                BOp::TrySend => {
                    if check_send(kind(&tx.try_send(&frame)), "Full")? { model.push_back(frame); }
                }
                BOp::LoanCommit | BOp::LoanDrop => {
                    let r = tx.try_send_loan(len);
                    if check_send(kind(&r), "Full")? {
                        let mut loan = r.unwrap();
                        prop_assert_eq!(loan.len(), len);
                        loan.write_at(0, &frame);
                        if matches!(op, BOp::LoanCommit) {
                            prop_assert_eq!(loan.commit(), Ok(()));
                            model.push_back(frame);
                        }
                    }
                }
                BOp::SendZero => {
                    let ok = if form == 0 {
                        check_send(kind(&tx.send_timeout(&frame, ZERO)), "TimedOut")?
                    } else {
                        let r = tx.send_loan_timeout(len, ZERO);
                        let ok = check_send(kind(&r), "TimedOut")?;
                        if ok {
                            let mut loan = r.unwrap();
                            loan.write_at(0, &frame);
                            prop_assert_eq!(loan.commit(), Ok(()));
                        }
                        ok
                    };
                    if ok { model.push_back(frame); }
                }
                BOp::Send if send_want != "Full" => {
                    let got = if form == 0 {
                        kind(&tx.send(&frame))
                    } else {
                        match tx.send_loan(len) {
                            Ok(mut loan) => { loan.write_at(0, &frame); prop_assert_eq!(loan.commit(), Ok(())); "Ok".into() }
                            Err(e) => kind::<(), _>(&Err(e)),
                        }
                    };
                    prop_assert_eq!(got.as_str(), send_want);
                    if got == "Ok" { model.push_back(frame); }
                }
                BOp::Send => {}
                BOp::TryRecvInto => {
                    let before = buf.clone();
                    let r = rx.try_recv_into(&mut buf);
                    prop_assert_eq!(kind(&r), recv_want);
                    match model.pop_front() {
                        Some(f) => prop_assert_eq!(&buf, &f),
                        None => prop_assert_eq!(&buf, &before, "a receive that got nothing left the buffer"),
                    }
                }
                BOp::RecvLoanRelease | BOp::RecvLoanDrop => {
                    let r = rx.try_recv_loan();
                    prop_assert_eq!(kind(&r), recv_want);
                    if let Ok(loan) = r {
                        prop_assert_eq!(Some(&loan.to_vec()), model.front());
                        if loan.len() >= shmproc::queue::ALIGN_FROM {
                            prop_assert_eq!(loan.as_ptr() as usize % 64, 0);
                        }
                        if matches!(op, BOp::RecvLoanRelease) {
                            loan.release();
                            model.pop_front();
                        }
                    }
                }
                BOp::RecvZero | BOp::Recv => {
                    if matches!(op, BOp::Recv) && recv_want == "Empty" {
                        continue; // it would block
                    }
                    let want = if recv_want == "Empty" { "TimedOut" } else { recv_want };
                    let zero = matches!(op, BOp::RecvZero);
                    let got = match (form, zero) {
                        (0, true) => { let r = rx.recv_timeout(ZERO); if let Ok(f) = &r { prop_assert_eq!(Some(f), model.front()); } kind(&r) }
                        (0, false) => { let r = rx.recv(); if let Ok(f) = &r { prop_assert_eq!(Some(f), model.front()); } kind(&r) }
                        (1, _) => {
                            let before = buf.clone();
                            let k = if zero { kind(&rx.recv_timeout_into(&mut buf, ZERO)) } else { kind(&rx.recv_into(&mut buf)) };
                            if k == "Ok" { prop_assert_eq!(Some(&buf), model.front()); } else { prop_assert_eq!(&buf, &before); }
                            k
                        }
                        _ => {
                            let r = if zero { rx.recv_loan_timeout(ZERO).map_err(|e| format!("{e:?}")) } else { rx.recv_loan().map_err(|e| format!("{e:?}")) };
                            match r {
                                Ok(loan) => { prop_assert_eq!(Some(&loan.to_vec()), model.front()); loan.release(); "Ok".to_string() }
                                Err(e) => e,
                            }
                        }
                    };
                    prop_assert_eq!(got.as_str(), want);
                    if got == "Ok" { model.pop_front(); }
                }
                BOp::Poll => prop_assert_eq!(rx.poll(ZERO), !model.is_empty()),
                BOp::LoanAcrossClose => {
                    let r = tx.try_send_loan(len);
                    if check_send(kind(&r), "Full")? {
                        let mut loan = r.unwrap();
                        loan.write_at(0, &frame);
                        q.close();
                        prop_assert_eq!(loan.commit(), Err(CommitError::Closed), "a loan committed after close sends nothing");
                    } else {
                        drop(r);
                        q.close();
                    }
                    closed = true;
                }
                BOp::ReadLoanAcrossClose => {
                    let r = rx.try_recv_loan();
                    prop_assert_eq!(kind(&r), recv_want);
                    q.close();
                    if let Ok(loan) = r {
                        prop_assert_eq!(Some(&loan.to_vec()), model.front());
                        loan.release();
                        model.pop_front();
                    }
                    closed = true;
                }
                BOp::NewProducer => {
                    drop(tx);
                    tx = q.producer().unwrap();
                }
                BOp::NewConsumer => {
                    drop(rx);
                    rx = q.consumer().unwrap();
                }
                BOp::Close => {
                    q.close();
                    closed = true;
                }
            }
        }
        // Whatever is left drains in order, then the ring says why it is empty.
        while let Some(f) = model.pop_front() {
            prop_assert_eq!(rx.try_recv(), Ok(f));
        }
        prop_assert_eq!(rx.try_recv(), Err(if closed { TryRecvError::Closed } else { TryRecvError::Empty }));
        if !closed {
            prop_assert_eq!(tx.try_send(b"last"), Ok(()));
            prop_assert_eq!(rx.try_recv(), Ok(b"last".to_vec()));
        } else {
            prop_assert_eq!(tx.try_send(b"last"), Err(TrySendError::Closed));
        }
    }
}

// ---- Connection: bytes, plain data, loans ----

const PIPE_MAX: usize = 200;

#[derive(Debug, Clone, Copy)]
enum POp {
    /// End `e` sends `len` bytes: try_send_bytes, send_bytes_timeout(0),
    /// send_bytes (when it cannot block), try_send_loan + commit, or
    /// send_loan_timeout(0) dropped (nothing sent).
    SendBytes(usize, usize, u8),
    /// End `e` sends a u32 (`try_send`, `send_timeout(0)`).
    SendU32(usize, u32, bool),
    /// End `e` receives bytes: try_recv_bytes, try_recv_bytes_into,
    /// recv_bytes_timeout_into(0), recv_bytes_into (when it cannot
    /// block), try_recv_loan + release, recv_loan_timeout(0) dropped.
    RecvBytes(usize, u8),
    /// End `e` receives a u32 (`try_recv`, `recv_timeout(0)`).
    RecvU32(usize, bool),
    Poll(usize),
    Close(usize),
    Shutdown(usize),
}

fn p_op() -> impl Strategy<Value = POp> {
    prop_oneof![
        10 => (0usize..2, 0usize..=PIPE_MAX + 3, 0u8..5).prop_map(|(e, l, f)| POp::SendBytes(e, l, f)),
        4 => (0usize..2, any::<u32>(), any::<bool>()).prop_map(|(e, v, t)| POp::SendU32(e, v, t)),
        10 => (0usize..2, 0u8..6).prop_map(|(e, f)| POp::RecvBytes(e, f)),
        4 => (0usize..2, any::<bool>()).prop_map(|(e, t)| POp::RecvU32(e, t)),
        3 => (0usize..2).prop_map(POp::Poll),
        1 => (0usize..2).prop_map(POp::Close),
        1 => (0usize..2).prop_map(POp::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A duplex pipe's bytes behave like two VecDeques of messages, by
    /// every form of send and receive. After an end's `close`, its own
    /// calls are `Closed`; the other end drains, then gets
    /// `Disconnected` (and `poll` says true: the next receive fails at
    /// once). After `shutdown` (by either end), every send is `Closed`
    /// and receives drain, then `Disconnected`.
    #[test]
    fn pipe_bytes_match_two_vecdeques(ops in proptest::collection::vec(p_op(), 0..150)) {
        let (a, b) = shmproc::pipe_with(true, 1 << 16, PIPE_MAX as u64).unwrap();
        let mut ends: [Connection; 2] = [a, b];
        let mut inbox: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
        let mut closed = [false; 2];
        let mut shut = false;
        let mut buf = b"stale".to_vec();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                POp::SendBytes(e, len, form) => {
                    let msg: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
                    let want = if closed[e] { "Closed" } else if len > PIPE_MAX { "TooLarge" } else if shut { "Closed" } else if closed[1 - e] { "Disconnected" } else { "Ok" };
                    let c = &mut ends[e];
                    let (got, sent) = match form {
                        0 => (kind(&c.try_send_bytes(&msg)), true),
                        1 => (kind(&c.send_bytes_timeout(&msg, ZERO)), true),
                        2 => (kind(&c.send_bytes(&msg)), true),
                        3 => match c.try_send_loan(len) {
                            Ok(mut loan) => { loan.write_at(0, &msg); prop_assert_eq!(loan.commit(), Ok(())); ("Ok".into(), true) }
                            Err(e) => (kind::<(), _>(&Err(e)), false),
                        },
                        _ => (kind(&c.send_loan_timeout(len, ZERO)), false),
                    };
                    prop_assert_eq!(got.as_str(), want, "send form {}", form);
                    if got == "Ok" && sent { inbox[1 - e].push_back(msg); }
                }
                POp::SendU32(e, v, timed) => {
                    let want = if closed[e] || shut { "Closed" } else if closed[1 - e] { "Disconnected" } else { "Ok" };
                    let r = if timed { kind(&ends[e].send_timeout(&v, ZERO)) } else { kind(&ends[e].try_send(&v)) };
                    prop_assert_eq!(r.as_str(), want);
                    if r == "Ok" { inbox[1 - e].push_back(v.to_ne_bytes().to_vec()); }
                }
                POp::RecvBytes(e, form) => {
                    let front = inbox[e].front().cloned();
                    let want = if closed[e] { "Closed" } else if front.is_some() { "Ok" } else if shut || closed[1 - e] { "Disconnected" } else { "Empty" };
                    if form == 3 && want == "Empty" {
                        continue; // the blocking form would block
                    }
                    let c = &mut ends[e];
                    let before = buf.clone();
                    let (got, taken) = match form {
                        0 => {
                            let r = c.try_recv_bytes();
                            if let Ok(m) = &r { prop_assert_eq!(Some(m), front.as_ref()); }
                            (kind(&r), true)
                        }
                        1 => { let r = c.try_recv_bytes_into(&mut buf); (kind(&r), true) }
                        2 => { let r = c.recv_bytes_timeout_into(&mut buf, ZERO); (kind(&r).replace("TimedOut", "Empty"), true) }
                        3 => { let r = c.recv_bytes_into(&mut buf); (kind(&r), true) }
                        4 => match c.try_recv_loan() {
                            Ok(loan) => { prop_assert_eq!(Some(&loan.to_vec()), front.as_ref()); loan.release(); ("Ok".into(), true) }
                            Err(e) => (kind::<(), _>(&Err(e)), true),
                        },
                        _ => match c.recv_loan_timeout(ZERO) {
                            Ok(loan) => { prop_assert_eq!(Some(&loan.to_vec()), front.as_ref()); ("Ok".into(), false) }
                            Err(e) => (kind::<(), _>(&Err(e)).replace("TimedOut", "Empty"), false),
                        },
                    };
                    prop_assert_eq!(got.as_str(), want, "receive form {}", form);
                    if (1..=3).contains(&form) {
                        if got == "Ok" {
                            prop_assert_eq!(Some(&buf), front.as_ref());
                        } else {
                            prop_assert_eq!(&buf, &before, "a receive that got nothing left the buffer");
                        }
                    }
                    if got == "Ok" && taken { inbox[e].pop_front(); }
                }
                POp::RecvU32(e, timed) => {
                    let front = inbox[e].front().cloned();
                    let (got, v) = if timed {
                        let r = ends[e].recv_timeout::<u32>(ZERO);
                        (kind(&r).replace("TimedOut", "Empty"), r.ok())
                    } else {
                        let r = ends[e].try_recv::<u32>();
                        (kind(&r), r.ok())
                    };
                    let want = match &front {
                        _ if closed[e] => "Closed",
                        Some(m) if m.len() == 4 => "Ok",
                        Some(_) => "WrongSize",
                        None if shut || closed[1 - e] => "Disconnected",
                        None => "Empty",
                    };
                    prop_assert_eq!(got.as_str(), want);
                    if let (Some(v), Some(m)) = (v, &front) { prop_assert_eq!(&v.to_ne_bytes()[..], &m[..]); }
                    if front.is_some() && !closed[e] { inbox[e].pop_front(); } // a wrong size is consumed too
                }
                POp::Poll(e) => {
                    let r = ends[e].poll(ZERO);
                    if closed[e] {
                        prop_assert_eq!(kind(&r), "Closed");
                    } else {
                        prop_assert_eq!(r, Ok(!inbox[e].is_empty() || shut || closed[1 - e]));
                    }
                }
                POp::Close(e) => {
                    ends[e].close();
                    closed[e] = true;
                }
                POp::Shutdown(e) => {
                    ends[e].shutdown();
                    closed[e] = true;
                    shut = true;
                }
            }
        }
    }
}
