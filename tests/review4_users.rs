//! Review 4: other users on the same host. /dev/shm is world-writable
//! (mode 1777) and world-listable, so another uid sees every segment name
//! and can create any name that does not exist yet.
//!
//! The other user is played by root giving a file to `nobody` (65534):
//! the tests skip when not run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use shmproc::{PutTimeoutError, Queue, TryPutError};

mod common;

const NOBODY: u32 = 65534;

/// Whether this test binary can run as other users (root, setpriv, and an
/// executable path that `nobody` may reach); the tests that need it skip
/// otherwise.
fn can_run_as_others() -> bool {
    is_root()
        && std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn unique(tag: &str) -> String {
    format!("review4-{tag}-{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos())
}

/// The /dev/shm paths of the user names starting with `prefix`.
fn files_starting_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix("shmproc.").map(str::to_owned))
        .filter(|u| u.starts_with(prefix))
        .collect()
}

/// Creates `/dev/shm/shmproc.<user_name>` as `nobody`'s, mode 0644 (what
/// another user can do to any name that does not exist yet).
struct Squat(PathBuf);

impl Squat {
    fn new(user_name: &str) -> Squat {
        let p = PathBuf::from(format!("/dev/shm/shmproc.{user_name}"));
        std::fs::write(&p, [0u8; 4096]).unwrap();
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        Squat(p)
    }
}

