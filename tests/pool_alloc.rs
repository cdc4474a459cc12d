//! Allocations per chunk of a plain-data `map` once the workers are up
//! (issue 13: "no allocation per task on the hot path"), counted by a
//! global allocator in the caller and, through a task that returns its
//! own process's count, in the worker (the worker is this test binary
//! re-executed, so it counts too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

shmproc::task! { fn worker_allocs(_x: u64) -> u64 { ALLOCS.load(Ordering::Relaxed) } }
shmproc::task! { fn square(x: u64) -> u64 { x.wrapping_mul(x) } }

/// Five maps of 50 000 `u64` in chunks of 100 (500 chunks each) on one
/// worker, after a warm-up map: the worker allocates less than once per 20
/// chunks (it allocated its arena reference's buffer per chunk: 1.0) and
/// the caller less than 1.5 times per chunk (today about 1.05: each
/// frame's header is a `Vec`), never per item.
#[test]
fn a_plain_data_map_allocates_per_chunk_at_most_a_little() {
    let pool = shmproc::Pool::new(1).unwrap();
    let items: Vec<u64> = (0..50_000).collect();
    let want: Vec<u64> = items.iter().map(|x| x.wrapping_mul(*x)).collect();
    assert_eq!(pool.map_chunked(square, items.iter().copied(), 100).unwrap(), want);
    let maps = 5u64;
    let chunks = maps * 500;
    let w0 = pool.apply(worker_allocs, 0).unwrap();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..maps {
        let got = pool.map_chunked(square, items.iter().copied(), 100).unwrap();
        assert!(got == want);
    }
    let a1 = ALLOCS.load(Ordering::Relaxed);
    let w1 = pool.apply(worker_allocs, 0).unwrap();
    let (caller, worker) = ((a1 - a0) as f64 / chunks as f64, (w1 - w0) as f64 / chunks as f64);
    eprintln!("allocations per chunk: caller {caller:.3}, worker {worker:.3}");
    assert!(worker < 0.05, "the worker allocates {worker:.3} times per chunk");
    assert!(caller < 1.5, "the caller allocates {caller:.3} times per chunk");
    pool.close();
    pool.join().unwrap();
}
