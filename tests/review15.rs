//! Review 15: the Pool's less-used operations, Python corner cases,
//! results outliving their pool, and workers killed at odd moments.

mod common;

use std::time::Duration;

use shmproc::Pool;
use shmproc::pool::{GetTimeoutError, PoolError, TaskError};

shmproc::task! { fn r15_sq(x: u64) -> u64 { x * x } }
shmproc::task! { fn r15_len(s: String) -> u64 { s.len() as u64 } }
shmproc::task! { fn r15_echo(s: String) -> String { s } }
shmproc::task! { fn r15_bytes(n: u64) -> Vec<u8> { vec![7u8; n as usize] } }
shmproc::task! { fn r15_nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms } }
shmproc::task! { fn r15_pid(_x: u64) -> u32 { std::process::id() } }
shmproc::task! { fn r15_add((a, b): (u64, u64)) -> u64 { a + b } }

const INNER: &str = "REVIEW15_INNER";

fn within<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s"),
    }
}

/// A value whose encoding is over `MAX_ITEM_BYTES` fails its item with
/// `TaskError::TooLarge { what: "result", .. }`, as the README ("`TooLarge`
/// above") and `TaskError::TooLarge` ("argument" or "result") say; the
/// others complete. It was `Refused` with a message.
#[test]
fn a_result_over_the_item_limit_fails_with_too_large() {
    let pool = Pool::new(2).unwrap();
    let max = shmproc::pool::MAX_ITEM_BYTES;
    // A Vec<u8> of n bytes encodes as 8 + n.
    let sizes = [0u64, 1, (max - 8) as u64, (max - 7) as u64, 1 << 20, 5 << 20];
    let r = within("map_results", 60, move || {
        let r = pool.map_results(r15_bytes, sizes, 0).unwrap();
        let u: Vec<_> = pool.imap_unordered(r15_bytes, [5u64 << 20, 3]).unwrap().collect();
        let a = pool.apply(r15_bytes, (max - 7) as u64);
        pool.close();
        pool.join().unwrap();
        (r, u, a)
    });
    let (r, u, a) = r;
    let lens: Vec<_> = r.iter().map(|x| x.as_ref().map(Vec::len)).collect();
    assert_eq!(&lens[..3], [Ok(0), Ok(1), Ok(max - 8)]);
    for (i, len) in [(3, max + 1), (4, (1 << 20) + 8), (5, (5 << 20) + 8)] {
        assert_eq!(r[i], Err(TaskError::TooLarge { index: i as u64, what: "result", len, max }), "item {i}");
    }
    assert!(u.contains(&Ok(vec![7; 3])), "{:?}", u.iter().map(|x| x.as_ref().map(Vec::len)).collect::<Vec<_>>());
    assert!(u.contains(&Err(TaskError::TooLarge { index: 0, what: "result", len: (5 << 20) + 8, max })));
    assert_eq!(a, Err(PoolError::Task(TaskError::TooLarge { index: 0, what: "result", len: max + 1, max })));
}

