//! Model tests (proptest, against a simple in-process model) of what the
//! older models left out: `JoinableQueue` counts (put / get / task_done /
//! join_timeout, `unfinished_tasks` exact, through two handles, with
//! `close` and `close_all`), `SimpleQueue`, `Connection` values (`Handoff`
//! values of several types, `TooLarge`, close semantics both ways), and
//! the sync types' observable state (`Semaphore` and `BoundedSemaphore`
//! value, `Event::is_set`, `RLock` level, `Barrier` parties and broken
//! state).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use proptest::prelude::*;
use shmproc::{
    Barrier, BarrierError, BoundedSemaphore, Event, Handoff, JoinableQueue, LockError, PipeTryRecvValueError,
    PipeTrySendError, PutTimeoutError, RLock, Semaphore, SimpleQueue, TryPutError,
};

const ZERO: Duration = Duration::ZERO;

// ---- JoinableQueue and SimpleQueue ----

#[derive(Debug, Clone)]
enum QOp {
    /// Put through handle h, by form: 0 put_nowait, 1 put_timeout(0),
    /// 2 put_ref_nowait, 3 put_ref_timeout(0), 4 put, 5 put_ref (the
    /// blocking ones only when the model says they cannot block).
    Put(usize, u32, u8),
    /// Get through handle h, by form: 0 get_nowait, 1 get_timeout(0),
    /// 2 get_into_nowait, 3 get_into_timeout(0), 4 get, 5 get_into (the
    /// blocking ones only when they cannot block).
    Get(usize, u8),
    TaskDone(usize),
    /// join_timeout(0) through handle h.
    Join(usize),
    /// The batch forms of a bounded plain-data queue (`as_mpmc()`):
    /// push_slice of the values, or pop_into a buffer of that many.
    PushSlice(usize, Vec<u32>),
    PopInto(usize, usize),
    /// close() of handle h (that handle only).
    Close(usize),
    /// close_all(): rare.
    CloseAll,
}

fn q_op() -> impl Strategy<Value = QOp> {
    prop_oneof![
        10 => (0usize..2, any::<u32>(), 0u8..6).prop_map(|(h, v, t)| QOp::Put(h, v, t)),
        8 => (0usize..2, 0u8..6).prop_map(|(h, t)| QOp::Get(h, t)),
        6 => (0usize..2).prop_map(QOp::TaskDone),
        3 => (0usize..2).prop_map(QOp::Join),
        2 => (0usize..2, proptest::collection::vec(any::<u32>(), 0..5)).prop_map(|(h, v)| QOp::PushSlice(h, v)),
        2 => (0usize..2, 0usize..5).prop_map(|(h, k)| QOp::PopInto(h, k)),
        1 => (0usize..2).prop_map(QOp::Close),
        1 => Just(QOp::CloseAll),
    ]
}

/// The item type under test, made from a model value (plain data goes
/// through the MPMC slots, anything else is encoded into frames).
trait Item: Handoff + Clone + PartialEq + Debug {
    fn of(v: u32) -> Self;
    /// `as_mpmc().push_slice(vs)` where there is one (plain data, bounded).
    fn push_slice(_q: &JoinableQueue<Self>, _vs: &[u32]) -> Option<usize> {
        None
    }
    /// `as_mpmc().pop_into` a buffer of `k` (as `push_slice`).
    fn pop_into(_q: &JoinableQueue<Self>, _k: usize) -> Option<Vec<u32>> {
        None
    }
}

impl Item for u32 {
    fn of(v: u32) -> Self {
        v
    }
    fn push_slice(q: &JoinableQueue<Self>, vs: &[u32]) -> Option<usize> {
        (q.maxsize() > 0).then(|| q.as_mpmc().push_slice(vs))
    }
    fn pop_into(q: &JoinableQueue<Self>, k: usize) -> Option<Vec<u32>> {
        (q.maxsize() > 0).then(|| {
            let mut out = vec![0; k];
            let n = q.as_mpmc().pop_into(&mut out);
            out.truncate(n);
            out
        })
    }
}

