//! Integration tests that use several real processes: the test binary
//! re-executes itself as children (see `common`).

#[path = "../common/mod.rs"]
mod common;
mod errors;
mod hostile;
mod locks;
mod primitives;

use libtest_mimic::{Arguments, Trial};

/// Adapts a test body to a trial; a test fails by panicking.
pub fn trial(name: &str, f: fn()) -> Trial {
    Trial::test(name, move || {
        std::panic::catch_unwind(f).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
                .into()
        })
    })
}

fn main() {
    let roles: Vec<_> = [locks::ROLES, primitives::ROLES, errors::ROLES, hostile::ROLES].concat();
    common::dispatch_child(&roles);
    let args = Arguments::from_args();
    let trials: Vec<Trial> =
        [locks::trials(), primitives::trials(), errors::trials(), hostile::trials()].into_iter().flatten().collect();
    libtest_mimic::run(&args, trials).exit();
}
