//! Decoding a child's argument bytes: arbitrary input gives errors, never a
//! panic, an out-of-bounds read or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmproc::process::{Handoff, PodArg};

fuzz_target!(|data: &[u8]| {
    let _ = <(u32, String, Vec<u64>, Option<char>)>::decode(&mut &data[..]);
    let _ = <Vec<Vec<String>>>::decode(&mut &data[..]);
    let _ = <([i16; 4], bool, PodArg<[u8; 3]>)>::decode(&mut &data[..]);
    let _ = <Vec<(usize, isize, f64)>>::decode(&mut &data[..]);
});
