//! Review 6: a consumer killed between claiming a slot and releasing it,
//! when the queue then empties and closes (a bounded queue closed, or an
//! unbounded queue's ring sealed and drained): the MPMC pop must see the
//! ring empty and closed, not "another consumer took this position" for
//! ever (only a producer coming round repairs that slot, and no producer
//! comes round a closed ring).

mod common;

use std::time::Duration;

use shmproc::{GetTimeoutError, JoinableQueue, Options, Process, Queue};

shmproc::entry! {
    /// Claims the next get of `q` and exits without releasing it, as a
    /// consumer killed between its claim and its release.
    fn claim_a_get_and_die(q: Queue<u64>) -> Result<(), String> {
        if q.__claim_and_stop(true) { Ok(()) } else { Err("nothing to claim".into()) }
    }
}

shmproc::entry! {
    fn claim_a_joinable_get_and_die(q: JoinableQueue<u64>) -> Result<(), String> {
        if q.__claim_and_stop(true) { Ok(()) } else { Err("nothing to claim".into()) }
    }
}

fn run(p: &mut Process) {
    p.start().unwrap();
    common::join(p).unwrap();
    assert_eq!(p.exitcode(), Some(0), "the child did not claim");
}

/// A bounded queue of 2 slots: a consumer dies holding item 0's slot,
/// item 1 is got, the queue is closed: `get` says `Closed` (it timed out
/// before: the pop took the unreleased slot of the previous lap at `head`
/// for another consumer's claim, for ever).
#[test]
fn a_closed_queue_whose_head_slot_a_dead_consumer_holds_says_closed() {
    let q = Queue::<u64>::new(2).unwrap();
    q.put(0).unwrap();
    q.put(1).unwrap();
    run(&mut Process::new(claim_a_get_and_die, q.clone()));
    assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(1));
    q.close_all();
    assert_eq!(q.get_timeout(Duration::from_secs(2)), Err(GetTimeoutError::Closed));
    assert_eq!(q.qsize(), 0);
}

/// An unbounded JoinableQueue whose ring 0 (256 slots) a consumer died in,
/// holding item 0's slot: once the rest of ring 0 is got, `get` goes on to
/// ring 1 (before the fix it never did: ring 0, sealed and drained, never
/// looked drained, so it was never retired, and a get of an item queued in
/// ring 1 timed out). The dead consumer's item stays unfinished (one task
/// for one kill).
#[test]
fn an_unbounded_queue_goes_past_a_drained_ring_whose_head_slot_a_dead_consumer_holds() {
    let name = common::name("r6-dead-pop-ring");
    let q = JoinableQueue::<u64>::create_unbounded(&name, 34_000, &Options::new()).unwrap();
    let mut n = 0u64;
    // Ring 0 full, then one item in ring 1.
    while q.qsize() < 256 {
        q.put(n).unwrap();
        n += 1;
    }
    q.put(n).unwrap();
    n += 1;
    run(&mut Process::new(claim_a_joinable_get_and_die, q.clone()));
    for i in 1..n {
        assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(i), "item {i} of {n}");
        q.task_done().unwrap();
    }
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.unfinished_tasks(), 1, "the dead consumer's item");
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(5)));
}
