//! Helpers shared by the benches: CPU pinning, forked peers, a shared
//! anonymous page, and interleaved side-by-side rounds.

#![allow(dead_code)]

pub mod queue_cases;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Pins the calling thread to `cpu` (ignored if that CPU does not exist).
pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; the call
    // only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Undoes `pin`: any CPU.
pub fn unpin() {
    // SAFETY: as in `pin`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A MAP_SHARED anonymous region, shared with forked children.
pub struct SharedPage {
    ptr: *mut u8,
    len: usize,
}

impl SharedPage {
    pub fn new(len: usize) -> Self {
        // SAFETY: anonymous shared mapping, no file; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        SharedPage { ptr: ptr as *mut u8, len }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// A 4-byte flag at `offset` (must be 4-aligned and in range).
    pub fn flag(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: in range, aligned, zero-initialised shared memory.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU32) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Runs `child` in a forked process pinned to CPU 1 and `parent` here,
/// pinned to CPU 0, both released at the same instant. Returns the time
/// until both finished. The child must not allocate or take locks that
/// another thread of the parent might hold (benches are single-threaded
/// when they call this).
pub fn run_pair(mut parent: impl FnMut(), mut child: impl FnMut()) -> Duration {
    let page = SharedPage::new(4096);
    let (start, done) = (page.flag(0), page.flag(64));
    pin(0);
    // SAFETY: the child only runs `child` (shared-memory operations), then
    // leaves with _exit without running destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        pin(1);
        while start.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        // A panic must not unwind into the parent's code (this is a copy
        // of its stack): leave with a failure status instead.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut child)).is_ok();
        done.store(1, Ordering::Release);
        // SAFETY: leave the forked child immediately.
        unsafe { libc::_exit(if ok { 0 } else { 101 }) };
    }
    std::thread::sleep(Duration::from_millis(2)); // let the child reach its spin
    let t0 = Instant::now();
    start.store(1, Ordering::Release);
    parent();
    let mut status = 0;
    let mut reaped = false;
    while done.load(Ordering::Acquire) == 0 {
        // A child that died without finishing must not leave us spinning.
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped = true;
            break;
        }
        std::hint::spin_loop();
    }
    let elapsed = t0.elapsed();
    if !reaped {
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "bench child failed: {status}");
    unpin();
    elapsed
}

/// `n` messages in `d`, in M msgs/s.
pub fn mps(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

/// Round trips in ns: (p50, p99).
pub fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs each named measurement once per round, in turn, for `rounds`
/// rounds (so slow machine phases hit all of them alike), and returns each
/// one's median.
pub fn interleave(rounds: usize, cases: &mut [(&str, &mut dyn FnMut() -> f64)]) -> Vec<(String, f64)> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            samples[i].push(f());
        }
    }
    cases.iter().zip(samples.iter_mut()).map(|((n, _), s)| (n.to_string(), median(s))).collect()
}

/// Whether the bench runs as a quick smoke test (`cargo test --benches`).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--test") || std::env::var_os("SHMPROC_BENCH_QUICK").is_some()
}

/// Runs each closure in its own forked process (closure `i` pinned to CPU
/// `i % 2`), all released at once; returns the time until all finished.
pub fn run_group(mut roles: Vec<Box<dyn FnMut() + '_>>) -> Duration {
    let page = SharedPage::new(4096);
    let start = page.flag(0);
    let mut pids = Vec::new();
    for (i, role) in roles.iter_mut().enumerate() {
        // SAFETY: each child runs only its role (shared-memory operations)
        // and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            pin(i % 2);
            // The parent is a third participant on two cores: spin a
            // little, then sleep between looks, so it gets a core to
            // give the start even when every process is SCHED_FIFO (a
            // pure spin starved it forever under `chrt -f`).
            let mut spins = 0u32;
            while start.load(Ordering::Acquire) == 0 {
                if spins < 10_000 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *role)).is_ok();
            // SAFETY: leave the forked child immediately.
            unsafe { libc::_exit(if ok { 0 } else { 101 }) };
        }
        pids.push(pid);
    }
    std::thread::sleep(Duration::from_millis(5));
    let t0 = Instant::now();
    start.store(1, Ordering::Release);
    for pid in pids {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "bench child failed: {status}");
    }
    t0.elapsed()
}

/// Runs `python3 <script> <args>` (a bench script that prints one rate
/// in msgs/s); M msgs/s, or `None` if python3 does not run here.
pub fn python_rate(script: &str, args: &[&str]) -> Option<f64> {
    let out = std::process::Command::new("python3").arg(script).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok().map(|v| v / 1e6)
}
