//! Review 19: other users, hostile peers and resource exhaustion (huge
//! element types and capacities, limits). Every blocking step has a deadline.

mod common;

use std::time::Duration;

use shmproc::{Array, OpenError, Pod, Zeroable};

const INNER: &str = "SHMPROC_REVIEW19_INNER";

/// An element type of 4 GiB + 4 KiB: its size does not fit the `u32` a
/// segment header records.
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "shmproc::bytemuck")]
#[repr(C)]
struct Huge {
    gib4: [[[u8; 4096]; 4096]; 256],
    page: [u8; 4096],
}
shmproc::shm_type!(Huge = "review19.Huge");

/// An `Array` of an element type larger than 4 GiB is refused when it is
/// made (an error or a panic naming the size), never a segment sized for
/// the element's size cut to 32 bits that a read of one element then
/// overruns by 4 GiB (a SIGSEGV, or other memory copied out).
#[test]
fn an_array_of_an_element_type_over_4_gib_is_refused_not_overrun() {
    if !common::rerun_in_tmpfs(
        "an_array_of_an_element_type_over_4_gib_is_refused_not_overrun",
        INNER,
        Some("64m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    let made = std::panic::catch_unwind(|| Array::<Huge>::new(1));
    let a = match made {
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("too large"), "panic without the reason: {msg:?}");
            return;
        }
        Ok(Err(e)) => {
            assert!(matches!(e, OpenError::InvalidArgument(_) | OpenError::NoSpace { .. }), "{e:?}");
            return;
        }
        Ok(Ok(a)) => a,
    };
    // Made: reading its one element must stay inside the segment.
    let g = a.get_lock().unwrap();
    let mut out = vec![0u8; std::mem::size_of::<Huge>()];
    let n = g.read(0, shmproc::bytemuck::cast_slice_mut::<u8, Huge>(&mut out));
    assert_eq!(n, 1);
}

/// Absurd capacities of every sized kind are an error at create (never
/// a crash or an overflow), and nothing is left in /dev/shm; an `Array` of
/// a zero-sized type holds any length.
#[test]
fn absurd_capacities_of_every_kind_are_errors_and_leave_nothing() {
    if !common::rerun_in_tmpfs(
        "absurd_capacities_of_every_kind_are_errors_and_leave_nothing",
        INNER,
        Some("64m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue};
    for cap in [u64::MAX, 1 << 63, u64::MAX / 8 + 1, 1 << 40] {
        let results: Vec<(&str, Result<(), OpenError>)> = vec![
            ("Array<u64>", Array::<u64>::new(cap).map(drop)),
            ("Queue<u64>", shmproc::Queue::<u64>::new(cap).map(drop)),
            ("Queue<String>", shmproc::Queue::<String>::new(cap).map(drop)),
            ("Queue<String> max_frame", shmproc::Queue::<String>::with_max_frame(4, cap).map(drop)),
            ("SpscQueue", SpscQueue::<u64>::new(cap).map(drop)),
            ("MpmcQueue", MpmcQueue::<u64>::new(cap).map(drop)),
            ("ByteQueue", ByteQueue::new(cap, 64).map(drop)),
            ("ByteQueue max_frame", ByteQueue::new(4096, cap).map(drop)),
            ("pipe", shmproc::pipe_with(true, cap, 64).map(drop)),
            ("pipe max_frame", shmproc::pipe_with(true, 4096, cap).map(drop)),
            ("RawSegment", shmproc::RawSegment::new(cap).map(drop)),
        ];
        for (what, r) in results {
            assert!(
                matches!(r, Err(OpenError::InvalidArgument(_) | OpenError::NoSpace { .. })),
                "{what} of capacity {cap}: {r:?}"
            );
        }
        assert_eq!(common::dev_shm_files(), Vec::<String>::new(), "left after capacity {cap}");
    }
    let zst = Array::<()>::new(u64::MAX).unwrap();
    assert_eq!(zst.len(), usize::MAX);
    assert!(zst.get(usize::MAX - 1).is_ok());
}

/// Sets this process's soft `RLIMIT_NOFILE` (the hard limit stays).
fn set_nofile(soft: u64) {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid, writable rlimit struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl.rlim_cur = soft.min(rl.rlim_max);
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
}

/// A lock whose holder died, met while this process had no descriptor
/// left (its open-file limit reached, so `/proc` cannot be read then): the
/// wait cannot tell the owner is dead and times out; once descriptors are
/// back, the next wait reports `OwnerDied`. The moment without descriptors
/// must not turn the owner checks off for the rest of the process's life
/// (a lock of a dead holder then blocks every `lock()` forever).
#[test]
fn a_moment_without_file_descriptors_does_not_turn_off_dead_owner_detection() {
    let test = "a_moment_without_file_descriptors_does_not_turn_off_dead_owner_detection";
    // A fresh process: nothing has checked an owner yet.
    if !common::rerun_in_tmpfs(test, INNER, None, Duration::from_secs(60)) {
        return;
    }
    let lock = shmproc::Lock::new().unwrap();
    // SAFETY: fork in a test process; the child only takes the lock (a futex word in shared memory) and leaves
    // with _exit, holding it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        std::mem::forget(lock.lock());
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(lock.is_locked(), "the child did not take the lock");
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid, writable rlimit struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    set_nofile(0);
    let starved = lock.lock_timeout(Duration::from_millis(300)).map(drop).map_err(|e| e.to_string());
    set_nofile(rl.rlim_cur);
    println!("without descriptors: {starved:?}");
    let r = lock.lock_timeout(Duration::from_secs(5));
    assert!(
        matches!(r, Err(shmproc::LockError::OwnerDied(_))),
        "the dead holder's lock once descriptors are back: {:?}",
        r.map(drop).map_err(|e| e.to_string())
    );
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "shmproc::bytemuck")]
#[repr(C, align(8192))]
struct Aligned8k {
    x: [[u8; 4096]; 2],
}
shmproc::shm_type!(Aligned8k = "review19.Aligned8k");

/// An element type aligned to more than a page (8 KiB) cannot be honoured
/// by a mapping that is only page-aligned: whether its data area is
/// aligned depends on where each process's mapping lands. Creating one is
/// the same clear refusal wherever the mapping lands (a page of address
/// space is taken between tries, so they land on both kinds of address),
/// never a segment made in one process that another's `open` calls
/// corrupted.
#[test]
fn an_element_type_aligned_to_more_than_a_page_is_refused_wherever_the_mapping_lands() {
    if !common::rerun_in_tmpfs(
        "an_element_type_aligned_to_more_than_a_page_is_refused_wherever_the_mapping_lands",
        INNER,
        Some("64m"),
        Duration::from_secs(60),
    ) {
        return;
    }
    let mut pads = Vec::new();
    let mut made = Vec::new();
    for _ in 0..4 {
        let results = [
            ("Array", Array::<Aligned8k>::new(2).map(drop)),
            ("Value", shmproc::Value::new(Aligned8k { x: [[1; 4096]; 2] }).map(drop)),
            ("Mutex", shmproc::Mutex::new(Aligned8k { x: [[1; 4096]; 2] }).map(drop)),
            ("MpmcQueue", shmproc::queue::MpmcQueue::<Aligned8k>::new(4).map(drop)),
            ("SpscQueue", shmproc::queue::SpscQueue::<Aligned8k>::new(4).map(drop)),
        ];
        for (what, r) in results {
            match r {
                Err(OpenError::InvalidArgument(m)) if m.contains("aligned to 8192") => {}
                Ok(()) => made.push(what),
                Err(e) => panic!("{what} of an 8 KiB-aligned type: {e}"),
            }
        }
        // A page of address space, kept: the next mappings land a page lower.
        // SAFETY: a new private anonymous mapping at an address the kernel picks; never touched, unmapped at exit.
        let pad = unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(pad, libc::MAP_FAILED);
        pads.push(pad as usize);
    }
    assert_eq!(made, Vec::<&str>::new(), "made where the mapping happened to be 8 KiB-aligned");
    let name = "r19-aligned-8k";
    let lock = shmproc::Lock::create(name).unwrap();
    let r = Array::<Aligned8k>::open(name);
    assert!(matches!(&r, Err(OpenError::WrongKind { .. } | OpenError::InvalidArgument(_))), "{:?}", r.map(drop));
    drop(lock);
    assert_eq!(common::dev_shm_files(), Vec::<String>::new());
}

/// The permission bits of each file of `name` (control segment and rings).
fn modes_of(name: &str) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<(String, u32)> = common::segments_of(name)
        .into_iter()
        .map(|f| {
            let mode = std::fs::metadata(format!("/dev/shm/{f}")).unwrap().permissions().mode() & 0o7777;
            (f, mode)
        })
        .collect();
    v.sort();
    v
}

