//! Deadlines of blocking calls, with one rule for every `_timeout` method
//! in the crate: a timeout too large to represent (`Duration::MAX`, or any
//! `now + timeout` past what `Instant` can hold) means "wait forever", and
//! nothing panics.
//!
//! "Forever" is a value of [`Deadline`] itself ([`Deadline::NEVER`]), not
//! an `Option` around it, so a call site cannot turn an overflow into
//! "already passed" by unwrapping the wrong way.

use std::time::{Duration, Instant};

/// When a blocking call gives up: an instant on the monotonic clock, or
/// never. (`pub` only so the loom models can name `Wait::Until`; the
/// module is private.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: wait until the condition holds.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; [`NEVER`](Self::NEVER) if that is too far to
    /// represent.
    #[inline]
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// Whether this deadline is [`NEVER`](Self::NEVER).
    #[inline]
    pub(crate) fn is_never(self) -> bool {
        self.0.is_none()
    }

    /// Whether the deadline has passed (never, for [`NEVER`](Self::NEVER)).
    #[inline]
    pub(crate) fn passed(self) -> bool {
        self.0.is_some_and(|t| Instant::now() >= t)
    }

    /// Time left (zero once passed); `None` for [`NEVER`](Self::NEVER).
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The earlier of this deadline and `period` from now: how long one
    /// sleep of a waiter that re-checks something every `period` may last.
    pub(crate) fn capped(self, period: Duration) -> Deadline {
        match (self.0, Instant::now().checked_add(period)) {
            (Some(t), Some(p)) => Deadline(Some(t.min(p))),
            (t, p) => Deadline(t.or(p)),
        }
    }

    /// The instant, for the system calls that sleep (`None`: no timeout).
    #[inline]
    pub(crate) fn instant(self) -> Option<Instant> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_to_represent_means_never() {
        for t in [Duration::MAX, Duration::from_secs(u64::MAX), Duration::new(u64::MAX, 999_999_999)] {
            let d = Deadline::after(t);
            assert!(d.is_never());
            assert!(!d.passed());
            assert_eq!(d.remaining(), None);
            assert_eq!(d, Deadline::NEVER);
        }
    }

    #[test]
    fn a_representable_deadline_passes() {
        let d = Deadline::after(Duration::ZERO);
        assert!(!d.is_never());
        assert!(d.passed());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        let far = Deadline::after(Duration::from_secs(1 << 40));
        assert!(!far.is_never() && !far.passed());
    }

    #[test]
    fn capped_takes_the_earlier() {
        let never = Deadline::NEVER.capped(Duration::from_secs(3600));
        assert!(!never.is_never());
        assert!(never.remaining().unwrap() <= Duration::from_secs(3600));
        let soon = Deadline::after(Duration::ZERO).capped(Duration::from_secs(3600));
        assert!(soon.passed());
        // A period too large to represent leaves the deadline as it was.
        assert!(Deadline::NEVER.capped(Duration::MAX).is_never());
    }
}
