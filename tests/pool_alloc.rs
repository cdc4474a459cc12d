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

/// The counter is process-wide: the tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

shmproc::task! { fn worker_allocs(_x: u64) -> u64 { ALLOCS.load(Ordering::Relaxed) } }
shmproc::task! { fn square(x: u64) -> u64 { x.wrapping_mul(x) } }

/// Five maps of 50 000 `u64` in chunks of 100 (500 chunks each) on one
/// worker, after a warm-up map: the worker allocates less than once per 20
/// chunks (it allocated its arena reference's buffer per chunk: 1.0) and
/// the caller less than once per 4 chunks (it allocated each frame's
/// header as a `Vec`: 1.05 per chunk; now the header lives in the frame,
/// and what is left is per map and per batch of frames: about 0.07),
/// never per item.
#[test]
fn a_plain_data_map_allocates_per_chunk_at_most_a_little() {
    let _one = serial();
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
    assert!(caller < 0.25, "the caller allocates {caller:.3} times per chunk");
    pool.close();
    pool.join().unwrap();
}

/// A steady-state loop of `apply_async(..).get()` on a real worker
/// allocates nothing per call in the caller (issue 13, item 5): the job's
/// state, its result handle and its task frame's buffer are recycled when
/// the handle is dropped (before: four allocations per call, a job `Arc`,
/// its one-slot `VecDeque`, the frame's `Vec` and the handle's `Arc`). A
/// handle dropped without `get`, and one whose value was taken through
/// `then`, still work (and are simply not reused).
#[test]
fn a_steady_apply_loop_allocates_nothing_per_call_in_the_caller() {
    let _one = serial();
    let pool = shmproc::Pool::new(1).unwrap();
    for x in 0..200u64 {
        assert_eq!(pool.apply_async(square, x).unwrap().get().unwrap(), x * x);
    }
    let calls = 2_000u64;
    let a0 = ALLOCS.load(Ordering::Relaxed);
    for x in 0..calls {
        let r = pool.apply_async(square, x).unwrap();
        assert!(r.get().unwrap() == x.wrapping_mul(x));
    }
    let a1 = ALLOCS.load(Ordering::Relaxed);
    // And `apply`, which is the same.
    for x in 0..calls {
        assert!(pool.apply(square, x).unwrap() == x.wrapping_mul(x));
    }
    let a2 = ALLOCS.load(Ordering::Relaxed);
    let (per, per_apply) = ((a1 - a0) as f64 / calls as f64, (a2 - a1) as f64 / calls as f64);
    eprintln!("allocations per apply_async/get: {per:.3}; per apply: {per_apply:.3}");
    // (Not exactly 0: a result the manager thread filed may be let go by
    // it just after the caller's handle, and is then not reused.)
    assert!(per < 0.1, "the caller allocates {per:.3} times per apply_async/get");
    assert!(per_apply < 0.1, "the caller allocates {per_apply:.3} times per apply");
    // Handles dropped unread, or read through a callback, stay correct.
    let unread: Vec<_> = (0..10u64).map(|x| pool.apply_async(square, x).unwrap()).collect();
    drop(unread);
    let (tx, rx) = std::sync::mpsc::channel();
    for x in 0..10u64 {
        let tx = tx.clone();
        pool.apply_async(square, x).unwrap().then(move |r| tx.send((x, r)).unwrap());
    }
    for _ in 0..10 {
        let (x, r) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a callback within 60 s");
        assert_eq!(r, Ok(x * x));
    }
    for x in 0..100u64 {
        assert_eq!(pool.apply_async(square, x).unwrap().get().unwrap(), x * x);
    }
    pool.close();
    pool.join().unwrap();
}
