//! Review 6: the unbounded JoinableQueue's count read from its rings
//! (`links::Tally`, commits f44b39e..4c58fe4) and `qsize`, read while
//! other handles retire the rings they sum; hostile words in the chain's
//! control block. (The interleaving that lost rings from the sum is
//! pinned down by the loom model
//! `loom::unbounded_chain_count_read_across_two_retirements_never_misses_a_ring`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::{JoinableQueue, Options};

/// A memory limit that gives rings of 256 `u64` slots, two alive at most:
/// the chain retires a ring every 256 items.
const SMALL_LIMIT: u64 = 22_000;

/// A producer streams items through small rings (one retired every 256
/// items) to a consumer that marks each done, while readers, each through
/// a fresh handle (which maps the rings as it reads them, as another
/// process does), read `unfinished_tasks` and `qsize`. Every item put
/// before a read and not yet got (done) after it is in the queue (not
/// done) throughout the read, so each read is at least that many (less
/// the one get or `task_done` that may be between its effect and its
/// counter). A sum that stopped at a ring retired meanwhile left out the
/// rings after it: counts far below that.
#[test]
fn counts_read_while_rings_retire_leave_no_live_ring_out() {
    let name = common::name("r6-count-retire");
    let q = JoinableQueue::<u64>::create_unbounded(&name, SMALL_LIMIT, &Options::new()).unwrap();
    let n = common::count(30_000, 1_000_000);
    let (put, got, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (name, stop, put, got, done) = (name.clone(), stop.clone(), put.clone(), got.clone(), done.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = JoinableQueue::<u64>::open(&name).unwrap();
                    let p = put.load(Ordering::SeqCst);
                    let (u, len) = (r.unfinished_tasks(), r.qsize() as u64);
                    let (g, d) = (got.load(Ordering::SeqCst), done.load(Ordering::SeqCst));
                    if u + d + 1 < p || len + g + 1 < p {
                        bad.push(format!("put {p}, got {g}, done {d}: unfinished {u}, qsize {len}"));
                    }
                }
                bad
            })
        })
        .collect();
    let producer = {
        let (q, put) = (q.clone(), put.clone());
        std::thread::spawn(move || {
            for i in 0..n {
                q.put_timeout(i, common::DEADLINE).unwrap();
                put.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let end = Instant::now() + common::DEADLINE;
    for i in 0..n {
        assert_eq!(q.get_timeout(end.saturating_duration_since(Instant::now())), Ok(i));
        got.fetch_add(1, Ordering::SeqCst);
        q.task_done().unwrap_or_else(|e| panic!("task_done of item {i} refused: {e}"));
        done.fetch_add(1, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let bad: Vec<String> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(Duration::from_secs(10)));
    assert!(
        bad.is_empty(),
        "{} reads below the items queued throughout, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}
