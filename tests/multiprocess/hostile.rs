//! Hostile environments: a full /dev/shm, names squatted by another user,
//! foreign files in /dev/shm, extreme arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use libtest_mimic::Trial;
use shmproc::queue::SpscQueue;
use shmproc::{Array, Lock, OpenError, Options, RawSegment, Value};

use crate::common::{Child, Roles, e, ensure, name};
use crate::trial;

/// Exit code of a child that could not set up its environment (skip).
const SKIP: i32 = 77;
/// The user and group `nobody`.
const NOBODY: u32 = 65534;

pub const ROLES: Roles = &[
    ("small_tmpfs_create", child_small_tmpfs_create),
    ("small_tmpfs_sparse", child_small_tmpfs_sparse),
    ("open_squatted", child_open_squatted),
];

pub fn trials() -> Vec<Trial> {
    vec![
        trial("create_larger_than_free_dev_shm_fails_with_no_space", no_space),
        trial("open_and_gc_of_a_sparse_segment_on_a_full_dev_shm_do_not_sigbus", sparse_on_full),
        trial("open_refuses_a_segment_squatted_by_another_user", squatted),
        trial("open_accepts_another_owner_only_when_options_name_it", trusted_owner),
        trial("own_segment_widened_to_0666_still_opens", own_widened),
        trial("gc_leaves_foreign_files_alone", gc_foreign),
        trial("huge_offsets_are_bounds_checked_not_ub", huge_offsets),
        trial("init_timeout_duration_max_waits_forever_without_panic", init_timeout_max),
    ]
}

fn shm_path(user_name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/shmproc.{user_name}"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Puts a private 2 MiB tmpfs on /dev/shm (a private mount namespace); the
/// process must be single-threaded. Exits with SKIP if that is refused.
fn private_small_dev_shm() {
    // SAFETY: plain syscalls with valid, NUL-terminated arguments; this process is single-threaded (the role
    // runs before the test harness starts), as unshare(CLONE_NEWNS) requires.
    let setup = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(c"tmpfs".as_ptr(), c"/dev/shm".as_ptr(), c"tmpfs".as_ptr(), 0, c"size=2m".as_ptr().cast())
                == 0
    };
    if !setup {
        eprintln!("skipping: no private tmpfs ({})", std::io::Error::last_os_error());
        std::process::exit(SKIP);
    }
}

/// Runs in its own (single-threaded) process: a private 2 MiB tmpfs on
/// /dev/shm, then creations that do not fit.
fn child_small_tmpfs_create(args: &[String]) -> Result<(), String> {
    let n = &args[0];
    private_small_dev_shm();
    // 8 MiB does not fit in 2 MiB: an error, not a SIGBUS now or on first touch.
    let r = Array::<u8>::create(&format!("{n}-array"), 8 << 20);
    ensure(matches!(r, Err(OpenError::NoSpace { .. })), format!("8 MiB Array on a 2 MiB tmpfs: {r:?}"))?;
    let r = SpscQueue::<[u8; 4096]>::create(&format!("{n}-spsc"), 1024);
    ensure(matches!(r, Err(OpenError::NoSpace { .. })), format!("4 MiB SpscQueue on a 2 MiB tmpfs: {r:?}"))?;
    // An 8 TiB sparse segment is refused too.
    let r = RawSegment::create(&format!("{n}-huge"), 8 << 40);
    ensure(matches!(r, Err(OpenError::NoSpace { .. })), format!("8 TiB RawSegment: {r:?}"))?;
    ensure(std::fs::read_dir("/dev/shm").map_err(e)?.next().is_none(), "a failed create left a file behind")?;
    // What fits works, to its last byte.
    let fits = RawSegment::create(&format!("{n}-fits"), 1 << 20).map_err(e)?;
    ensure(fits.write(fits.len() - 1, &[7]) == 1, "last byte of a segment that fits")?;
    Ok(())
}