/// A completion callback that joins (or terminates) its pool while
/// another thread is in `join`: both return (the docs: "called from a
/// callback, it does not wait for that thread").
#[test]
fn a_callback_joining_its_pool_while_another_thread_joins_it_returns() {
    for terminate in [false, true] {
        let pool = std::sync::Arc::new(Pool::new(1).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = std::sync::Arc::clone(&pool);
        pool.apply_async(r15_nap, 300).unwrap().then(move |r| {
            // Let the main thread get into `join` first.
            std::thread::sleep(Duration::from_millis(300));
            if terminate {
                p2.terminate();
            } else {
                p2.join().unwrap();
            }
            tx.send(r).unwrap();
        });
        pool.close();
        within("join beside a callback that joins", 30, move || pool.join()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(Ok(300)), "terminate: {terminate}");
    }
}

shmproc::task! { fn r15_init_abort(_: ()) -> () { std::process::abort() } }
shmproc::task! { fn r15_init_exit0(_: ()) -> () { std::process::exit(0) } }

/// An initializer that crashes its worker (`abort`, as a panic does under
/// `panic = "abort"`) or exits with code 0 fails the pool's jobs after a
/// few tries, as the builder's docs say of a failing initializer ("the
/// pool fails its jobs while no worker lives, instead of looping"). The
/// jobs waited for good while the pool started about 20 workers a second.
#[test]
fn an_initializer_that_aborts_or_exits_fails_the_jobs_instead_of_hanging() {
    for abort in [true, false] {
        let b = Pool::builder().processes(2);
        let pool =
            if abort { b.initializer(r15_init_abort, ()) } else { b.initializer(r15_init_exit0, ()) }.build().unwrap();
        let r = pool.map_async(r15_sq, 0..10u64).unwrap().get_timeout(Duration::from_secs(30));
        let started = pool.__created().0.len();
        within("terminate", 30, move || pool.terminate());
        match r {
            Err(GetTimeoutError::Failed(PoolError::Task(TaskError::Refused { message, .. }))) => {
                assert!(message.contains("keep failing to start"), "abort: {abort}: {message}");
                println!("abort: {abort}: {message}");
            }
            other => panic!("abort: {abort}: {:?} ({started} workers started)", other.map_err(|e| e.to_string())),
        }
    }
}

/// `imap` and `imap_unordered` with a chunk size near `usize::MAX` (Python
/// takes any chunk size; `map_chunked` does here too) yield every result.
/// Its default in-flight bound, 4 x processes x chunksize, overflowed: a
/// panic in the caller's `next` (debug), or a bound of 0 (release: with 3
/// workers and 2^62, nothing was ever submitted and `next` waited for good).
#[test]
fn imap_with_a_huge_chunksize_yields_every_result() {
    let pool = Pool::new(3).unwrap();
    let want: Vec<u64> = (0..100).map(|x| x * x).collect();
    let r = within("imap", 60, move || {
        let mut out = Vec::new();
        for cs in [usize::MAX, 1 << 62] {
            let r: Vec<u64> = pool.imap(r15_sq, 0..100u64).unwrap().chunksize(cs).map(Result::unwrap).collect();
            let mut u: Vec<u64> =
                pool.imap_unordered(r15_sq, 0..100u64).unwrap().chunksize(cs).map(Result::unwrap).collect();
            u.sort_unstable();
            out.push((cs, r, u));
        }
        pool.close();
        pool.join().unwrap();
        out
    });
    for (cs, r, u) in r {
        assert_eq!(r, want, "imap, chunksize {cs}");
        assert_eq!(u, want, "imap_unordered, chunksize {cs}");
    }
}

/// An argument type whose encoding panics for one value (a user
/// `Handoff` with an `unwrap` in it).
#[derive(Debug, Clone)]
struct Bomb(u64);

impl shmproc::process::Handoff for Bomb {
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.0 != u64::MAX, "this Bomb cannot be encoded");
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, shmproc::process::HandoffError> {
        u64::decode(input).map(Bomb)
    }
}

shmproc::task! { fn r15_defuse(b: Bomb) -> u64 { b.0 } }

/// A `map` whose argument encoding panics in a later batch (past the
/// first 65 536 items, which go to the manager before the rest is
/// encoded): the panic reaches the caller, and the pool can still be
/// closed and joined, and used meanwhile. The job the first batch had
/// opened was never ended: `join` waited for it for good (Python's `map`
/// raises the pickling error and its pool joins).
#[test]
fn a_map_whose_encoding_panics_in_a_later_batch_leaves_a_pool_that_joins() {
    let pool = Pool::new(2).unwrap();
    let r = within("map and join", 60, move || {
        let items: Vec<Bomb> = (0..70_000u64).map(|i| Bomb(if i == 69_000 { u64::MAX } else { i })).collect();
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.map_chunked(r15_defuse, items, 1))).is_err();
        let after = pool.map(r15_defuse, (0..10).map(Bomb).collect::<Vec<_>>());
        pool.close();
        pool.join().unwrap();
        (panicked, after)
    });
    assert!(r.0, "the encoding's panic did not reach the caller");
    assert_eq!(r.1, Ok((0..10).collect::<Vec<u64>>()));
}

/// An absurd number of processes is an error from `build` (as 0 is), not
/// a panic: the control segment's size overflowed ("attempt to multiply
/// with overflow" in debug builds; in release a wrapped size, then a
/// capacity overflow). A large one that fits fails as /dev/shm has no
/// room, and leaves nothing behind.
#[test]
fn an_absurd_number_of_processes_is_an_error_not_a_panic() {
    if !common::rerun_in_tmpfs(
        "an_absurd_number_of_processes_is_an_error_not_a_panic",
        INNER,
        Some("16m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    for n in [usize::MAX, 1 << 58, usize::MAX / 64] {
        let r = std::panic::catch_unwind(|| Pool::new(n).map(|_| ()));
        assert!(matches!(r, Ok(Err(PoolError::InvalidArgument(_)))), "{n}: {:?}", r.map_err(|_| "panicked"));
    }
    let r = Pool::new(1 << 40).map(|_| ());
    assert!(matches!(r, Err(PoolError::Setup(_))), "{r:?}");
    assert_eq!(common::dev_shm_files(), Vec::<String>::new());
}

/// `pool::default_chunksize` (public) takes any process count: it
/// overflowed ("attempt to multiply with overflow") past `usize::MAX / 4`.
#[test]
fn default_chunksize_takes_any_process_count() {
    use shmproc::pool::default_chunksize;
    assert_eq!(default_chunksize(10, usize::MAX), 1);
    assert_eq!(default_chunksize(usize::MAX, usize::MAX / 2), 1);
    assert_eq!(default_chunksize(usize::MAX, 1), usize::MAX / 4 + 1);
}
