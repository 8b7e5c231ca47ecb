//! When to look at a starting child's process tree in `/proc` (DESIGN.md
//! §4): only while it starts, never at steady state. Often at first (an app
//! that starts listening after 40 ms is seen within a few ms), then every
//! 50 ms, and never more often than ten times the cost of the last look, so
//! that the looking stays a small share of one core even for 64 children.
//! Every eighth look is deep (it also reads the network tables: connections
//! held by busy workers, sockets of the tree's own).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::core::Pid;

/// The first look, then doubling up to `CAP`.
const FIRST: Duration = Duration::from_millis(2);
const CAP: Duration = Duration::from_millis(50);
/// A look costs at most a tenth of the time between looks.
const COST_SHARE: u32 = 10;
/// Every how many looks one is deep.
const DEEP_EVERY: u32 = 8;

#[derive(Debug)]
struct Watch {
    next: Instant,
    interval: Duration,
    looks: u32,
    /// No deep look before this (ten times the last deep look's cost after it).
    deep_after: Instant,
    /// It said it is ready: every look is deep (as its cost allows), since
    /// the workers of a busy app are seen by the connections they hold.
    signalled: bool,
}

/// The starting children being watched, each with its next look.
#[derive(Debug, Default)]
pub struct Sampler {
    watched: BTreeMap<Pid, Watch>,
}

impl Sampler {
    /// `pid` was spawned at `now`: start looking.
    pub fn watch(&mut self, pid: Pid, now: Instant) {
        let watch = Watch {
            next: now + FIRST,
            interval: FIRST,
            looks: 0,
            deep_after: now,
            signalled: false,
        };
        self.watched.insert(pid, watch);
    }

    /// `pid`'s start is over, or it is gone: stop looking.
    pub fn settle(&mut self, pid: Pid) {
        self.watched.remove(&pid);
    }

    /// Something happened that a look would confirm (it signalled): look
    /// now, and deep from now on.
    pub fn look_now(&mut self, pid: Pid, now: Instant) {
        if let Some(w) = self.watched.get_mut(&pid) {
            w.next = now;
            w.signalled = true;
        }
    }

    /// `pid` has not exec'd yet: look again after the first interval, the
    /// backoff untouched (its start has not begun).
    pub fn not_yet(&mut self, pid: Pid, now: Instant) {
        if let Some(w) = self.watched.get_mut(&pid) {
            w.next = now + FIRST;
        }
    }

    /// When the next look is due; None when no child is starting.
    pub fn next_due(&self) -> Option<Instant> {
        self.watched.values().map(|w| w.next).min()
    }

    /// The children to look at now, each with whether the look is deep;
    /// `cost` then reports how long each took (`looked`).
    pub fn due(&self, now: Instant) -> Vec<(Pid, bool)> {
        self.watched
            .iter()
            .filter(|(_, w)| w.next <= now)
            .map(|(&pid, w)| {
                let turn = w.signalled || w.looks % DEEP_EVERY >= DEEP_EVERY - 1;
                (pid, turn && now >= w.deep_after)
            })
            .collect()
    }

