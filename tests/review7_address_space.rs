//! Review 7: the address space a growing container store holds. Since a
//! store maps its file into a reserved range (`AddressRange`, 8x the file,
//! 64 MiB at least), every grown container holds that much of the
//! process's address space: under `RLIMIT_AS` a few small containers took
//! the room the program's own allocations needed (before the ranges, a
//! small container held about twice its file).

use std::time::Duration;

use common::vm_size;
use shmproc::DictProxy;

mod common;

/// Set (to the test's name) in the re-run that does the work.
const INNER: &str = "SHMPROC_REVIEW7_AS_INNER";
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `test` again in a child process (the same test binary, that one
/// test). True in the child.
fn in_child(test: &str) -> bool {
    let Some((status, stdout, stderr)) = common::rerun_test(test, INNER, DEADLINE) else {
        return true;
    };
    assert!(status.success(), "{test}: {status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test}: the child ran no test\n{stdout}\n{stderr}");
    false
}

/// Four dicts of a few thousand u64 entries (a few hundred KiB each, grown
/// a few times) under an address-space limit of 160 MiB more than the
/// process holds: afterwards the program can still allocate 64 MiB. With
/// a 64 MiB reservation per grown store the first two dicts alone held
/// 128 MiB of the 160 and the allocation failed.
#[test]
fn review7_small_grown_dicts_leave_the_address_space_to_the_program() {
    let test = "review7_small_grown_dicts_leave_the_address_space_to_the_program";
    if !in_child(test) {
        return;
    }
    let lim = libc::rlimit { rlim_cur: vm_size() + (160 << 20), rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    let dicts: Vec<DictProxy<u64, u64>> = (0..4).map(|_| DictProxy::new().unwrap()).collect();
    for d in &dicts {
        for k in 0..6000u64 {
            d.insert(k, k * 3).unwrap();
        }
    }
    for d in &dicts {
        assert_eq!(d.len(), 6000);
        assert_eq!(d.get(&5999).unwrap(), Some(5999 * 3));
    }
    let mut v: Vec<u8> = Vec::new();
    let r = v.try_reserve_exact(64 << 20);
    assert!(r.is_ok(), "64 MiB no longer fit beside four small dicts (VmSize {} MiB): {r:?}", vm_size() >> 20);
}