impl Item for (u64, String) {
    fn of(v: u32) -> Self {
        (u64::from(v) << 7, "j".repeat((v % 300) as usize))
    }
}

/// What a queue handle must answer, by the model: the queued items, the
/// unfinished count, each handle's own `close`, and `close_all`.
struct QModel {
    items: VecDeque<u32>,
    unfinished: u64,
    cap: usize,
    handle_closed: [bool; 2],
    all_closed: bool,
}

impl QModel {
    fn new(cap: u64) -> Self {
        QModel {
            items: VecDeque::new(),
            unfinished: 0,
            cap: cap as usize,
            handle_closed: [false; 2],
            all_closed: false,
        }
    }
    fn full(&self) -> bool {
        self.cap != 0 && self.items.len() >= self.cap
    }
}

/// The variant of a result ("Ok" for success).
fn kind<T, E: Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => format!("{e:?}").split([' ', '(', '{']).next().unwrap_or_default().to_string(),
    }
}

macro_rules! queue_step {
    ($qs:expr, $m:expr, $op:expr, $joinable:expr) => {{
        let (qs, m) = (&$qs, &mut $m);
        match $op {
            QOp::Put(h, v, form) => {
                let item = T::of(v);
                let closed = m.handle_closed[h] || m.all_closed;
                let want = if closed {
                    "Closed"
                } else if !m.full() {
                    "Ok"
                } else if form % 2 == 0 {
                    "Full"
                } else {
                    "TimedOut"
                };
                let got = match form {
                    0 => {
                        let r = qs[h].put_nowait(item.clone());
                        if let Err(TryPutError::Closed(back) | TryPutError::Full(back)) = &r {
                            prop_assert_eq!(back, &item, "a refused put hands the item back");
                        }
                        kind(&r)
                    }
                    1 => {
                        let r = qs[h].put_timeout(item.clone(), ZERO);
                        if let Err(PutTimeoutError::Closed(back) | PutTimeoutError::TimedOut(back)) = &r {
                            prop_assert_eq!(back, &item, "a refused put hands the item back");
                        }
                        kind(&r)
                    }
                    2 => kind(&qs[h].put_ref_nowait(&item)),
                    3 => kind(&qs[h].put_ref_timeout(&item, ZERO)),
                    _ if want == "Full" || want == "TimedOut" => continue, // it would block
                    4 => kind(&qs[h].put(item.clone())),
                    _ => kind(&qs[h].put_ref(&item)),
                };
                prop_assert_eq!(
                    got.as_str(),
                    if want == "Full" && form >= 4 { "TimedOut" } else { want },
                    "put form {}",
                    form
                );
                if got == "Ok" {
                    m.items.push_back(v);
                    m.unfinished += 1;
                }
            }
            QOp::Get(h, form) => {
                let front = if m.handle_closed[h] { None } else { m.items.front().copied() };
                let closed = m.handle_closed[h] || m.all_closed;
                let want = if front.is_some() {
                    "Ok"
                } else if closed {
                    "Closed"
                } else if form % 2 == 0 {
                    "Empty"
                } else {
                    "TimedOut"
                };
                let mut out = T::of(7);
                let got = match form {
                    0 => {
                        let r = qs[h].get_nowait();
                        if let Ok(x) = r.clone() {
                            out = x;
                        }
                        kind(&r)
                    }
                    1 => {
                        let r = qs[h].get_timeout(ZERO);
                        if let Ok(x) = r.clone() {
                            out = x;
                        }
                        kind(&r)
                    }
                    2 => kind(&qs[h].get_into_nowait(&mut out)),
                    3 => kind(&qs[h].get_into_timeout(&mut out, ZERO)),
                    _ if front.is_none() && !closed => continue, // it would block
                    4 => {
                        let r = qs[h].get();
                        if let Ok(x) = r.clone() {
                            out = x;
                        }
                        kind(&r)
                    }
                    _ => kind(&qs[h].get_into(&mut out)),
                };
                prop_assert_eq!(got.as_str(), want, "get form {}", form);
                match front {
                    Some(v) => {
                        prop_assert_eq!(&out, &T::of(v));
                        m.items.pop_front();
                    }
                    None => prop_assert_eq!(&out, &T::of(7), "a get that got nothing leaves the destination"),
                }
            }
            QOp::CloseAll => {
                qs[0].close_all();
                m.all_closed = true;
            }
            QOp::Close(h) => {
                qs[h].close();
                m.handle_closed[h] = true;
            }
            _ if !$joinable => {}
            _ => unreachable!(),
        }
        for q in qs.iter() {
            prop_assert_eq!(q.empty(), m.items.is_empty());
        }
    }};
}