/// Runs in its own (single-threaded) process: a private 2 MiB tmpfs on
/// /dev/shm, filled up; then a sparse file of ours under a segment name (a
/// creator killed between sizing and reserving its file leaves one; so
/// does `truncate -s`). Reading a hole of a tmpfs file through a shared
/// mapping allocates a page: on a full /dev/shm that is a SIGBUS.
fn child_small_tmpfs_sparse(args: &[String]) -> Result<(), String> {
    let n = &args[0];
    private_small_dev_shm();
    let sparse = format!("{n}-sparse");
    let f = std::fs::File::create(shm_path(&sparse)).map_err(e)?;
    f.set_len(64 << 10).map_err(e)?;
    // Fill /dev/shm to the last page.
    let mut filler = Vec::new();
    for size in [1 << 18, 1 << 14, 1] {
        loop {
            match RawSegment::create(&format!("{n}-fill{}", filler.len()), size) {
                Ok(seg) => filler.push(seg),
                Err(OpenError::NoSpace { .. }) => break,
                Err(other) => return Err(format!("filling /dev/shm: {other}")),
            }
        }
    }
    let removed = shmproc::gc().map_err(e)?;
    ensure(removed.is_empty(), format!("gc removed {removed:?}"))?;
    // A segment whose pages were reserved at create opens on a full
    // /dev/shm (its data pages are reserved though never written).
    let peer = RawSegment::open(filler[0].name()).map_err(e)?;
    ensure(peer.write(peer.len() - 1, &[1]) == 1, "last byte of a reserved segment")?;
    let r = Value::<u32>::open(&sparse);
    ensure(matches!(r, Err(OpenError::NoSpace { .. })), format!("open of a sparse file on a full /dev/shm: {r:?}"))?;
    // With room again, the same file is an unfinished segment, not a crash.
    drop(filler);
    let opts = Options::new().init_timeout(Duration::from_millis(10));
    let r = Value::<u32>::open_with(&sparse, &opts);
    ensure(matches!(r, Err(OpenError::InitTimeout { .. })), format!("open of a zero-filled file: {r:?}"))?;
    Ok(())
}

/// Runs child `role` with a fresh name; it needs root for a private tmpfs.
fn run_small_tmpfs_child(test: &str, role: &str) {
    if !is_root() {
        println!("skipping {test}: needs root for a private tmpfs");
        return;
    }
    let mut child = Child::spawn(role, &[&name("tmpfs")]);
    let st = child.wait();
    use std::os::unix::process::ExitStatusExt;
    assert!(st.signal().is_none(), "child killed by signal {:?} (SIGBUS is 7)", st.signal());
    if st.code() == Some(SKIP) {
        println!("skipping {test}: unshare/mount refused");
        return;
    }
    assert!(st.success(), "child exited with {st:?}");
}

fn no_space() {
    run_small_tmpfs_child("create_larger_than_free_dev_shm_fails_with_no_space", "small_tmpfs_create");
}

fn sparse_on_full() {
    run_small_tmpfs_child("open_and_gc_of_a_sparse_segment_on_a_full_dev_shm_do_not_sigbus", "small_tmpfs_sparse");
}

/// args: name. Opens a squatted segment the ways a victim would.
fn child_open_squatted(args: &[String]) -> Result<(), String> {
    let n = &args[0];
    let r = Value::<u32>::open(n);
    ensure(matches!(r, Err(OpenError::ForeignOwner { uid: NOBODY, .. })), format!("open: {r:?}"))?;
    let r = Value::<u32>::open_or_create(n, 5);
    ensure(matches!(r, Err(OpenError::ForeignOwner { uid: NOBODY, .. })), format!("open_or_create: {r:?}"))?;
    Ok(())
}

