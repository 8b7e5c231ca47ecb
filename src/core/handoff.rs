//! The supervisor's state, for a USR2 re-exec of hotswap itself (DESIGN.md
//! §2): exported by the old process, imported by the new one, so that the
//! generations, children, phases and timers go on where they were.
//!
//! Instants cannot cross an exec as they are (they are the monotonic clock's
//! readings, which do); they travel as offsets from the `now` each side passes
//! in, set for the duration of one export or import.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    /// The `now` of the export or import under way.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with `now` as the reference for the instants it (de)serializes.
pub(super) fn at<T>(now: Instant, f: impl FnOnce() -> T) -> T {
    NOW.with(|cell| cell.set(Some(now)));
    let out = f();
    NOW.with(|cell| cell.set(None));
    out
}

fn now() -> Instant {
    NOW.with(Cell::get).expect("instants (de)serialize only inside handoff::at")
}

/// `#[serde(with = "stamp")]`: an instant as signed nanoseconds from `now`.
pub(super) mod stamp {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        let now = now();
        let nanos = if *at >= now {
            at.duration_since(now).as_nanos() as i128
        } else {
            -(now.duration_since(*at).as_nanos() as i128)
        };
        nanos.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let nanos = i128::deserialize(d)?;
        let offset = Duration::from_nanos(nanos.unsigned_abs() as u64);
        let now = now();
        Ok(if nanos >= 0 { now + offset } else { now.checked_sub(offset).unwrap_or(now) })
    }
}

/// An instant that travels with its offset (for tuples and lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp(pub Instant);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        stamp::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        stamp::deserialize(d).map(Stamp)
    }
}
