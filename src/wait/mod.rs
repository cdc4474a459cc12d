//! How every blocking call in the crate waits.
//!
//! - [`Deadline`]: when a `_timeout` call gives up; a timeout too large to
//!   represent means forever.

mod deadline;

pub(crate) use deadline::Deadline;
