//! Helpers for tests that run real child processes: the test binary
//! re-executes itself with `SHMPROC_TEST_CHILD=<role>` and its `main`
//! dispatches to the role before starting the harness.

#![allow(dead_code)]

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod crash;

pub const ROLE_VAR: &str = "SHMPROC_TEST_CHILD";
pub const ARGS_VAR: &str = "SHMPROC_TEST_ARGS";
/// Set (to anything) to run the heavy tests at their full counts (the 10
/// million items of the SPSC and unbounded queue tests, 1 500 random frames
/// up to 64 KiB, the crash matrix's 500 trials per kind, 40 rounds of
/// hostile bytes in a container); unset, `cargo test` and CI run shorter
/// counts that exercise the same paths:
///
/// ```text
/// SHMPROC_TEST_FULL=1 cargo test --release
/// ```
pub const FULL_VAR: &str = "SHMPROC_TEST_FULL";

/// `full` when [`FULL_VAR`] is set, else `short` (children inherit the
/// variable, so both sides of a test agree on the count).
pub fn count(short: u64, full: u64) -> u64 {
    if std::env::var_os(FULL_VAR).is_some() { full } else { short }
}

/// How long any child may run before the test kills it and fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What a child role runs: its arguments in, a failure message out.
pub type RoleFn = fn(&[String]) -> Result<(), String>;
/// Named child roles.
pub type Roles = &'static [(&'static str, RoleFn)];

/// If this process is a child, runs its role and exits.
pub fn dispatch_child(roles: &[(&str, RoleFn)]) {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let args: Vec<String> = std::env::var(ARGS_VAR)
        .unwrap_or_default()
        .split('\u{1f}')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let Some((_, f)) = roles.iter().find(|(r, _)| *r == role) else {
        eprintln!("unknown child role {role:?}");
        std::process::exit(3);
    };
    match f(&args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("child {role} failed: {e}");
            std::process::exit(1);
        }
    }
}

/// A child process of the test binary; killed and reaped on drop.
pub struct Child {
    inner: std::process::Child,
    role: String,
}

