//! The worker process: takes task frames from its own ring, runs each item
//! (recording in its slot that it started it), writes the results into its
//! result ring, and tells the pool.
//!
//! An idle worker sleeps in `recv` (the ring's futex wake protocol); a busy
//! one makes no system call per item: the slot record is one atomic store,
//! results are copied into the ring, and the pool is woken only if it
//! sleeps (`Ctl::bump`).

use std::sync::atomic::Ordering;

use super::frame::{self, Ctl, ResultFrame, END_OF_CHUNK};
use super::task::{self, Runner, Status};
use crate::RawSegment;
use crate::process::{Entry, Handoff, HandoffError};
use crate::queue::ByteQueue;

/// What a worker is given.
pub(crate) struct WorkerArg {
    pub(crate) ctl: RawSegment,
    pub(crate) tasks: ByteQueue,
    pub(crate) results: ByteQueue,
    pub(crate) slot: u32,
    /// The initializer's task id and encoded argument.
    pub(crate) init: Option<(String, Vec<u8>)>,
    /// Exit after this many chunks (0: never).
    pub(crate) max_tasks: u64,
}

impl Handoff for WorkerArg {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ctl.encode(out);
        self.tasks.encode(out);
        self.results.encode(out);
        (self.slot, self.init.clone(), self.max_tasks).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let ctl = RawSegment::decode(input)?;
        let tasks = ByteQueue::decode(input)?;
        let results = ByteQueue::decode(input)?;
        let (slot, init, max_tasks) = <(u32, Option<(String, Vec<u8>)>, u64)>::decode(input)?;
        Ok(WorkerArg { ctl, tasks, results, slot, init, max_tasks })
    }
}

/// The pool worker's entry (registered below, by hand: `Pool` refers to the
/// registration so that it is linked into every program that has a pool).
pub(crate) struct PoolWorker;

impl Entry for PoolWorker {
    const ID: &'static str = "shmproc::pool::worker";
    type Arg = WorkerArg;
    fn call(arg: WorkerArg) -> Result<(), String> {
        run(arg)
    }
}

extern "C" fn register_worker() {
    crate::process::__register::<PoolWorker>();
}

/// Registers the worker entry before `main` (as `entry!` does).
#[used]
#[unsafe(link_section = ".init_array.00500")]
pub(crate) static REGISTER_WORKER: extern "C" fn() = register_worker;

/// Runs `id` on an encoded argument, for the initializer.
fn run_init(id: &str, arg: &[u8]) -> Result<(), String> {
    let run = task::lookup(id.as_bytes()).ok_or_else(|| format!("initializer {id} is not registered in the worker"))?;
    let mut out = Vec::new();
    match run(arg, &mut out) {
        Status::Ok => Ok(()),
        _ => Err(format!("initializer {id} failed: {}", String::from_utf8_lossy(&out))),
    }
}

fn run(arg: WorkerArg) -> Result<(), String> {
    let ctl = Ctl::new(arg.ctl);
    let slot = arg.slot as usize;
    let (Some(started_word), Some(pid_word)) = (ctl.started(slot), ctl.pid(slot)) else {
        return Err(format!("worker slot {slot} is outside the control segment"));
    };
    pid_word.store(std::process::id(), Ordering::Relaxed);
    if let Some((id, init_arg)) = &arg.init {
        run_init(id, init_arg)?;
    }
    let mut rx = arg.tasks.consumer().map_err(|e| format!("task queue: {e}"))?;
    let mut tx = arg.results.producer().map_err(|e| format!("result queue: {e}"))?;
    let mut frame_buf = Vec::new();
    let mut out = ResultFrame::default();
    let mut spill = Vec::new();
    let mut started: u64 = started_word.load(Ordering::Relaxed);
    let mut chunks_done = 0u64;
    let mut cached: Option<(Vec<u8>, Option<Runner>)> = None;
    // Closed: the pool is shutting down; Disconnected: the pool is gone.
    while rx.recv_into(&mut frame_buf).is_ok() {
        let h = frame::parse_task(&frame_buf).ok_or("corrupt task frame")?;
        if cached.as_ref().is_none_or(|(id, _)| id.as_slice() != h.id) {
            cached = Some((h.id.to_vec(), task::lookup(h.id)));
        }
        let runner = cached.as_ref().and_then(|(_, r)| *r);
        out.start(h.job, h.first);
        let mut items = h.items;
        let mut next_first = h.first;
        for _ in 0..h.count {
            let item = frame::next_item(&mut items).ok_or("corrupt task frame")?;
            started += 1;
            // Release: pairs with the Acquire loads of `started` in the
            // manager (`bury`, `in_progress`, `check_timeout`): the result
            // frames sent before this item are in the ring when the
            // manager sees that we began it.
            started_word.store(started, Ordering::Release);
            let mark = out.begin_item();
            let status = match runner {
                Some(run) => run(item, &mut out.bytes),
                None => {
                    out.bytes.extend_from_slice(
                        format!("task {} is not registered in the worker", String::from_utf8_lossy(h.id)).as_bytes(),
                    );
                    Status::Refused
                }
            };
            out.seal_item(mark, status as u8, Status::Refused as u8);
            if out.over() {
                // This result does not fit in the frame: send the frame
                // without it, and start the next one with it.
                out.split_last(mark, &mut spill);
                next_first += u64::from(out.count());
                tx.send(out.seal()).map_err(|e| format!("result queue: {e}"))?;
                ctl.bump();
                out.start(h.job, next_first);
                out.push_raw(&spill);
            }
        }
        if out.count() > 0 {
            tx.send(out.seal()).map_err(|e| format!("result queue: {e}"))?;
            ctl.bump();
        }
        if h.flags & END_OF_CHUNK != 0 {
            chunks_done += 1;
            if arg.max_tasks > 0 && chunks_done >= arg.max_tasks {
                break;
            }
        }
    }
    Ok(())
}