/// A real Value segment left as `name`, then given to `nobody`, mode 0666.
fn squat(n: &str) {
    let v = Value::create_with(n, 41u32, &Options::new().mode(0o666)).unwrap();
    v.persist();
    drop(v);
    std::os::unix::fs::chown(shm_path(n), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(shm_path(n), std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn squatted() {
    if !is_root() {
        println!("skipping open_refuses_a_segment_squatted_by_another_user: needs root to chown");
        return;
    }
    let n = name("squatted");
    squat(&n);
    let child = Child::spawn("open_squatted", &[&n]);
    let st = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child.join_ok()));
    let here = Value::<u32>::open_or_create(&n, 5);
    let msg = here.as_ref().err().map(ToString::to_string).unwrap_or_default();
    std::fs::remove_file(shm_path(&n)).unwrap();
    st.unwrap();
    assert!(matches!(here, Err(OpenError::ForeignOwner { .. })), "{here:?}");
    assert!(msg.contains("65534") && msg.contains("trust_owner"), "{msg}");
}

fn trusted_owner() {
    if !is_root() {
        println!("skipping open_accepts_another_owner_only_when_options_name_it: needs root to chown");
        return;
    }
    let n = name("trusted");
    squat(&n);
    let named = Value::<u32>::open_with(&n, &Options::new().trust_owner(NOBODY)).map(|_| ());
    let wide = Value::<u32>::open_with(&n, &Options::new().trust_owner(NOBODY).mode(0o666)).map(|v| v.get().unwrap());
    let group = Value::<u32>::open_with(&n, &Options::new().trust_group(NOBODY).mode(0o606)).map(|v| v.get().unwrap());
    std::fs::set_permissions(shm_path(&n), std::fs::Permissions::from_mode(0o644)).unwrap();
    let safe = Value::<u32>::open_with(&n, &Options::new().trust_owner(NOBODY)).map(|v| v.get().unwrap());
    std::fs::remove_file(shm_path(&n)).unwrap();
    // Trusting the owner is not trusting everybody who can write the file.
    assert!(matches!(named, Err(OpenError::InsecureMode { mode: 0o666, .. })), "{named:?}");
    assert_eq!(wide.unwrap(), 41);
    assert_eq!(group.unwrap(), 41);
    assert_eq!(safe.unwrap(), 41);
}

fn own_widened() {
    let n = name("widened");
    let opts = Options::new().mode(0o666);
    let v = Value::create_with(&n, 3u32, &opts).unwrap();
    let mode = std::fs::metadata(shm_path(&n)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    assert_eq!(Value::<u32>::open(&n).unwrap().get().unwrap(), 3);
    assert_eq!(Value::<u32>::open_with(&n, &opts).unwrap().get().unwrap(), 3);
    assert_eq!(Value::<u32>::open_or_create(&n, 9).unwrap().get().unwrap(), 3);
    drop(v);
}

/// Sets a file's times to an hour ago (so no "recently created" grace
/// period protects it), without opening it (a FIFO would block).
fn age(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let old = libc::timespec { tv_sec: now.tv_sec - 3600, tv_nsec: 0 };
    let times = [old, old];
    // SAFETY: NUL-terminated path, two valid timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

fn gc_foreign() {
    let short = name("gc-foreign-short");
    std::fs::write(shm_path(&short), b"SHMP").unwrap();
    let zeroed = name("gc-foreign-zeroed");
    std::fs::write(shm_path(&zeroed), vec![0u8; 4096]).unwrap();
    let empty = name("gc-foreign-empty");
    std::fs::write(shm_path(&empty), b"").unwrap();
    let fifo = name("gc-foreign-fifo");
    let c = std::ffi::CString::new(shm_path(&fifo).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Our magic with a dead "creator" but another layout version: not provably ours.
    let other_version = name("gc-foreign-version");
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"SHMPROC\x01");
    bytes[12..16].copy_from_slice(&999u32.to_le_bytes());
    bytes[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(shm_path(&other_version), bytes).unwrap();
    let all = [&short, &zeroed, &empty, &fifo, &other_version];
    for n in all {
        age(&shm_path(n));
    }
    let removed = shmproc::gc();
    let survivors: Vec<bool> = all.iter().map(|n| std::fs::symlink_metadata(shm_path(n)).is_ok()).collect();
    for n in all {
        let _ = std::fs::remove_file(shm_path(n));
    }
    let removed = removed.unwrap();
    for (n, alive) in all.iter().zip(survivors) {
        assert!(alive && !removed.contains(n), "gc removed foreign file {n}");
    }
}

fn huge_offsets() {
    let seg = RawSegment::new(64).unwrap();
    let mut buf = [1u8; 8];
    assert_eq!(seg.read(usize::MAX, &mut buf), 0);
    assert_eq!(seg.write(usize::MAX, &buf), 0);
    assert_eq!(seg.read(usize::MAX - 3, &mut buf), 0);
    assert_eq!(seg.read(65, &mut buf), 0);
    assert_eq!(seg.read(60, &mut buf), 4);
    assert_eq!(buf, [0, 0, 0, 0, 1, 1, 1, 1]);
    let a = Array::<u64>::new(4).unwrap();
    let mut g = a.get_lock().unwrap();
    let mut out = [0u64; 2];
    assert_eq!(g.read(usize::MAX, &mut out), 0);
    assert_eq!(g.write(usize::MAX, &out), 0);
    assert_eq!(g.get(usize::MAX), None);
    assert!(!g.set(usize::MAX, 1));
}

fn init_timeout_max() {
    let opts = Options::new().init_timeout(Duration::MAX);
    let lock = Lock::new().unwrap();
    assert!(Lock::open_with(lock.name(), &opts).is_ok());
    let missing = Lock::open_with(&name("init-max-missing"), &opts);
    assert!(matches!(missing, Err(OpenError::NotFound(_))), "{missing:?}");
    // A segment never published: open must keep waiting (forever), not
    // panic or give up at once. Watch it from another thread for a while.
    let n = name("init-max-half");
    std::fs::write(shm_path(&n), vec![0u8; 4096]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let n2 = n.clone();
    std::thread::spawn(move || {
        let r =
            std::panic::catch_unwind(|| Lock::open_with(&n2, &Options::new().init_timeout(Duration::MAX)).map(drop));
        let _ = tx.send(r.map_err(|_| "panicked"));
    });
    let early = rx.recv_timeout(Duration::from_millis(300));
    // Let the waiter finish: make the file foreign (bad magic) so it returns. Overwritten in place, not
    // truncated and rewritten (`fs::write`): the waiter reads the header through its mapping, and a moment
    // at length 0 made that read a SIGBUS (seen once in a CI run), as the README says of truncated files.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(shm_path(&n)).unwrap();
        f.write_all_at(&[0xffu8; 4096], 0).unwrap();
    }
    let late = rx.recv_timeout(Duration::from_secs(60));
    std::fs::remove_file(shm_path(&n)).unwrap();
    assert!(early.is_err(), "open with Duration::MAX returned early: {early:?}");
    assert!(matches!(late, Ok(Ok(Err(OpenError::Foreign(_))))), "{late:?}");
}
