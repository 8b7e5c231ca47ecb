//! Every deadline the supervisor keeps, in one table: `poll_timeout` and
//! `handle_timeout` read this and nothing else.

use std::collections::BTreeMap;
use std::time::Instant;

use super::types::{GenId, Pid};

/// What a deadline is for. At most one deadline per timer.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(super) enum Timer {
    /// A starting generation must be ready by then (`--ready-timeout`).
    ReadyTimeout(GenId),
    /// `--ready delay:DUR`: the child is declared ready then.
    ReadyDelay(Pid),
    /// A draining child's process group gets SIGKILL then (`--drain-timeout`).
    Kill(Pid),
    /// A crashed instance of the serving generation starts again then.
    Restart { generation: GenId, instance: u32 },
    /// Nothing serves and nothing starts: the next generation starts then.
    Retry,
    /// A child that sent `WATCHDOG=1` must send it again by then.
    Watchdog(Pid),
    /// A replacement child must be ready by then (`--ready-timeout`).
    ReplaceTimeout(Pid),
}

/// Deadlines by what they are for.
#[derive(Debug, Default)]
pub(super) struct Timers {
    at: BTreeMap<Timer, Instant>,
}

impl Timers {
    /// Sets (or moves) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at.insert(timer, at);
    }

    pub fn cancel(&mut self, timer: Timer) {
        self.at.remove(&timer);
    }

    /// Cancels every timer for which `f` is true.
    pub fn cancel_where(&mut self, f: impl Fn(&Timer) -> bool) {
        self.at.retain(|timer, _| !f(timer));
    }

    pub fn any(&self, f: impl Fn(&Timer) -> bool) -> bool {
        self.at.keys().any(f)
    }

    /// The pending restarts: (generation, instance).
    pub fn restarts(&self) -> Vec<(GenId, u32)> {
        self.at
            .keys()
            .filter_map(|t| match *t {
                Timer::Restart { generation, instance } => Some((generation, instance)),
                _ => None,
            })
            .collect()
    }

    /// Every timer and its deadline.
    pub fn all(&self) -> Vec<(Timer, Instant)> {
        self.at.iter().map(|(&t, &at)| (t, at)).collect()
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }

    /// Removes and returns the earliest timer due at `now` (ties in the
    /// order of `Timer`), so timers fire in deadline order.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (&timer, _) = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .min_by_key(|(timer, at)| (**at, **timer))?;
        self.at.remove(&timer);
        Some(timer)
    }
}
