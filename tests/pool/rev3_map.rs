//! Hostile review (rev3) of the streamed plain-data `Pool.map`
//! (src/pool/mod.rs `submit_streamed`, frame.rs `PodBlock::arena` /
//! `write_items` / `fill_heap`, result.rs `Job::set_len`).

use std::time::Instant;

use super::{
    DEADLINE, alive, finish, kill9, only_the_parked_item_was_lost, park_at, park_file, serial, square, wait_until,
    watchdog,
};
use shmproc::Pool;
use shmproc::pool::TaskError;

shmproc::task! {
    /// Fails at every 9 973rd item (plain data in and out).
    fn rev3_picky(x: u64) -> Result<u64, String> {
        if x % 9_973 == 3 {
            return Err(format!("{x} refused"));
        }
        Ok(x.wrapping_mul(x))
    }
}

/// Yields `0..n`; its size hint is exact (`hint - yielded`) until `turn`
/// items were yielded, then `late` (safe code breaking the contract).
struct Turncoat {
    next: u64,
    n: u64,
    hint: u64,
    turn: u64,
    late: usize,
    panic_at: Option<u64>,
    /// Whether the hint before `turn` has an upper bound (exact).
    exact: bool,
}

impl Iterator for Turncoat {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if Some(self.next) == self.panic_at {
            panic!("rev3 iterator gives up at {}", self.next);
        }
        (self.next < self.n).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.next >= self.turn {
            return (self.late, Some(self.late));
        }
        let left = self.hint.saturating_sub(self.next) as usize;
        (left, self.exact.then_some(left))
    }
}

fn honest(n: u64) -> Turncoat {
    Turncoat { next: 0, n, hint: n, turn: u64::MAX, late: 0, panic_at: None, exact: true }
}

/// An iterator that panics after its first frames went to the workers
/// (exact hint: the streamed path): the panic reaches the caller, and the
/// pool stays usable: the next streamed maps are exact, the pool joins.
#[test]
fn rev3_an_iterator_panicking_mid_stream_leaves_the_pool_usable() {
    let _watchdog = watchdog("rev3_an_iterator_panicking_mid_stream_leaves_the_pool_usable");
    let pool = Pool::new(2).unwrap();
    for panic_at in [1, 70_000, 199_999] {
        let items = Turncoat { panic_at: Some(panic_at), ..honest(200_000) };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.map(square, items)));
        assert!(r.is_err(), "the iterator's panic reaches the caller");
        assert_eq!(pool.map(square, honest(200_000)).unwrap(), serial(200_000), "after a panic at {panic_at}");
    }
    finish(pool, &[]);
}

/// An exact hint, then more items than it said (inside the arena's room,
/// then past it into a private block): every failure carries its own item
/// index and every value is its own item's.
#[test]
fn rev3_failures_past_the_hint_carry_their_own_index() {
    let _watchdog = watchdog("rev3_failures_past_the_hint_carry_their_own_index");
    let pool = Pool::new(2).unwrap();
    for (n, hint, chunksize) in [(300_000u64, 10_000u64, 0usize), (300_000, 10_000, 1_000), (140_000, 131_072, 3)] {
        let items = Turncoat { hint, ..honest(n) };
        let all = pool.map_results(rev3_picky, items, chunksize).unwrap();
        assert_eq!(all.len() as u64, n);
        for (i, o) in all.iter().enumerate() {
            let i = i as u64;
            match o {
                Ok(v) => assert!(i % 9_973 != 3 && *v == i.wrapping_mul(i), "item {i}: {o:?}"),
                Err(TaskError::Failed { index, message, .. }) => {
                    assert!(*index == i && message == &format!("{i} refused"), "item {i}: {o:?}")
                }
                Err(e) => panic!("item {i}: {e:?}"),
            }
        }
    }
    finish(pool, &[]);
}