/// An unbounded queue shared with a group (mode 0660): a member of the
/// group (here uid 65534 with our group) can write its control segment,
/// including the word that records the mode its rings are made with. Set
/// to 0666, it must not make the rings that our process creates next
/// world-writable (any user could then truncate them under every consumer,
/// a SIGBUS, or write into them): rings never get more permission than
/// the queue's own file has.
#[test]
fn a_group_member_cannot_make_our_next_ring_world_writable() {
    let test = "a_group_member_cannot_make_our_next_ring_world_writable";
    if !common::rerun_in_tmpfs(test, INNER, Some("64m"), Duration::from_secs(60)) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping {test}: needs root to run a part as another user");
        return;
    }
    let name = "r19-group-queue";
    // A memory limit that is easy to find in the control segment: the mode word follows it.
    let limit: u64 = 0x0000_0123_4567_8000;
    let opts = shmproc::Options::new().mode(0o660);
    let q = shmproc::Queue::<u64>::create_unbounded(name, limit, &opts).unwrap();
    let (file, at) = common::find_in_segment(name, &limit.to_ne_bytes());
    drop(file);
    let mode_at = at + 8;
    // Made before the fork: the child only calls async-signal-safe code (no allocation).
    let path = std::ffi::CString::new(format!("/dev/shm/shmproc.{name}")).unwrap();
    let mode_bytes = 0o666u32.to_ne_bytes();
    // SAFETY: fork in a test process; the child only changes its uid and writes a file, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Another user in our group (gid 0): the 0660 file lets it write.
        // SAFETY: plain syscalls on a NUL-terminated path and a 4-byte buffer that outlive the calls.
        let code = unsafe {
            if libc::setresuid(65534, 65534, 65534) != 0 {
                3
            } else {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd >= 0 && libc::pwrite(fd, mode_bytes.as_ptr().cast(), 4, mode_at as libc::off_t) == 4 {
                    0
                } else {
                    4
                }
            }
        };
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the group member could not write: {status}");
    let before = common::segments_of(name).len();
    let mut n = 0u64;
    while common::segments_of(name).len() < before + 2 {
        q.put_nowait(n).unwrap();
        n += 1;
        assert!(n < 10_000_000, "no new ring after {n} items");
    }
    for (file, mode) in modes_of(name) {
        assert_eq!(mode & 0o007, 0, "{file} is open to every user: mode {mode:o}");
    }
    for i in 0..n {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    drop(q);
    assert_eq!(common::dev_shm_files(), Vec::<String>::new());
}
