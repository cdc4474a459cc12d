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