/// Two streamed maps at once from two threads (one takes the pool's kept
/// arena, the other a new one; then they swap as they finish): every value
/// is its own item's.
#[test]
fn rev3_streamed_maps_from_two_threads_stay_exact() {
    let _watchdog = watchdog("rev3_streamed_maps_from_two_threads_stay_exact");
    let pool = Pool::new(2).unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..6u64 {
                        let n = 100_000 + 17_000 * ((t + round) % 3);
                        let items = Turncoat { hint: n - 1 + 2 * (round % 2), ..honest(n) };
                        let got = pool.map(square, items).unwrap();
                        assert_eq!(got, serial(n), "thread {t} round {round}");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    finish(pool, &[]);
}

/// The body of the next test, run in a child process (it may abort).
#[test]
#[ignore = "run by rev3_a_hint_that_turns_enormous_past_the_arena_does_not_abort_the_caller"]
fn rev3_inner_enormous_late_hint() {
    let Some(path) = std::env::var_os("SHMPROC_REV3_INNER") else { return };
    let pool = Pool::new(2).unwrap();
    // Streamed: exact hint 10 000 (an arena of 1 MiB: 131 072 items); past
    // 140 000 items it says 2^40 are left. Filled: no upper bound (an
    // arena that grows), past 140 000 items the same word. Small: no upper
    // bound and 1 000 (8 KB: a private block), then, once those 1 000
    // came, the same word.
    let exact = path == "streamed";
    let hint = if path == "small" { 1_000 } else { 10_000 };
    let turn = if path == "small" { 1_000 } else { 140_000 };
    let items = Turncoat { hint, turn, late: 1 << 40, exact, ..honest(200_000) };
    assert_eq!(pool.map(square, items).unwrap(), serial(200_000));
    finish(pool, &[]);
}

/// An iterator whose hint is exact at first (a small arena) and, once it
/// has yielded more than the arena holds, says 2^40 items are left: the
/// caller must not size anything from that word (the streamed path caps
/// the arena at `HINT_MAX` for this very reason). The map runs in a child
/// process, which must exit cleanly with the exact values.
#[test]
fn rev3_a_hint_that_turns_enormous_past_the_arena_does_not_abort_the_caller() {
    let _watchdog = watchdog("rev3_a_hint_that_turns_enormous_past_the_arena_does_not_abort_the_caller");
    let mut failures = Vec::new();
    for path in ["streamed", "filled", "small"] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "rev3_map::rev3_inner_enormous_late_hint",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHMPROC_REV3_INNER", path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child map did not finish within {DEADLINE:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        // An aborted child leaves its segments: remove them (creator dead),
        // after its workers have seen it go.
        if !status.success() {
            let t = Instant::now();
            let mut quiet = 0;
            while t.elapsed() < DEADLINE && quiet < 10 {
                let removed = shmproc::gc().unwrap_or_default();
                quiet = if removed.is_empty() { quiet + 1 } else { 0 };
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        if !status.success() {
            let err = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.is_empty())
                .take(8)
                .collect::<Vec<_>>()
                .join("\n");
            failures.push(format!("the {path} child map ended with {status:?}; stderr:\n{err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A worker killed while the caller writes items past an exact hint that
/// lied (the parked item 77 777 lies in the arena's room past the hint of
/// 10 000, framed after `Job::set_len` doublings; the kill comes while the
/// caller reads the items past the arena into a private block): only the
/// parked item fails with `WorkerLost`, every other value is exact, the
/// pool runs another map.
#[test]
fn rev3_a_worker_killed_past_a_lying_hint_fails_only_its_item() {
    let _watchdog = watchdog("rev3_a_worker_killed_past_a_lying_hint_fails_only_its_item");
    let file = park_file(std::process::id());
    let _ = std::fs::remove_file(&file);
    let pool = Pool::new(2).unwrap();
    const N: u64 = 200_000;
    const HOLD: u64 = 160_000;
    let mut victim = 0u32;
    let items = Turncoat { hint: 10_000, ..honest(N) }.inspect(|&x| {
        if x == HOLD {
            wait_until("the victim item to start", || std::fs::read_to_string(&file).is_ok_and(|s| !s.is_empty()));
            victim = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
            std::fs::remove_file(&file).unwrap();
            kill9(victim);
            wait_until("the victim to die", || !alive(victim));
        }
    });
    let all = pool.map_results(park_at, items, 0).unwrap();
    assert!(victim != 0);
    only_the_parked_item_was_lost(&all, N, victim);
    assert_eq!(pool.map(square, 0..300_000).unwrap(), serial(300_000));
    finish(pool, &[victim]);
}
