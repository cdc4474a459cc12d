//! Criterion benches of our queues, producer and consumer in different
//! processes pinned to different cores. The side-by-side tables against
//! rtrb, crossbeam, Unix sockets, ipc-channel, iceoryx2 and Python live in
//! the comparisons package (`cargo bench -p shmproc-comparisons --bench queue`).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmproc::queue::{MpmcQueue, SpscQueue, WaitStrategy};
use support::queue_cases::{
    bytes_frames, mpmc_2p2c, queue_strings, queue_strings_borrowed, queue_strings_ref_get, spsc_batched, spsc_pingpong,
    spsc_single,
};

/// Runs `f(n)` (which returns M items/s for `n` items) and turns it into the
/// time criterion expects for `n` iterations.
fn timed(n: u64, f: impl Fn(u64) -> f64) -> Duration {
    Duration::from_secs_f64(n as f64 / (f(n) * 1e6))
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_u64");
    g.sample_size(10).throughput(Throughput::Elements(1));
    g.bench_function("single_push_pop", |b| b.iter_custom(|n| timed(n.max(2), |n| spsc_single(4096, n))));
    g.bench_function("batches_of_256", |b| b.iter_custom(|n| timed(n.max(2), |n| spsc_batched(4096, n))));
    // One iteration is one round trip (p50 of the run).
    g.bench_function("pingpong_busy_poll", |b| {
        b.iter_custom(|n| {
            Duration::from_nanos(spsc_pingpong(n.max(100) as usize, WaitStrategy::BusyPoll).0 as u64) * n as u32
        })
    });
    g.finish();

    let mut g = c.benchmark_group("mpmc_u64");
    g.sample_size(10).throughput(Throughput::Elements(1));
    // 2 producer and 2 consumer processes; one iteration is one item.
    g.bench_function("2p_2c", |b| b.iter_custom(|n| timed(n.max(4), |n| mpmc_2p2c(n / 2))));
    g.finish();

    let mut g = c.benchmark_group("byte_frames");
    g.sample_size(10);
    for size in [64usize, 4096] {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size}_bytes"), |b| b.iter_custom(|n| timed(n.max(2), |n| bytes_frames(size, n))));
    }
    g.finish();

    let mut g = c.benchmark_group("queue_string");
    g.sample_size(10).throughput(Throughput::Elements(1));
    // Queue<String> of 64-byte strings, 1 producer -> 1 consumer process.
    g.bench_function("64_bytes_1p_1c", |b| b.iter_custom(|n| timed(n.max(2), queue_strings)));
    // The same with the borrowed forms (put_ref from one String, get_into
    // one reused String): like with like beside byte_frames/64_bytes.
    g.bench_function("64_bytes_1p_1c_borrowed", |b| b.iter_custom(|n| timed(n.max(2), queue_strings_borrowed)));
    // Python's shape (the same string put each time, a new one per get).
    g.bench_function("64_bytes_1p_1c_put_ref_get", |b| b.iter_custom(|n| timed(n.max(2), queue_strings_ref_get)));
    g.finish();
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What a blocked caller costs: the CPU time (not wall time) one 10 ms
/// `pop_timeout` on an empty queue uses (spin, then futex sleep). The
/// figure that used to be asserted in tests ("under 5 ms of CPU per
/// blocked second").
fn blocked_waits(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_per_10ms_blocked_pop");
    g.sample_size(10);
    let wait = Duration::from_millis(10);
    g.bench_function("spsc", |b| {
        b.iter_custom(|n| {
            let q = SpscQueue::<u64>::new(8).unwrap();
            let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
            let before = thread_cpu();
            for _ in 0..n {
                assert!(rx.pop_timeout(wait).is_err());
            }
            thread_cpu() - before
        })
    });
    g.bench_function("mpmc", |b| {
        b.iter_custom(|n| {
            let q = MpmcQueue::<u64>::new(8).unwrap();
            let before = thread_cpu();
            for _ in 0..n {
                assert!(q.pop_timeout(wait).is_err());
            }
            thread_cpu() - before
        })
    });
    g.finish();
}

criterion_group!(benches, queues, blocked_waits);
criterion_main!(benches);
