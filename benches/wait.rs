//! `shmproc::wait` wake-up latency: one process sets an event that another
//! waits on together with 3 other objects (a semaphore, a `Queue`, an
//! `MpmcQueue`), beside a plain `Event::wait` on the same event, in
//! interleaved rounds (so slow machine phases hit both alike), with their
//! ratio (issue 11's target: wait on 4 objects within 1.2x of a plain
//! `Event::wait`). Then criterion benches of the two.
//!
//! One iteration is a ping-pong: the parent sets `ping`, the child wakes
//! (plain or through `wait`), clears it and sets `pong`, which the parent
//! waits for; the time per iteration is halved (one way).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::Criterion;
use shmproc::queue::MpmcQueue;
use shmproc::{Event, Queue, Semaphore, wait};
use support::{interleave, quick, run_pair};

struct Objects {
    ping: Event,
    pong: Event,
    sem: Semaphore,
    q: Queue<u32>,
    mq: MpmcQueue<u32>,
}

impl Objects {
    fn new() -> Self {
        Objects {
            ping: Event::new().unwrap(),
            pong: Event::new().unwrap(),
            sem: Semaphore::new(0).unwrap(),
            q: Queue::new(4).unwrap(),
            mq: MpmcQueue::new(4).unwrap(),
        }
    }

    /// `n` one-way wake-ups; the child waits with `wait` on 4 objects
    /// (`many`) or with `Event::wait`.
    fn one_way(&self, n: u64, many: bool) -> Duration {
        let d = run_pair(
            || {
                for _ in 0..n {
                    self.ping.set();
                    self.pong.wait();
                    self.pong.clear();
                }
            },
            || {
                let (mut ping, mut sem, mut q, mut mq) =
                    (self.ping.clone(), self.sem.clone(), self.q.clone(), self.mq.clone());
                for _ in 0..n {
                    if many {
                        let r = wait(&mut [&mut sem, &mut q, &mut mq, &mut ping], None).unwrap();
                        assert!(r.contains(3) && r.len() == 1, "only the event is set: {r:?}");
                    } else {
                        ping.wait();
                    }
                    ping.clear();
                    self.pong.set();
                }
            },
        );
        d / 2
    }
}

fn side_by_side(o: &Objects, rounds: usize, n: u64) {
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    let mut plain = || ns(o.one_way(n, false));
    let mut many = || ns(o.one_way(n, true));
    let r = interleave(rounds, &mut [("Event::wait", &mut plain), ("wait on 4 objects", &mut many)]);
    println!("\n== wake-up latency, one way, ns (median of {rounds} interleaved rounds, {n} wake-ups each)");
    for (name, v) in &r {
        println!("  {name:<36} {v:>10.0}");
    }
    println!("  {:<36} {:>9.2}x", "wait / Event::wait (target <= 1.2)", r[1].1 / r[0].1);
}

fn main() {
    let o = Objects::new();
    if quick() {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
        side_by_side(&o, 1, 50);
        return;
    }
    let rounds = std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(9);
    side_by_side(&o, rounds, 20_000);
    if std::env::var_os("SHMPROC_BENCH_SIDE_BY_SIDE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("wait_wakeup_one_way");
    g.sample_size(10);
    g.bench_function("event_wait", |b| b.iter_custom(|n| o.one_way(n, false)));
    g.bench_function("wait_4_objects", |b| b.iter_custom(|n| o.one_way(n, true)));
    g.finish();
    c.final_summary();
}