fn joinable_matches_the_model<T: Item>(cap: u64, ops: Vec<QOp>) -> Result<(), TestCaseError> {
    let q = JoinableQueue::<T>::new(cap).unwrap();
    let qs = [q.clone(), q];
    let mut m = QModel::new(cap);
    for op in ops {
        match op {
            QOp::TaskDone(h) => {
                let r = qs[h].task_done();
                prop_assert_eq!(r.is_ok(), m.unfinished > 0, "task_done with {} unfinished: {:?}", m.unfinished, r);
                m.unfinished = m.unfinished.saturating_sub(1);
            }
            QOp::Join(h) => prop_assert_eq!(qs[h].join_timeout(ZERO), m.unfinished == 0),
            // The underlying ring knows nothing of a handle's own close.
            QOp::PushSlice(h, vs) if !m.handle_closed[h] => {
                if let Some(n) = T::push_slice(&qs[h], &vs) {
                    let room = if m.all_closed { 0 } else { m.cap - m.items.len() };
                    prop_assert_eq!(n, vs.len().min(room));
                    m.items.extend(&vs[..n]);
                    m.unfinished += n as u64; // each item of a batch is a task
                }
            }
            QOp::PopInto(h, k) if !m.handle_closed[h] => {
                if let Some(got) = T::pop_into(&qs[h], k) {
                    let want: Vec<u32> = m.items.drain(..k.min(m.items.len())).collect();
                    prop_assert_eq!(got, want);
                }
            }
            QOp::PushSlice(..) | QOp::PopInto(..) => {}
            op => queue_step!(qs, m, op, true),
        }
        for q in &qs {
            prop_assert_eq!(q.qsize(), m.items.len());
            prop_assert_eq!(q.unfinished_tasks(), m.unfinished);
            prop_assert_eq!(q.full(), m.full());
            prop_assert_eq!(q.maxsize(), cap as usize);
        }
    }
    // Drain, finish everything: join returns.
    let mut open = qs[1].clone();
    if m.all_closed {
        while let Ok(v) = open.get_nowait() {
            prop_assert_eq!(Some(v), m.items.pop_front().map(T::of));
        }
        open = qs[0].clone();
    } else {
        for v in m.items.drain(..) {
            prop_assert_eq!(open.get_nowait(), Ok(T::of(v)));
        }
    }
    prop_assert!(m.items.is_empty());
    for _ in 0..m.unfinished {
        prop_assert!(!open.join_timeout(ZERO));
        open.task_done().unwrap();
    }
    prop_assert_eq!(open.unfinished_tasks(), 0);
    prop_assert!(open.join_timeout(ZERO));
    prop_assert!(open.task_done().is_err(), "task_done past the count");
    Ok(())
}