impl Drop for Squat {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An unbounded queue's rings were named `<name>.<generation>.<k>`; the
/// generation is random, but the name of ring 0 shows it to anyone who
/// lists /dev/shm, so another user could create ring 1's name first. The
/// chain then could not grow (its link of ring 1 failed with EEXIST and
/// the file there is not trusted): every put past ring 0 reported Full,
/// and a blocking `put` waited forever, with 1 GiB of budget unused (seen
/// failing). Ring names now end in a tag keyed by a secret in the control
/// block, so the next ring's name cannot be derived from the listed ones.
#[test]
fn review4_unbounded_queue_with_a_squatted_ring_name_is_not_full_forever() {
    if !is_root() {
        println!("skipping: needs root to give a file to another user");
        return;
    }
    let name = unique("chain-squat");
    let q = Queue::<u64>::create(&name, 0).unwrap();
    let rings = files_starting_with(&format!("{name}."));
    assert_eq!(rings.len(), 1, "{rings:?}");
    // Ring 0 is `<name>.<generation>.0.<tag>`: an attacker who lists
    // /dev/shm knows everything but ring 1's tag (a keyed hash under a key
    // only the queue's users can read). It squats its best guesses.
    let (stem, tag0) = rings[0].rsplit_once(".0.").expect("ring 0's name: <stem>.0.<tag>");
    assert_eq!(tag0.len(), 16, "{rings:?}");
    let tag0_plus_1 = format!("{:016x}", u64::from_str_radix(tag0, 16).unwrap().wrapping_add(1));
    let _squats: Vec<Squat> = [format!("{stem}.1"), format!("{stem}.1.{tag0}"), format!("{stem}.1.{tag0_plus_1}")]
        .iter()
        .map(|n| Squat::new(n))
        .collect();
    let mut n = 0u64;
    let full = loop {
        match q.put_nowait(n) {
            Ok(()) => n += 1,
            Err(e) => break Some(e),
        }
        if n == 200_000 {
            break None;
        }
    };
    let blocking = q.put_timeout(u64::MAX, Duration::from_millis(200));
    for i in 0..n {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    drop(q);
    assert!(full.is_none(), "put {n} of an unbounded queue (1 GiB budget) with ring 1's name squatted: {full:?}");
    assert!(
        !matches!(blocking, Err(PutTimeoutError::TimedOut(_))),
        "a blocking put would wait forever on a squatted ring name"
    );
    let _ = TryPutError::<u64>::Full(0);
}

/// Set (to a queue name) in the re-run that plays the other user.
const AS_NOBODY: &str = "SHMPROC_REVIEW4_AS_NOBODY";

/// Runs `test` again as `nobody` (setpriv), with `AS_NOBODY=arg`; returns
/// its output once it ends (deadline: 60 s).
fn run_as_nobody(test: &str, arg: &str) -> (std::process::ExitStatus, String) {
    run_as(NOBODY, test, arg)
}

/// The command that runs `test` again as user (and group) `uid`, with
/// `AS_NOBODY=arg`, its output piped.
fn command_as(uid: u32, test: &str, arg: &str) -> std::process::Command {
    use std::process::{Command, Stdio};
    let id = uid.to_string();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(AS_NOBODY, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// [`run_as_nobody`] as user (and group) `uid`.
fn run_as(uid: u32, test: &str, arg: &str) -> (std::process::ExitStatus, String) {
    let mut child = command_as(uid, test, arg).stdin(std::process::Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Two users share an unbounded queue the documented way (mode 0o666,
/// each trusting the other's uid). When the other user's put grows the
/// chain, ring 1 is the other user's file: the creator must still get
/// every item, in order.
#[test]
fn review4_unbounded_queue_shared_with_another_user_who_grows_the_chain() {
    const N: u64 = 20_000;
    let test = "review4_unbounded_queue_shared_with_another_user_who_grows_the_chain";
    if let Ok(name) = std::env::var(AS_NOBODY) {
        // The other user: open, put enough to need more rings.
        let opts = shmproc::Options::new().mode(0o666).trust_owner(0);
        let q = Queue::<u64>::open_with(&name, &opts).unwrap();
        for i in 0..N {
            q.put_timeout(i, Duration::from_secs(30)).unwrap();
        }
        return;
    }
    if !can_run_as_others() {
        println!("skipping: needs root and setpriv to run as another user");
        return;
    }
    let name = unique("chain-shared");
    let opts = shmproc::Options::new().mode(0o666).trust_owner(NOBODY);
    let q = Queue::<u64>::create_with(&name, 0, &opts).unwrap();
    let (st, out) = run_as_nobody(test, &name);
    let owners: Vec<(String, u32)> = files_starting_with(&format!("{name}."))
        .into_iter()
        .map(|f| {
            let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/dev/shm/shmproc.{f}")).unwrap());
            (f, uid)
        })
        .collect();
    println!("rings and owners after the other user's puts: {owners:?}");
    let mut got = Vec::new();
    let err = loop {
        match q.get_nowait() {
            Ok(v) => got.push(v),
            Err(e) => break e,
        }
    };
    drop(q);
    // Rings the other user made and our drop could not remove (sticky /dev/shm).
    let left = files_starting_with(&name);
    for f in &left {
        let _ = std::fs::remove_file(format!("/dev/shm/shmproc.{f}"));
    }
    assert!(st.success() && out.contains("1 passed"), "the other user's puts: {st:?}\n{out}");
    assert_eq!(got.len() as u64, N, "got {} of {N} items, then {err:?}; rings and owners: {owners:?}", got.len());
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as u64));
}

/// The options of the two users' shared queue, as seen by `role`'s
/// user: mode 0o666, trusting the other one (the producer is `NOBODY`,
/// trusting `OTHER`; the creator and drainer are `OTHER`).
fn two_user_opts(producer: bool) -> shmproc::Options {
    shmproc::Options::new().mode(0o666).trust_owner(if producer { OTHER } else { NOBODY })
}

/// The producer's part in the two-user queue tests: opens `name` and puts
/// 0..n; returns the handle (a caller may hold it).
fn two_user_queue_put(name: &str, n: u64) -> Queue<u64> {
    let q = Queue::<u64>::open_with(name, &two_user_opts(true)).unwrap();
    for i in 0..n {
        q.put_timeout(i, Duration::from_secs(30)).unwrap();
    }
    q
}

/// The creator's parts in the two-user queue tests: `create` (persisted,
/// unbounded) or `drain` (gets 0..n in order, then removes the queue).
fn two_user_queue_role(role: &str, name: &str, n: u64) {
    let opts = two_user_opts(false);
    match role {
        "create" => Queue::<u64>::create_with(name, 0, &opts).unwrap().persist(),
        "drain" => {
            let q = Queue::<u64>::open_with(name, &opts).unwrap();
            for i in 0..n {
                assert_eq!(q.get_nowait().unwrap(), i);
            }
            drop(q);
            shmproc::unlink(name).unwrap();
        }
        _ => unreachable!("role {role}"),
    }
}

/// A second user that is not root (the queue's creator in the test below).
const OTHER: u32 = 65533;

/// Two ordinary users share a persisted unbounded queue (mode 0o666, each
/// trusting the other). The second user's puts grow the chain, so rings 1
/// and 2 are its files. The creator drains the queue (retiring those
/// rings: their names are to be removed) and unlinks the queue. In the
/// sticky /dev/shm the creator cannot remove another user's files, so the
/// retired rings' names, and their memory, stayed behind for good: no `gc`
/// of either user removed them (they were persisted, and the control
/// segment was gone); seen failing: "left in /dev/shm after the queue was
/// drained and unlinked: [(\"...71ef4df5.2.1c0c85e94dbdecc9\", 65534),
/// (\"...71ef4df5.1.cc12168f260f5662\", 65534)]".
///
/// Only a file's owner (or root) may remove it from /dev/shm, so the
/// other user has to come back: the creator now gives those rings up to
/// their owner (their persist flag cleared), and the owner's next `gc()`
/// removes them (the process that made them is gone). That `gc` is the
/// last step here; the memory goes with the names (nobody maps them).
#[test]
fn review4_unbounded_queue_shared_by_two_users_leaves_no_ring_behind() {
    const N: u64 = 20_000;
    let test = "review4_unbounded_queue_shared_by_two_users_leaves_no_ring_behind";
    if let Ok(arg) = std::env::var(AS_NOBODY) {
        let (role, name) = arg.split_once(':').unwrap();
        match role {
            "put" => drop(two_user_queue_put(name, N)),
            "gc" => {
                let removed = shmproc::gc().unwrap();
                println!("the owner's gc removed {removed:?}");
            }
            _ => two_user_queue_role(role, name, N),
        }
        return;
    }
    if !can_run_as_others() {
        println!("skipping: needs root and setpriv to run as two other users");
        return;
    }
    let name = unique("chain-two-users");
    let mut log = String::new();
    let steps = [(OTHER, "create"), (NOBODY, "put"), (OTHER, "drain"), (NOBODY, "gc")];
    for (uid, role) in steps {
        let (st, out) = run_as(uid, test, &format!("{role}:{name}"));
        log += &format!("{role} as {uid}: {st:?}\n");
        if !st.success() || !out.contains("1 passed") {
            log += &out;
            break;
        }
    }
    let left = remove_files_starting_with(&name);
    assert_eq!(log.lines().count(), steps.len(), "a step failed:\n{log}");
    assert!(left.is_empty(), "left in /dev/shm after the queue was drained and unlinked: {left:?}\n{log}");
}

/// As above, but the other user's producer is still attached when the
/// creator drains the queue and unlinks it: the creator gives up the
/// rings that producer made (retired ring 1, and ring 2 left when the
/// queue was unlinked), and the producer removes them when it drops its
/// handle; no `gc` is needed (the producer, their creator, is alive
/// until then, so its user's `gc` would leave them). Seen failing
/// without that drop's sweep: "left in /dev/shm after the producer
/// dropped its handle: [(\"...25057900.2.9b6fa773571a4197\", 65534),
/// (\"...25057900.1.fa23c31517802b44\", 65534)]".
#[test]
fn review4_unbounded_queue_rings_given_up_are_removed_by_their_makers_drop() {
    /// What the producer prints once its items are in.
    const PUT_DONE: &str = "PUT-DONE";
    use std::io::{BufRead, Write};
    const N: u64 = 20_000;
    let test = "review4_unbounded_queue_rings_given_up_are_removed_by_their_makers_drop";
    if let Ok(arg) = std::env::var(AS_NOBODY) {
        let (role, name) = arg.split_once(':').unwrap();
        match role {
            "put-and-hold" => {
                let q = two_user_queue_put(name, N);
                println!("{PUT_DONE}");
                std::io::stdout().flush().unwrap();
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                drop(q);
            }
            _ => two_user_queue_role(role, name, N),
        }
        return;
    }
    if !can_run_as_others() {
        println!("skipping: needs root and setpriv to run as two other users");
        return;
    }
    let name = unique("chain-given-up");
    let (st, out) = run_as(OTHER, test, &format!("create:{name}"));
    let mut log = format!("create as {OTHER}: {st:?}\n{out}");
    let mut hold =
        command_as(NOBODY, test, &format!("put-and-hold:{name}")).stdin(std::process::Stdio::piped()).spawn().unwrap();
    // The harness prints its own text first: read up to PUT_DONE (or the
    // end), in a thread, so a producer that hangs cannot hang the test.
    let out = hold.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(out);
        let mut all = String::new();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) != 0 {
            if line.contains(PUT_DONE) {
                let _ = tx.send(());
            }
            all += &std::mem::take(&mut line);
        }
        all
    });
    let put = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let rings_while_held = files_starting_with(&name).len();
    let drained = put.then(|| run_as(OTHER, test, &format!("drain:{name}")));
    drop(hold.stdin.take());
    let start = std::time::Instant::now();
    while hold.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = hold.kill();
    let held = hold.wait_with_output().unwrap();
    let rest = reader.join().unwrap();
    log += &format!("put-and-hold as {NOBODY}: {:?}\n{rest}{}\n", held.status, String::from_utf8_lossy(&held.stderr));
    let left = remove_files_starting_with(&name);
    let Some((dst, dout)) = drained else { panic!("the producer did not put:\n{log}") };
    assert!(dst.success() && dout.contains("1 passed"), "the drain: {dst:?}\n{dout}\n{log}");
    assert!(held.status.success() && rest.contains("1 passed"), "{log}");
    assert!(rings_while_held >= 3, "the producer did not grow the chain: {rings_while_held} files\n{log}");
    assert!(left.is_empty(), "left in /dev/shm after the producer dropped its handle: {left:?}\n{log}");
}

/// Removes the /dev/shm files of the user names starting with `prefix`;
/// returns them with their owners.
fn remove_files_starting_with(prefix: &str) -> Vec<(String, u32)> {
    let left: Vec<(String, u32)> = files_starting_with(prefix)
        .into_iter()
        .map(|f| {
            let uid = std::fs::metadata(format!("/dev/shm/shmproc.{f}"))
                .map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m));
            (f, uid)
        })
        .collect();
    for (f, _) in &left {
        let _ = std::fs::remove_file(format!("/dev/shm/shmproc.{f}"));
    }
    left
}