impl Child {
    pub fn spawn(role: &str, args: &[&str]) -> Child {
        let inner = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_VAR, role)
            .env(ARGS_VAR, args.join("\u{1f}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        Child { inner, role: role.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// SIGKILL without reaping: the child stays a zombie until `wait`.
    pub fn kill9(&mut self) {
        self.inner.kill().expect("kill");
    }

    /// Waits (bounded by DEADLINE) and returns the status.
    pub fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.inner.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > end {
                let _ = self.inner.kill();
                let _ = self.inner.wait();
                panic!("child {} did not finish within {DEADLINE:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits and asserts a zero exit status.
    pub fn join_ok(mut self) {
        let st = self.wait();
        assert!(st.success(), "child {} exited with {st:?}", self.role);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.inner.try_wait() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

/// A name unique to this test run.
pub fn name(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

/// Turns any error into the child's failure message.
pub fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// Asserts inside a child role.
pub fn ensure(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// Polls `cond` until it holds; fails the test after DEADLINE with `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {DEADLINE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

const SYS_FUTEX: u64 = if cfg!(target_arch = "aarch64") { 98 } else { 202 };
const SYS_FUTEX_WAITV: u64 = 449;
const SYS_WAIT4: u64 = if cfg!(target_arch = "aarch64") { 260 } else { 61 };
const SYS_WAITID: u64 = if cfg!(target_arch = "aarch64") { 95 } else { 247 };

/// The system call thread `tid` of process `pid` is blocked in
/// (`/proc/<pid>/task/<tid>/syscall`); `None` while it runs, or if it is gone.
pub fn blocked_in(pid: u32, tid: u32) -> Option<u64> {
    syscall_in(&format!("/proc/{pid}/task/{tid}/syscall"))
}

fn syscall_in(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// The system calls the threads of process `pid` are blocked in.
fn blocked_threads(pid: u32) -> Vec<u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks.filter_map(|t| syscall_in(t.ok()?.path().join("syscall").to_str()?)).collect()
}

/// How many threads of process `pid` are inside a futex system call (asleep
/// in a futex wait: the state blocking shmproc calls reach after spinning).
pub fn threads_in_futex(pid: u32) -> usize {
    blocked_threads(pid).into_iter().filter(|&n| n == SYS_FUTEX || n == SYS_FUTEX_WAITV).count()
}

/// Whether a thread of process `pid` is blocked waiting for a child to end
/// (`waitpid` / `waitid`).
pub fn waits_for_a_child(pid: u32) -> bool {
    blocked_threads(pid).into_iter().any(|n| n == SYS_WAIT4 || n == SYS_WAITID)
}

/// Whether the main thread of process `pid` is asleep in a futex wait.
pub fn main_thread_in_futex(pid: u32) -> bool {
    matches!(blocked_in(pid, pid), Some(n) if n == SYS_FUTEX || n == SYS_FUTEX_WAITV)
}

/// Whether the main thread of process `pid` is asleep in a futex *wait*
/// (`futex_waitv`, or `futex` with a wait op): not a wake, which
/// `main_thread_in_futex` also counts (an unlock that wakes a sleeper).
pub fn main_thread_in_futex_wait(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall")) else { return false };
    let mut f = text.split_whitespace();
    let nr = f.next().and_then(|n| n.parse::<u64>().ok());
    let op = f.nth(1).and_then(|o| u64::from_str_radix(o.trim_start_matches("0x"), 16).ok());
    match (nr, op) {
        (Some(n), _) if n == SYS_FUTEX_WAITV => true,
        // FUTEX_WAIT (0) or FUTEX_WAIT_BITSET (9), with or without FUTEX_PRIVATE_FLAG / CLOCK_REALTIME.
        (Some(n), Some(op)) if n == SYS_FUTEX => matches!(op & 0x7f, 0 | 9),
        _ => false,
    }
}

/// Whether thread `tid` of this process is asleep in a futex wait.
pub fn thread_in_futex(tid: u32) -> bool {
    matches!(blocked_in(std::process::id(), tid), Some(n) if n == SYS_FUTEX || n == SYS_FUTEX_WAITV)
}

/// The calling thread's kernel id (its `/proc/self/task/<tid>`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Waits (bounded by DEADLINE) until thread `tid` of this process is
/// blocked in a system call (e.g. a joiner waiting for its child).
pub fn wait_until_thread_asleep(tid: u32) {
    wait_for(&format!("thread {tid} to block in a system call"), || blocked_in(std::process::id(), tid).is_some());
}

/// Runs `cmd` to its end, bounded by DEADLINE (killed and the test failed
/// on expiry); its stderr is captured, its stdin and stdout are null.
pub fn run_within(cmd: &mut Command) -> (ExitStatus, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {DEADLINE:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, reader.join().expect("stderr reader"))
}

/// Waits (bounded by DEADLINE) until at least `n` threads of `pid` sleep on
/// a futex.
pub fn wait_until_asleep(pid: u32, n: usize) {
    wait_for(&format!("{n} thread(s) of process {pid} to sleep on a futex"), || threads_in_futex(pid) >= n);
}

/// `p.join()`, bounded by DEADLINE: on expiry the child is killed and the
/// test fails with a message, instead of hanging the suite.
pub fn join(p: &shmproc::Process) -> Result<(), shmproc::ProcessError> {
    match p.join_timeout(DEADLINE) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let _ = p.kill();
            let _ = p.join_timeout(DEADLINE);
            panic!("child process {:?} did not finish within {DEADLINE:?}; killed it", p.name());
        }
        Err(e) => Err(e),
    }
}

/// This thread's futex waits that timed out so far: a snapshot for
/// [`slept_through`].
pub fn timeouts() -> (u64, u64) {
    shmproc::__timed_out_waits()
}

/// Whether a futex wait of this thread since `before` (a [`timeouts`]
/// snapshot) timed out with a deadline later than `woken_at`
/// (`CLOCK_MONOTONIC` ns, read after the waker's wake had returned). The
/// kernel reports a timeout only when no wake dequeued the waiter before
/// it ran again, so such a wait was not reached by that wake: a lost
/// wake-up, told apart from a woken thread that merely ran late.
pub fn slept_through(before: (u64, u64), woken_at: u64) -> bool {
    let (n, deadline) = timeouts();
    n > before.0 && deadline > woken_at
}

/// The rounds of a wake-up test: those whose receiver slept through its
/// waker ([`slept_through`]; they fail the test) and those it returned from
/// later than a threshold after the waker (a diagnostic).
#[derive(Default)]
pub struct Wakes {
    pub missed: Vec<(u32, Duration)>,
    pub late: Vec<(u32, Duration, bool)>,
}

impl Wakes {
    /// Files round `i`: `before` is the [`timeouts`] snapshot taken before
    /// its blocking call, `back` when that call returned and `woken_at`
    /// when the waker's wake had returned (`CLOCK_MONOTONIC` ns).
    pub fn record(&mut self, i: u32, before: (u64, u64), back: u64, woken_at: u64, late: Duration) {
        let lag = Duration::from_nanos(back.saturating_sub(woken_at));
        let lost = slept_through(before, woken_at);
        if lost {
            self.missed.push((i, lag));
        }
        if lag > late {
            self.late.push((i, lag, lost));
        }
    }
}

/// SIGKILLs one of `consumers` at pseudo-random intervals (5..45 ms) and
/// starts `spawn()` in its place, until `done()`; returns how many it
/// killed.
pub fn kill_at_random(
    consumers: &mut [shmproc::Process],
    spawn: impl Fn() -> shmproc::Process,
    done: impl Fn() -> bool,
) -> u64 {
    let mut kills = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while !done() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 40));
        let victim = (seed >> 8) as usize % consumers.len();
        let _ = consumers[victim].kill();
        let _ = consumers[victim].join_timeout(DEADLINE);
        kills += 1;
        consumers[victim] = spawn();
    }
    kills
}

/// The end of a consumer-kill test, once the queue is closed: every
/// consumer left ends on its own and succeeded, then [`check_acks`].
pub fn join_consumers_and_check_acks(
    consumers: &[shmproc::Process],
    ack: &shmproc::Queue<u64>,
    n: u64,
    kills: u64,
) -> u64 {
    for c in consumers {
        let _ = join(c);
        assert_eq!(c.exitcode(), Some(0), "a consumer failed");
    }
    check_acks(ack, n, kills)
}

/// Drains `ack`, where consumers acknowledged each item `i < n` they got
/// (`u64::MAX - i` if it arrived torn): fails if one arrived torn or
/// twice, or if more than `kills` are missing; returns how many are.
pub fn check_acks(ack: &shmproc::Queue<u64>, n: u64, kills: u64) -> u64 {
    let mut seen = vec![0u32; n as usize];
    while let Ok(tag) = ack.get_nowait() {
        assert!(tag < n, "item {} arrived torn", u64::MAX - tag);
        seen[tag as usize] += 1;
    }
    let dup: Vec<usize> = (0..n as usize).filter(|&i| seen[i] > 1).collect();
    let missing = seen.iter().filter(|&&c| c == 0).count() as u64;
    assert!(dup.is_empty(), "items that arrived twice: {dup:?}");
    assert!(missing <= kills, "{missing} items missing after {kills} consumer kills");
    missing
}

/// The segment file of queue `name` (open for writing) and the offset of
/// the first `needle` in it.
pub fn find_in_segment(name: &str, needle: &[u8]) -> (std::fs::File, u64) {
    let path = format!("/dev/shm/{}{name}", shmproc::NAME_PREFIX);
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("payload in the segment");
    (std::fs::OpenOptions::new().write(true).open(&path).unwrap(), at as u64)
}

/// Frame `i` of a byte stream: its number, then a length and bytes that
/// depend on it (so a torn or shifted frame shows); at most 507 bytes.
pub fn byte_frame(i: u64) -> Vec<u8> {
    let mut f = i.to_le_bytes().to_vec();
    f.extend((0..(i * 37 % 500)).map(|k| (k as u8) ^ (i as u8)));
    f
}

/// The number of a [`byte_frame`], checking the frame is whole.
pub fn frame_number(f: &[u8]) -> u64 {
    assert!(f.len() >= 8, "short frame of {} bytes", f.len());
    let i = u64::from_le_bytes(f[..8].try_into().unwrap());
    assert_eq!(f, byte_frame(i).as_slice(), "torn frame {i}");
    i
}

/// Reads a `Value<u64>` whose lock a killed process may have held (its
/// `OwnerDied` is repaired: the value itself is one word, never torn).
pub fn read_u64(v: &shmproc::Value<u64>) -> u64 {
    match v.get_lock() {
        Ok(g) => g.value(),
        Err(shmproc::LockError::OwnerDied(mut g)) => {
            g.make_consistent();
            g.value()
        }
        Err(e) => panic!("{e}"),
    }
}

/// Names of this queue's segments in /dev/shm (control and rings).
pub fn segments_of(name: &str) -> Vec<String> {
    let prefix = format!("{}{name}", shmproc::NAME_PREFIX);
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| *f == prefix || f.starts_with(&format!("{prefix}.")))
        .collect()
}

/// Removes what a test left (so a failing test does not leak) and returns
/// the names it removed.
pub fn scrub(name: &str) -> Vec<String> {
    let mut left = segments_of(name);
    left.sort();
    for f in &left {
        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
    }
    left
}

/// Re-runs test `test` of this test binary alone in a child process, with
/// `var=test` in its environment (so the re-run knows it is the child).
/// `None` in that child: the caller does the work there. Otherwise the
/// child's status, stdout and stderr once it ended (it is killed, and this
/// panics, past `deadline`).
pub fn rerun_test(test: &str, var: &str, deadline: Duration) -> Option<(ExitStatus, String, String)> {
    if std::env::var(var).as_deref() == Ok(test) {
        return None;
    }
    Some(run_alone(Command::new(std::env::current_exe().unwrap()), test, var, deadline))
}

/// Runs `cmd` (this test binary, or a wrapper that execs it with the
/// arguments added here) to run test `test` alone with `var=test`; its
/// status, stdout and stderr once it ended (past `deadline` it is killed
/// and this panics, with its output).
fn run_alone(mut cmd: Command, test: &str, var: &str, deadline: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{test}: the child hung past {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    (status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// This process's virtual size now (bytes), from /proc/self/status.
pub fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Memory the files of a queue's rings (`/dev/shm/shmproc.<name>.*`) take:
/// their allocated blocks (whole pages), not their sizes.
pub fn ring_memory(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("shmproc.{name}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.starts_with(&prefix).then(|| e.metadata().ok().map_or(0, |m| m.blocks() * 512))
        })
        .sum()
}

/// Runs `test` again in a child process (this test binary, that one
/// test) with `var` set to the test's name, inside a private mount
/// namespace with a tmpfs of `size` (`mount -o size=`) on /dev/shm when
/// given (needs root and `unshare`; skipped with a message otherwise).
/// True in the re-run (the caller does the work there); false in the
/// caller, once the re-run passed or was skipped. A re-run killed by a
/// signal, failing, running no test or hanging past `deadline` fails the
/// test, with the child's output.
pub fn rerun_in_tmpfs(test: &str, var: &str, size: Option<&str>, deadline: Duration) -> bool {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var(var).as_deref() == Ok(test) {
        return true;
    }
    let cmd = match size {
        Some(size) => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 || !can_unshare_mounts() {
                println!(
                    "skipping {test}: needs root allowed to make a mount namespace (unshare -m) for a private tmpfs"
                );
                return false;
            }
            let mut cmd = Command::new("unshare");
            cmd.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg(format!(r#"mount -t tmpfs -o size={size} tmpfs /dev/shm || exit 77; exec "$0" "$@""#))
                .arg(std::env::current_exe().unwrap());
            cmd
        }
        None => Command::new(std::env::current_exe().unwrap()),
    };
    let (status, stdout, stderr) = run_alone(cmd, test, var, deadline);
    if status.code() == Some(77) {
        println!("skipping {test}: no private tmpfs ({stderr})");
        return false;
    }
    assert!(
        status.signal().is_none(),
        "{test}: killed by signal {:?} (SIGBUS is 7)\n{stdout}\n{stderr}",
        status.signal()
    );
    assert!(status.success(), "{test}: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test}: the re-run ran no test\n{stdout}\n{stderr}");
    false
}

/// Whether /dev/shm has at least `bytes` free; if not, prints a line
/// saying `test` is skipped. A container's /dev/shm is often small (64 MiB
/// by default under Docker): the few tests that need more than that skip
/// there instead of failing, and run in full on a host's /dev/shm.
pub fn dev_shm_has_room(test: &str, bytes: u64) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a pointer to writable memory of the right type.
    let free = if unsafe { libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()) } == 0 {
        // SAFETY: statvfs returned 0: it filled `st`.
        let st = unsafe { st.assume_init() };
        st.f_bavail.saturating_mul(st.f_frsize)
    } else {
        0
    };
    if free < bytes {
        println!("skipping {test}: needs {} MiB free in /dev/shm, {} MiB are", bytes >> 20, free >> 20);
    }
    free >= bytes
}

/// Whether `unshare -m` works here: root in a container without
/// `CAP_SYS_ADMIN` (a default Docker container) is refused a mount
/// namespace, and the tests that need one skip there instead of failing.
pub fn can_unshare_mounts() -> bool {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fills /dev/shm (a private tmpfs: see [`rerun_in_tmpfs`]) to its last
/// page with segments named `{prefix}-{n}`, of each size of `sizes` in
/// turn (largest first) until it is full; dropping the result frees it.
pub fn fill_dev_shm(prefix: &str, sizes: &[u64]) -> Vec<shmproc::RawSegment> {
    let mut filler = Vec::new();
    for &size in sizes {
        loop {
            match shmproc::RawSegment::create(&format!("{prefix}-{}", filler.len()), size) {
                Ok(seg) => filler.push(seg),
                Err(shmproc::OpenError::NoSpace { .. }) => break,
                Err(other) => panic!("filling /dev/shm: {other}"),
            }
        }
    }
    filler
}

/// The names in /dev/shm, sorted.
pub fn dev_shm_files() -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir("/dev/shm").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