fn simple_matches_the_model<T: Item>(cap: u64, ops: Vec<QOp>) -> Result<(), TestCaseError> {
    let q = SimpleQueue::<T>::new(cap).unwrap();
    let qs = [q.clone(), q];
    let mut m = QModel::new(cap);
    for op in ops {
        queue_step!(qs, m, op, false);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A bounded or unbounded `JoinableQueue` of plain data counts like
    /// Python's: `unfinished_tasks` is puts minus `task_done`s, exact at
    /// every step and the same through every handle; `task_done` past it
    /// is an error; `join_timeout(0)` is true exactly when it is 0; qsize,
    /// empty and full exact; `close` affects only its handle, `close_all`
    /// every handle (gets drain, then `Closed`).
    #[test]
    fn joinable_queue_counts_match_a_model(cap in prop_oneof![Just(0u64), 1u64..6], ops in proptest::collection::vec(q_op(), 0..120)) {
        joinable_matches_the_model::<u32>(cap, ops)?;
    }

    /// The same with encoded items (frames, some past the inline 240 bytes).
    #[test]
    fn joinable_queue_of_encoded_items_counts_match_a_model(cap in prop_oneof![Just(0u64), 1u64..6], ops in proptest::collection::vec(q_op(), 0..120)) {
        joinable_matches_the_model::<(u64, String)>(cap, ops)?;
    }

    /// `SimpleQueue` (plain and encoded items, bounded and unbounded)
    /// behaves like a VecDeque with the same close semantics.
    #[test]
    fn simple_queue_matches_a_model(cap in prop_oneof![Just(0u64), 1u64..6], ops in proptest::collection::vec(q_op(), 0..120)) {
        let ops2 = ops.clone();
        simple_matches_the_model::<u32>(cap, ops)?;
        simple_matches_the_model::<(u64, String)>(cap, ops2)?;
    }
}

// ---- Connection values ----

/// A value of one of several `Handoff` types.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Bytes(Vec<u8>),
    Pair((u64, String)),
    Opt(Option<Vec<u16>>),
    Num(u64),
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        ".{0,40}".prop_map(Val::Str),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Val::Bytes),
        (any::<u64>(), "[a-z]{0,30}").prop_map(Val::Pair),
        proptest::option::of(proptest::collection::vec(any::<u16>(), 0..20)).prop_map(Val::Opt),
        any::<u64>().prop_map(Val::Num),
    ]
}

impl Val {
    fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        match self {
            Val::Str(v) => v.encode(&mut out),
            Val::Bytes(v) => v.encode(&mut out),
            Val::Pair(v) => v.encode(&mut out),
            Val::Opt(v) => v.encode(&mut out),
            Val::Num(v) => v.encode(&mut out),
        }
        out.len()
    }
    fn send(&self, c: &mut shmproc::Connection) -> Result<(), PipeTrySendError> {
        match self {
            Val::Str(v) => c.try_send_value(v),
            Val::Bytes(v) => c.try_send_value(v),
            Val::Pair(v) => c.try_send_value(v),
            Val::Opt(v) => c.try_send_value(v),
            Val::Num(v) => c.try_send_value(v),
        }
    }
    /// Receives a value of this one's type.
    fn recv_like(&self, c: &mut shmproc::Connection) -> Result<Val, PipeTryRecvValueError> {
        Ok(match self {
            Val::Str(_) => Val::Str(c.try_recv_value()?),
            Val::Bytes(_) => Val::Bytes(c.try_recv_value()?),
            Val::Pair(_) => Val::Pair(c.try_recv_value()?),
            Val::Opt(_) => Val::Opt(c.try_recv_value()?),
            Val::Num(_) => Val::Num(c.try_recv_value()?),
        })
    }
}

#[derive(Debug, Clone)]
enum PipeOp {
    /// End `e` sends the value (to the other end).
    Send(usize, Val),
    /// End `e` receives (a value of the type at the front of its inbox).
    Recv(usize),
    /// End `e` closes (rare).
    Close(usize),
}

fn pipe_op() -> impl Strategy<Value = PipeOp> {
    prop_oneof![
        10 => (0usize..2, val()).prop_map(|(e, v)| PipeOp::Send(e, v)),
        10 => (0usize..2).prop_map(PipeOp::Recv),
        1 => (0usize..2).prop_map(PipeOp::Close),
    ]
}

