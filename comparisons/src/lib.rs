//! Nothing to use here: this package only holds the side-by-side
//! comparison benches (`cargo bench -p shmproc-comparisons`), so that their
//! heavy dependencies stay out of the root crate's build.
