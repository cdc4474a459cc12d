//! A `start` whose argument's encode panicked started nothing and may be
//! called again, as Python's `Process.start()` may after it raised.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmproc::{Handoff, HandoffError, Process};

/// Set once the first encode has panicked: later encodes succeed.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// A `u64` whose first encode in this process panics.
struct FirstEncodePanics(u64);

impl Handoff for FirstEncodePanics {
    fn encode(&self, out: &mut Vec<u8>) {
        if !PANICKED.swap(true, Ordering::SeqCst) {
            panic!("first encode");
        }
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(FirstEncodePanics(u64::decode(input)?))
    }
}

shmproc::entry! {
    fn check_arg(arg: FirstEncodePanics) -> Result<(), String> {
        if arg.0 == 41 { Ok(()) } else { Err(format!("got {}", arg.0)) }
    }
}

#[test]
fn a_start_whose_encode_panicked_can_be_called_again() {
    let mut p = Process::new(check_arg, FirstEncodePanics(41));
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
    assert!(first.is_err(), "the first start did not panic");
    assert_eq!(p.pid(), None, "a start that panicked started a process");
    p.start().expect("a second start after a panicking encode");
    assert!(p.join_timeout(Duration::from_secs(30)).unwrap(), "the child did not end");
    assert_eq!(p.exitcode(), Some(0), "the child did not get its argument");
}