/// Frames up to this size; the ring holds far more than a case sends.
const MAX_FRAME: usize = 512;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A duplex pipe carries values of several `Handoff` types like two
    /// VecDeques: FIFO per direction, values intact; a value whose encoding
    /// exceeds the frame limit is `TooLarge` (checked before the peer's
    /// liveness) and sends nothing; after an
    /// end's `close`, its own sends and receives are `Closed`, and the
    /// other end drains what was sent to it, then gets `Disconnected`, and
    /// its sends get `Disconnected`.
    #[test]
    fn pipe_values_match_two_vecdeques(ops in proptest::collection::vec(pipe_op(), 0..120)) {
        let (a, b) = shmproc::pipe_with(true, 1 << 16, MAX_FRAME as u64).unwrap();
        let mut ends = [a, b];
        // inbox[e]: values sent to end e, not yet received.
        let mut inbox: [VecDeque<Val>; 2] = [VecDeque::new(), VecDeque::new()];
        let mut closed = [false; 2];
        for op in ops {
            match op {
                PipeOp::Send(e, v) => {
                    let r = v.send(&mut ends[e]);
                    let len = v.encoded_len();
                    if closed[e] {
                        prop_assert_eq!(r, Err(PipeTrySendError::Closed));
                    } else if len > MAX_FRAME {
                        // Refused for its size first: nothing is sent.
                        prop_assert_eq!(r, Err(PipeTrySendError::TooLarge { len, max: MAX_FRAME }));
                    } else if closed[1 - e] {
                        prop_assert_eq!(r, Err(PipeTrySendError::Disconnected));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        inbox[1 - e].push_back(v);
                    }
                }
                PipeOp::Recv(e) => {
                    // The type asked for: the front's, or any when empty.
                    let like = inbox[e].front().cloned().unwrap_or(Val::Num(0));
                    let r = like.recv_like(&mut ends[e]);
                    if closed[e] {
                        prop_assert_eq!(r, Err(PipeTryRecvValueError::Closed));
                    } else if let Some(v) = inbox[e].pop_front() {
                        prop_assert_eq!(r, Ok(v));
                    } else if closed[1 - e] {
                        prop_assert_eq!(r, Err(PipeTryRecvValueError::Disconnected));
                    } else {
                        prop_assert_eq!(r, Err(PipeTryRecvValueError::Empty));
                    }
                }
                PipeOp::Close(e) => {
                    ends[e].close();
                    closed[e] = true;
                }
            }
        }
    }
}

// ---- the sync types' observable state ----

#[derive(Debug, Clone)]
enum SyncOp {
    /// Semaphore: try_acquire, acquire_timeout(0), release_n(n).
    SemTry,
    SemTimed,
    SemRelease(u32),
    /// Event: set, clear.
    Set,
    Clear,
    /// RLock: take one more level, release the level at index i (modulo),
    /// try from another thread.
    RLock,
    RUnlock(usize),
    RLockOther,
    /// Barrier: wait_timeout(0), abort, reset.
    BarrierWait,
    BarrierAbort,
    BarrierReset,
}

