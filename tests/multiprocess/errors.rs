//! Every setup error, produced for real (several of them in another
//! process), plus ownership, persist and gc.

use std::path::PathBuf;
use std::time::Duration;

use libtest_mimic::Trial;
use shmproc::{Array, Barrier, Event, Kind, Lock, OpenError, Options, Value};

use crate::common::{Child, Roles, e, ensure, name};
use crate::trial;

pub const ROLES: Roles = &[
    ("expect_open_error", child_expect_open_error),
    ("create_and_wait_for_kill", child_create_and_wait_for_kill),
    ("create_persisted", child_create_persisted),
    ("open_and_exit", child_open_and_exit),
    ("create_unbounded_and_wait_for_kill", child_create_unbounded_and_wait_for_kill),
];

pub fn trials() -> Vec<Trial> {
    vec![
        trial("invalid_names_are_rejected", invalid_names),
        trial("create_existing_name_fails_with_already_exists", already_exists),
        trial("open_missing_name_fails_with_not_found", not_found),
        trial("open_with_wrong_kind_fails_in_other_process", wrong_kind),
        trial("open_with_wrong_element_type_fails_in_other_process", wrong_element_type),
        trial("open_with_unknown_layout_version_fails", layout_version),
        trial("open_truncated_segment_fails", truncated),
        trial("open_foreign_file_fails", foreign),
        trial("open_corrupted_header_fails", corrupted),
        trial("open_without_permission_fails", permission_denied),
        trial("open_of_half_initialised_segment_times_out", init_timeout),
        trial("bad_capacities_are_rejected", bad_capacity),
        trial("creator_unlinks_on_drop_and_openers_never_do", ownership),
        trial("persisted_segment_outlives_creator_and_gc_keeps_it", persist),
        trial("gc_removes_segments_of_dead_creators", gc_dead_creator),
        trial("a_creator_stopped_by_sigint_or_sigterm_leaves_segments_that_gc_removes", gc_after_sigint),
        trial("gc_removes_the_rings_of_an_unbounded_queue_whose_creator_was_killed", gc_unbounded),
    ]
}

/// Held by the tests that leave a dead creator's segment and call `gc`:
/// run in parallel, one test's `gc` removed another's segment before that
/// one looked at it.
static GC_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gc_tests() -> std::sync::MutexGuard<'static, ()> {
    GC_TESTS.lock().unwrap_or_else(|p| p.into_inner())
}

fn shm_path(user_name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/shmproc.{user_name}"))
}

/// args: what to open, name, expected error variant (Debug prefix).
fn child_expect_open_error(args: &[String]) -> Result<(), String> {
    let (what, n, want) = (&args[0], &args[1], &args[2]);
    let err = match what.as_str() {
        "event" => Event::open(n).err(),
        "lock" => Lock::open(n).err(),
        "value_u32" => Value::<u32>::open(n).err(),
        "value_i64" => Value::<i64>::open(n).err(),
        other => return Err(format!("unknown target {other}")),
    };
    let err = err.ok_or_else(|| format!("opening {n} as {what} succeeded"))?;
    ensure(format!("{err:?}").starts_with(want.as_str()), format!("expected {want}, got {err:?} ({err})"))
}

fn invalid_names() {
    for bad in ["", "a/b", "/lead", "nul\0byte"] {
        let err = Lock::create(bad).unwrap_err();
        assert!(matches!(err, OpenError::InvalidName { .. }), "{bad:?}: {err:?}");
        assert!(matches!(Lock::open(bad), Err(OpenError::InvalidName { .. })));
    }
    let long = "x".repeat(shmproc::MAX_NAME_LEN + 1);
    assert!(matches!(Event::create(&long), Err(OpenError::InvalidName { .. })));
    let longest = "y".repeat(shmproc::MAX_NAME_LEN);
    drop(Event::create(&longest).unwrap());
}

fn already_exists() {
    let a = Lock::create(&name("exists")).unwrap();
    assert!(matches!(Lock::create(a.name()), Err(OpenError::AlreadyExists(_))));
    // Also for another kind: the name is taken whatever it holds.
    assert!(matches!(Event::create(a.name()), Err(OpenError::AlreadyExists(_))));
}