    /// A look at `pid` (`deep` or not) took `cost`: schedule the next one.
    /// A deep look's cost paces the next deep look, not the cheap ones.
    pub fn looked(&mut self, pid: Pid, now: Instant, cost: Duration, deep: bool) {
        if let Some(w) = self.watched.get_mut(&pid) {
            if deep {
                w.looks += 1;
                w.deep_after = now + cost * COST_SHARE;
                w.next = now + w.interval;
                return;
            }
            // A deep look that is not due yet waits at its turn (looks % 8 == 7).
            if w.looks % DEEP_EVERY != DEEP_EVERY - 1 {
                w.looks += 1;
            }
            w.interval = (w.interval * 2).min(CAP).max(cost * COST_SHARE);
            w.next = now + w.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expensive_deep_look_delays_the_next_deep_one_not_the_cheap_ones() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        for _ in 0..7 {
            let now = s.next_due().unwrap();
            assert!(!s.due(now)[0].1);
            s.looked(1, now, Duration::from_micros(100), false);
        }
        let now = s.next_due().unwrap();
        assert!(s.due(now)[0].1, "the eighth is deep");
        s.looked(1, now, Duration::from_millis(15), true);
        let next = s.next_due().unwrap();
        assert!(next - now <= CAP, "cheap looks go on at their pace: {:?}", next - now);
        // The following looks stay cheap until 150 ms have passed, then one is deep again.
        let mut deep_at = None;
        for _ in 0..20 {
            let at = s.next_due().unwrap();
            let is_deep = s.due(at)[0].1;
            if is_deep {
                deep_at = Some(at);
                break;
            }
            s.looked(1, at, Duration::from_micros(100), false);
        }
        let deep_at = deep_at.expect("a deep look again");
        assert!(deep_at - now >= Duration::from_millis(150), "{:?}", deep_at - now);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn looks_often_at_first_then_every_50ms_and_never_at_steady_state() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        assert_eq!(s.next_due(), None);
        s.watch(7, t0);
        let mut at = Vec::new();
        let mut now = t0;
        for _ in 0..9 {
            now = s.next_due().unwrap();
            at.push(now.duration_since(t0).as_millis());
            let due = s.due(now);
            assert_eq!(due.len(), 1);
            s.looked(7, now, Duration::from_micros(150), false);
        }
        assert_eq!(at, [2, 6, 14, 30, 62, 112, 162, 212, 262]);
        s.settle(7);
        assert_eq!(s.next_due(), None, "settled: no more looks");
        let _ = now;
    }

    #[test]
    fn every_eighth_look_is_deep() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        let mut deep = Vec::new();
        for i in 0..16 {
            let now = s.next_due().unwrap();
            let is_deep = s.due(now)[0].1;
            if is_deep {
                deep.push(i);
            }
            s.looked(1, now, Duration::ZERO, is_deep);
        }
        assert_eq!(deep, [7, 15]);
    }

    #[test]
    fn an_expensive_look_spaces_the_next_ones() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        s.looked(1, t0, ms(20), false);
        assert_eq!(s.next_due(), Some(t0 + ms(200)), "ten times the cost");
        s.look_now(1, t0 + ms(5));
        assert_eq!(s.next_due(), Some(t0 + ms(5)), "a signal asks for a look at once");
    }

    #[test]
    fn a_paced_deep_look_comes_at_the_first_look_its_cost_allows() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        for _ in 0..7 {
            let now = s.next_due().unwrap();
            s.looked(1, now, Duration::ZERO, false);
        }
        let now = s.next_due().unwrap();
        assert!(s.due(now)[0].1, "the eighth is deep");
        s.looked(1, now, ms(60), true);
        assert_eq!(s.next_due(), Some(now + CAP), "the next look at the interval reached");
        // Its turn (every eighth look) comes after 350 ms; it waits there until ten times its
        // cost has passed, and the very next look then is deep.
        let mut at = s.next_due().unwrap();
        while at < now + ms(600) {
            assert!(!s.due(at)[0].1, "deep before its cost allows");
            s.looked(1, at, Duration::ZERO, false);
            at = s.next_due().unwrap();
        }
        assert!(s.due(at)[0].1, "the first look after 600 ms is deep");
    }

    #[test]
    fn a_child_not_yet_exec_d_is_looked_at_again_soon_with_its_backoff_untouched() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        s.not_yet(1, t0 + ms(2));
        s.not_yet(1, t0 + ms(4));
        assert_eq!(s.next_due(), Some(t0 + ms(6)), "again after the first interval");
        // Its first real look backs off from the first interval, as if nothing had happened.
        s.looked(1, t0 + ms(6), Duration::ZERO, false);
        assert_eq!(s.next_due(), Some(t0 + ms(10)), "2 ms doubled once");
    }

    #[test]
    fn after_a_signal_every_look_is_deep_as_its_cost_allows() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.watch(1, t0);
        assert!(!s.due(t0 + ms(2))[0].1, "the first look is cheap");
        s.look_now(1, t0 + ms(3));
        assert!(s.due(t0 + ms(3))[0].1, "deep at once after the signal");
        s.looked(1, t0 + ms(3), ms(2), true);
        let next = s.next_due().unwrap();
        assert!(!s.due(next)[0].1, "paced: not deep before ten times its cost");
        s.looked(1, next, Duration::ZERO, false);
        let later = t0 + ms(23);
        assert!(s.due(later.max(s.next_due().unwrap()))[0].1, "deep again once paced");
    }
}
