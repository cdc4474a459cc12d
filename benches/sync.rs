//! Criterion benches of our locks and events. The side-by-side tables
//! against std, robust pthread mutexes and raw_sync live in the
//! comparisons package (`cargo bench -p shmproc-comparisons --bench sync`).

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shmproc::{Event, Lock, Mutex};
use support::run_pair;

fn locks(c: &mut Criterion) {
    let lock = Lock::new().unwrap();
    let mut g = c.benchmark_group("lock");
    g.bench_function("uncontended_lock_unlock", |b| b.iter(|| drop(black_box(lock.lock().unwrap()))));
    g.bench_function("try_lock_unlock", |b| b.iter(|| drop(black_box(lock.try_lock().unwrap()))));
    g.finish();

    let m = Mutex::new(0u64).unwrap();
    let mut g = c.benchmark_group("two_processes");
    g.sample_size(10);
    // One iteration is one critical section in each of two processes pinned
    // to different cores; the time is reported per critical section.
    g.bench_function("mutex_critical_section", |b| {
        b.iter_custom(|n| {
            let op = || m.lock().unwrap().update(|c| *c += 1);
            run_pair(|| (0..n).for_each(|_| op()), || (0..n).for_each(|_| op())) / 2
        })
    });
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    // One iteration is one set -> wake, one way.
    g.bench_function("event_set_wake_one_way", |b| {
        b.iter_custom(|n| {
            let d = run_pair(
                || {
                    for _ in 0..n {
                        ping.set();
                        pong.wait();
                        pong.clear();
                    }
                },
                || {
                    for _ in 0..n {
                        ping.wait();
                        ping.clear();
                        pong.set();
                    }
                },
            );
            d / 2
        })
    });
    g.finish();
}

criterion_group!(benches, locks);
criterion_main!(benches);