fn not_found() {
    let err = Value::<u8>::open(&name("never-created")).unwrap_err();
    assert!(matches!(err, OpenError::NotFound(_)), "{err:?}");
}

fn wrong_kind() {
    let lock = Lock::create(&name("wrong-kind")).unwrap();
    Child::spawn("expect_open_error", &["event", lock.name(), "WrongKind"]).join_ok();
    match Event::open(lock.name()) {
        Err(e @ OpenError::WrongKind { expected: Kind::Event, found: Kind::Lock, .. }) => {
            // a/an by the kind (it read "not a Event").
            assert!(e.to_string().ends_with("is a Lock, not an Event"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let value = Value::create(&name("wrong-kind-value"), 1u8).unwrap();
    let e = Event::open(value.name()).unwrap_err();
    assert!(e.to_string().ends_with("is a Value, not an Event"), "{e}");
    let e = Array::<u8>::open(lock.name()).unwrap_err();
    assert!(e.to_string().ends_with("is a Lock, not an Array"), "{e}");
}

fn wrong_element_type() {
    let v = Value::create(&name("wrong-type"), 7u64).unwrap();
    // Different size...
    Child::spawn("expect_open_error", &["value_u32", v.name(), "IncompatibleType"]).join_ok();
    // ...and same size, different type.
    Child::spawn("expect_open_error", &["value_i64", v.name(), "IncompatibleType"]).join_ok();
    let msg = Value::<i64>::open(v.name()).unwrap_err().to_string();
    assert!(msg.contains("u64") && msg.contains("i64"), "{msg}");
    assert_eq!(Value::<u64>::open(v.name()).unwrap().get().unwrap(), 7);
}

/// Overwrites bytes of a live segment's file.
fn patch(user_name: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(shm_path(user_name)).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn layout_version() {
    let lock = Lock::create(&name("version")).unwrap();
    patch(lock.name(), 12, &99u32.to_le_bytes());
    match Lock::open(lock.name()) {
        // The current version (7 since a Condition counts its pending
        // notifications).
        Err(OpenError::LayoutVersion { found: 99, expected: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
    Child::spawn("expect_open_error", &["lock", lock.name(), "LayoutVersion"]).join_ok();
}

fn truncated() {
    let a = Array::<u64>::create(&name("truncated"), 1000).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(shm_path(a.name())).unwrap();
    f.set_len(4096).unwrap();
    match Array::<u64>::open(a.name()) {
        Err(OpenError::Truncated { actual: 4096, expected, .. }) => assert!(expected > 8000),
        other => panic!("{other:?}"),
    }
}

fn foreign() {
    let big = name("foreign-big");
    std::fs::write(shm_path(&big), "this is somebody else's file, not a shmproc segment. ".repeat(10)).unwrap();
    let small = name("foreign-small");
    std::fs::write(shm_path(&small), b"tiny").unwrap();
    let r1 = Lock::open(&big);
    let r2 = Lock::open(&small);
    std::fs::remove_file(shm_path(&big)).unwrap();
    std::fs::remove_file(shm_path(&small)).unwrap();
    assert!(matches!(r1, Err(OpenError::Foreign(_))), "{r1:?}");
    assert!(matches!(r2, Err(OpenError::Foreign(_))), "{r2:?}");
}

fn corrupted() {
    let b = Barrier::create(&name("corrupted"), 3).unwrap();
    // total_len (offset 48) no longer matches the layout.
    patch(b.name(), 48, &12345u64.to_le_bytes());
    assert!(matches!(Barrier::open(b.name()), Err(OpenError::Corrupted { .. })));
}

fn permission_denied() {
    let opts = Options::new().mode(0o600);
    let lock = Lock::create_with(&name("perm"), &opts).unwrap();
    let mode = std::fs::metadata(shm_path(lock.name())).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root bypasses permissions: try as user `nobody` in a forked child.
        // SAFETY: the child only calls async-signal-tolerant code paths of
        // glibc (setuid, shm_open via our crate) and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain syscalls in the child.
            let code = unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    2
                } else if matches!(Lock::open(lock.name()), Err(OpenError::PermissionDenied(_))) {
                    0
                } else {
                    1
                }
            };
            // SAFETY: leaving the forked child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child as nobody could open a 0600 segment");
    } else {
        std::fs::set_permissions(shm_path(lock.name()), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        assert!(matches!(Lock::open(lock.name()), Err(OpenError::PermissionDenied(_))));
    }
}

fn init_timeout() {
    let opts = Options::new().init_timeout(Duration::from_millis(100));
    // Created but never sized (creator died right after shm_open)...
    let empty = name("init-empty");
    std::fs::write(shm_path(&empty), b"").unwrap();
    // ...and sized and zeroed but never published.
    let zeroed = name("init-zeroed");
    std::fs::write(shm_path(&zeroed), vec![0u8; 4096]).unwrap();
    // ...and with the magic written but no READY.
    let half = name("init-half");
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"SHMPROC\x01");
    // Creator identity = this (live) process, as a real creator writes it
    // before the magic: so a concurrent gc() leaves the file alone.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    bytes[56..60].copy_from_slice(&std::process::id().to_le_bytes());
    bytes[64..72].copy_from_slice(&start.to_le_bytes());
    std::fs::write(shm_path(&half), bytes).unwrap();
    let results: Vec<_> = [&empty, &zeroed, &half].iter().map(|n| Event::open_with(n, &opts)).collect();
    for n in [&empty, &zeroed, &half] {
        std::fs::remove_file(shm_path(n)).unwrap();
    }
    for r in results {
        assert!(matches!(r, Err(OpenError::InitTimeout { .. })), "{r:?}");
    }
}

fn bad_capacity() {
    assert!(matches!(Barrier::new(0), Err(OpenError::InvalidArgument(_))));
    assert!(matches!(Array::<u64>::new(u64::MAX / 4), Err(OpenError::InvalidArgument(_))));
    // A header claiming an absurd capacity is refused on open.
    let a = Array::<u8>::create(&name("absurd"), 16).unwrap();
    patch(a.name(), 40, &(u64::MAX / 2).to_le_bytes());
    let r = Array::<u8>::open(a.name());
    assert!(matches!(r, Err(OpenError::Corrupted { .. })), "{r:?}");
}

fn child_open_and_exit(args: &[String]) -> Result<(), String> {
    let v = Value::<u32>::open(&args[0]).map_err(e)?;
    v.set(9).map_err(e)
}

fn ownership() {
    let v = Value::create(&name("owner"), 1u32).unwrap();
    let clone = v.clone();
    Child::spawn("open_and_exit", &[v.name()]).join_ok();
    assert!(shm_path(v.name()).exists(), "an opener removed the name");
    drop(v);
    assert!(shm_path(clone.name()).exists(), "removed while a handle is alive");
    assert_eq!(clone.get().unwrap(), 9);
    let path = shm_path(clone.name());
    drop(clone);
    assert!(!path.exists(), "the creator's last drop did not remove the name");
}

fn child_create_persisted(args: &[String]) -> Result<(), String> {
    let v = Value::create(&args[0], 77u32).map_err(e)?;
    v.persist();
    Ok(())
}

fn persist() {
    let _serial = gc_tests();
    let n = name("persist");
    Child::spawn("create_persisted", &[&n]).join_ok();
    let removed = shmproc::gc().unwrap();
    assert!(!removed.contains(&n), "gc removed a persisted segment");
    assert_eq!(Value::<u32>::open(&n).unwrap().get().unwrap(), 77);
    shmproc::unlink(&n).unwrap();
    assert!(matches!(Value::<u32>::open(&n), Err(OpenError::NotFound(_))));
}

fn child_create_and_wait_for_kill(args: &[String]) -> Result<(), String> {
    // The default actions, whatever this process inherited: a shell without
    // job control starts background commands with SIGINT ignored, and the
    // SIGINT test would then wait out its deadline.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: signal(2) with SIG_DFL, before any thread of ours could
        // depend on the disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _lock = Lock::create(&args[0]).map_err(e)?;
    Event::open(&args[1]).map_err(e)?.set();
    std::thread::sleep(Duration::from_secs(120));
    Err("was not killed".into())
}

fn gc_dead_creator() {
    let _serial = gc_tests();
    let n = name("gc-dead");
    let ready = Event::create(&name("gc-ready")).unwrap();
    let mut child = Child::spawn("create_and_wait_for_kill", &[&n, ready.name()]);
    assert!(ready.wait_timeout(Duration::from_secs(30)));
    assert!(!shmproc::gc().unwrap().contains(&n), "gc removed a live creator's segment");
    child.kill9();
    child.wait();
    assert!(shm_path(&n).exists());
    let removed = shmproc::gc().unwrap();
    assert!(removed.contains(&n), "gc left {n}: {removed:?}");
    assert!(!shm_path(&n).exists());
    // Our own live objects survive.
    assert!(shm_path(ready.name()).exists());
}

/// Newcomer report item 9 (documented behaviour): Ctrl-C's SIGINT or a
/// SIGTERM at the default action ends the creator without drops; shmproc
/// installs no handler, so the segment stays until `gc` removes it.
fn gc_after_sigint() {
    let _serial = gc_tests();
    use std::os::unix::process::ExitStatusExt;
    for (sig, tag) in [(libc::SIGINT, "int"), (libc::SIGTERM, "term")] {
        let n = name(&format!("gc-sig{tag}"));
        let ready = Event::create(&name(&format!("gc-sig{tag}-ready"))).unwrap();
        let mut child = Child::spawn("create_and_wait_for_kill", &[&n, ready.name()]);
        assert!(ready.wait_timeout(Duration::from_secs(30)));
        // SAFETY: kill(2) on our own unreaped child; no memory involved.
        assert_eq!(unsafe { libc::kill(child.pid() as libc::pid_t, sig) }, 0);
        assert_eq!(child.wait().signal(), Some(sig), "no handler: the signal's default action");
        assert!(shm_path(&n).exists(), "the segment is left behind");
        let removed = shmproc::gc().unwrap();
        assert!(removed.contains(&n), "gc left {n}: {removed:?}");
        assert!(!shm_path(&n).exists());
    }
}

/// args: queue name, ready event. Creates an unbounded queue and fills it
/// past several rings (none drained), then waits to be killed.
fn child_create_unbounded_and_wait_for_kill(args: &[String]) -> Result<(), String> {
    let q = shmproc::Queue::<u64>::create(&args[0], 0).map_err(e)?;
    for i in 0..40_000 {
        q.put_nowait(i).map_err(e)?;
    }
    Event::open(&args[1]).map_err(e)?.set();
    std::thread::sleep(Duration::from_secs(120));
    Err("was not killed".into())
}

/// The names in /dev/shm of the unbounded queue `n` (control and rings).
fn segments_of(n: &str) -> Vec<String> {
    let prefix = format!("shmproc.{n}");
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|d| d.ok()?.file_name().into_string().ok())
        .filter(|f| *f == prefix || f.starts_with(&format!("{prefix}.")))
        .collect();
    v.sort();
    v
}

/// An unbounded queue's rings are created persisted (its producers may
/// exit before they are drained): `gc` skipped them, so a creator killed
/// with SIGKILL left every ring in /dev/shm for good. Now `gc` removes the
/// queue with its rings once no live process holds it, and keeps both
/// while one does (here: this process, until it drops its handle).
fn gc_unbounded() {
    let _serial = gc_tests();
    for held in [false, true] {
        let n = name(&format!("gc-unbounded-{held}"));
        let ready = Event::create(&name(&format!("gc-unbounded-{held}-ready"))).unwrap();
        let mut child = Child::spawn("create_unbounded_and_wait_for_kill", &[&n, ready.name()]);
        assert!(ready.wait_timeout(Duration::from_secs(30)), "the child did not fill its queue");
        let holder = held.then(|| shmproc::Queue::<u64>::open(&n).unwrap());
        child.kill9();
        child.wait();
        let before = segments_of(&n);
        assert!(before.len() >= 4, "a control segment and several rings: {before:?}");
        let removed = shmproc::gc().unwrap();
        if let Some(q) = holder {
            assert!(!removed.iter().any(|r| r.starts_with(&n)), "gc removed a held queue's segments: {removed:?}");
            assert_eq!(q.get_nowait(), Ok(0), "the held queue still works");
            drop(q);
            // The last holder took the rings; the name goes with the next gc.
            shmproc::gc().unwrap();
        }
        let left = segments_of(&n);
        for f in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
        assert_eq!(left, Vec::<String>::new(), "left in /dev/shm after gc (held: {held}); before: {before:?}");
    }
}