fn sync_op() -> impl Strategy<Value = SyncOp> {
    prop_oneof![
        Just(SyncOp::SemTry),
        Just(SyncOp::SemTimed),
        (0u32..4).prop_map(SyncOp::SemRelease),
        Just(SyncOp::Set),
        Just(SyncOp::Clear),
        Just(SyncOp::RLock),
        any::<usize>().prop_map(SyncOp::RUnlock),
        Just(SyncOp::RLockOther),
        Just(SyncOp::BarrierWait),
        Just(SyncOp::BarrierAbort),
        Just(SyncOp::BarrierReset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// One thread's operations on a `Semaphore`, a `BoundedSemaphore` (the
    /// same operations), an `Event`, an `RLock` and a `Barrier` give the
    /// state a model says: semaphore values exact, a release past the bound
    /// refused with nothing added; `is_set` and `wait_timeout(0)` agree
    /// with the last set/clear; the RLock's level is the number of levels
    /// held (released in any order), and another thread can take it
    /// exactly when that is 0; a barrier of `parties` keeps its parties,
    /// passes a lone waiter when it has one party, else breaks on a timed
    /// out wait until reset, and `abort` breaks it.
    #[test]
    fn sync_state_matches_a_model(
        sem0 in 0u32..4,
        parties in 1u32..4,
        ops in proptest::collection::vec(sync_op(), 0..150),
    ) {
        let sem = Semaphore::new(sem0).unwrap();
        let bsem = BoundedSemaphore::new(sem0 + 2).unwrap();
        let ev = Event::new().unwrap();
        let r = RLock::new().unwrap();
        let bar = Barrier::new(parties).unwrap();
        // Model state.
        let (mut value, mut bvalue, bound) = (sem0, sem0 + 2, sem0 + 2);
        let mut set = false;
        let mut guards = Vec::new();
        let mut broken = false;
        for op in ops {
            match op {
                SyncOp::SemTry | SyncOp::SemTimed => {
                    let timed = matches!(op, SyncOp::SemTimed);
                    let (got, bgot) = if timed {
                        (sem.acquire_timeout(ZERO), bsem.acquire_timeout(ZERO))
                    } else {
                        (sem.try_acquire(), bsem.try_acquire())
                    };
                    prop_assert_eq!(got, value > 0);
                    prop_assert_eq!(bgot, bvalue > 0);
                    value -= u32::from(got);
                    bvalue -= u32::from(bgot);
                }
                SyncOp::SemRelease(n) => {
                    prop_assert!(sem.release_n(n).is_ok());
                    value += n;
                    let br = bsem.release_n(n);
                    if bvalue + n > bound {
                        prop_assert_eq!(br.map_err(|e| e.bound), Err(bound));
                    } else {
                        prop_assert!(br.is_ok());
                        bvalue += n;
                    }
                }
                SyncOp::Set => {
                    ev.set();
                    set = true;
                }
                SyncOp::Clear => {
                    ev.clear();
                    set = false;
                }
                SyncOp::RLock => guards.push(r.lock_timeout(ZERO).unwrap()),
                SyncOp::RUnlock(i) => {
                    if !guards.is_empty() {
                        let n = guards.len();
                        drop(guards.remove(i % n));
                    }
                }
                SyncOp::RLockOther => {
                    let r2 = r.clone();
                    let free = std::thread::spawn(move || match r2.try_lock() {
                        Ok(g) => {
                            let level = r2.level();
                            drop(g);
                            Ok(level)
                        }
                        Err(LockError::WouldBlock) => Err(()),
                        Err(e) => panic!("{e}"),
                    })
                    .join()
                    .unwrap();
                    prop_assert_eq!(free, if guards.is_empty() { Ok(1) } else { Err(()) });
                }
                SyncOp::BarrierWait => {
                    let w = bar.wait_timeout(ZERO);
                    if broken {
                        prop_assert_eq!(w, Err(BarrierError::Broken));
                    } else if parties == 1 {
                        prop_assert_eq!(w, Ok(0));
                    } else {
                        prop_assert_eq!(w, Err(BarrierError::TimedOut));
                        broken = true;
                    }
                }
                SyncOp::BarrierAbort => {
                    bar.abort();
                    broken = true;
                }
                SyncOp::BarrierReset => {
                    bar.reset();
                    broken = false;
                }
            }
            prop_assert_eq!(sem.get_value(), value);
            prop_assert_eq!(bsem.get_value(), bvalue);
            prop_assert_eq!(bsem.bound(), bound);
            prop_assert_eq!(ev.is_set(), set);
            prop_assert_eq!(ev.wait_timeout(ZERO), set);
            prop_assert_eq!(r.level(), guards.len() as u32);
            prop_assert_eq!(bar.parties(), parties);
            prop_assert_eq!(bar.is_broken(), broken);
            prop_assert_eq!(bar.n_waiting(), 0);
        }
        drop(guards);
        prop_assert_eq!(r.level(), 0);
        prop_assert!(r.release().is_err(), "released a level nobody holds");
    }
}