/// Set in the re-runs of the hidepid test: which part this process plays.
const ROLE: &str = "SHMPROC_REVIEW4_ROLE";

/// `/proc` mounted with `hidepid=2` (a common hardening): an ordinary
/// user sees no `/proc/<pid>` of another user's processes. A lock shared
/// by two users (mode 0o666, each trusting the other) is held by one; the
/// other must find it held (WouldBlock, TimedOut), not take it over as if
/// its owner had died because its `/proc` entry cannot be seen.
#[test]
fn review4_lock_held_by_another_user_is_not_taken_over_under_hidepid() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let test = "review4_lock_held_by_another_user_is_not_taken_over_under_hidepid";
    let role = std::env::var(ROLE).unwrap_or_default();
    let lock_opts = |other: u32| shmproc::Options::new().mode(0o666).trust_owner(other);
    let exe = std::env::current_exe().unwrap();
    let rerun = |cmd: &mut Command, role: String| {
        cmd.arg(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    match role.split_once(':') {
        Some(("hold", name)) => {
            let l = shmproc::Lock::create_with(name, &lock_opts(OTHER)).unwrap();
            let g = l.lock().unwrap();
            println!("locked");
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(g);
            return;
        }
        Some(("take", name)) => {
            let l = shmproc::Lock::open_with(name, &lock_opts(NOBODY)).unwrap();
            let t = l.try_lock().map(drop);
            let w = l.lock_timeout(Duration::from_millis(200)).map(drop);
            let ok = matches!(t, Err(shmproc::LockError::WouldBlock)) && matches!(w, Err(shmproc::LockError::TimedOut));
            assert!(ok, "a lock held by a live process of another user: try_lock {t:?}, lock_timeout {w:?}");
            return;
        }
        Some(("orchestrate", name)) => {
            let mut hold = rerun(
                Command::new("setpriv").args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]),
                format!("hold:{name}"),
            );
            // The harness prints its own lines first: read up to "locked" (or the end).
            let mut first = String::new();
            let mut r = std::io::BufReader::new(hold.stdout.as_mut().unwrap());
            while !first.contains("locked") {
                first.clear();
                if r.read_line(&mut first).unwrap() == 0 {
                    break;
                }
            }
            let take = rerun(
                Command::new("setpriv").args(["--reuid", "65533", "--regid", "65533", "--clear-groups"]),
                format!("take:{name}"),
            )
            .wait_with_output()
            .unwrap();
            drop(hold.stdin.take());
            let _ = hold.wait();
            let _ = std::fs::remove_file(format!("/dev/shm/shmproc.{name}"));
            assert!(first.contains("locked"), "the holder did not lock: {first:?}");
            let out = String::from_utf8_lossy(&take.stdout).into_owned() + &String::from_utf8_lossy(&take.stderr);
            assert!(take.status.success() && out.contains("1 passed"), "{out}");
            return;
        }
        _ => {}
    }
    if !can_run_as_others() || !common::can_unshare_mounts() {
        println!("skipping: needs root, setpriv and a mount namespace (unshare -m)");
        return;
    }
    let name = unique("hidepid-lock");
    let mut sh = Command::new("unshare");
    std::os::unix::process::CommandExt::process_group(&mut sh, 0);
    sh.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t proc -o hidepid=2 proc /proc || exit 77; exec "$0" "$@""#);
    let mut child = rerun(&mut sh, format!("orchestrate:{name}"));
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            // The whole group: the holder and the taker run under it.
            // SAFETY: kill of our own child's process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = std::fs::remove_file(format!("/dev/shm/shmproc.{name}"));
            panic!("the hidepid test hung past 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        println!("skipping: cannot mount /proc with hidepid: {text}");
        return;
    }
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}
