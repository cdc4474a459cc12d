//! The atomics every model-checked algorithm uses: std's, or loom's under
//! `--cfg loom` (the one place that choice is made). Shared-memory code
//! that loom does not model (control blocks, records) uses std's directly.

pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, fence};
