//! `hotswap reload --wait` clients: which reload each one waits for, and
//! the `Report`/`Finish` actions it is owed.

use std::time::Duration;

use super::types::{Action, GenId, Notice, Outcome, WaiterId};

/// Where a waiting client's reload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Asked while a generation was starting: waits for the next one.
    Next,
    /// Waits for this generation to be ready (or to fail).
    Starting(GenId),
    /// `new` took over; waits until every older generation is gone.
    Draining { new: GenId },
}

#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    stage: Stage,
}

/// Every client waiting for a reload's outcome.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    list: Vec<Waiter>,
}

impl Waiters {
    /// Whether no client waits.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A client that waits for the next generation to start.
    pub fn add(&mut self, id: WaiterId) {
        self.list.push(Waiter { id, stage: Stage::Next });
    }

    /// The client went away: nothing more is owed to it.
    pub fn remove(&mut self, id: WaiterId) {
        self.list.retain(|w| w.id != id);
    }

    /// `generation` starts: the clients waiting for the next one now wait for it.
    pub fn attach(&mut self, generation: GenId) {
        for w in self.list.iter_mut().filter(|w| w.stage == Stage::Next) {
            w.stage = Stage::Starting(generation);
        }
    }

    /// A step of `generation`'s reload, for the clients waiting for it.
    pub fn report(&self, generation: GenId, notice: &Notice) -> Vec<Action> {
        self.list
            .iter()
            .filter(|w| w.stage == Stage::Starting(generation))
            .map(|w| Action::Report { waiter: w.id, notice: notice.clone() })
            .collect()
    }

    /// `generation`'s reload ended with `outcome`: its clients are done.
    pub fn finish(&mut self, generation: GenId, outcome: &Outcome) -> Vec<Action> {
        self.take(|stage| stage == Stage::Starting(generation))
            .into_iter()
            .map(|w| Action::Finish { waiter: w.id, outcome: outcome.clone() })
            .collect()
    }

    /// `new` took over: its clients wait until every older generation is gone.
    pub fn took_over(&mut self, new: GenId) {
        for w in self.list.iter_mut().filter(|w| w.stage == Stage::Starting(new)) {
            w.stage = Stage::Draining { new };
        }
    }

    /// Generation `old` is gone after `after`; `oldest` is the oldest one
    /// left. The clients of newer generations hear it; those with no older
    /// generation left are done, unless a socket does not listen (`broken`).
    pub fn drained(
        &mut self,
        old: GenId,
        after: Duration,
        oldest: Option<GenId>,
        broken: Option<&str>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for w in &self.list {
            if let Stage::Draining { new } = w.stage {
                if new > old {
                    let notice = Notice::Drained { generation: old, after };
                    actions.push(Action::Report { waiter: w.id, notice });
                }
            }
        }
        let done = self.take(
            |stage| matches!(stage, Stage::Draining { new } if oldest.is_none_or(|o| o >= new)),
        );
        for w in done {
            let Stage::Draining { new } = w.stage else { unreachable!("taken above") };
            let outcome = match broken {
                None => Outcome::TookOver { generation: new },
                Some(reason) => Outcome::NotListening { generation: new, reason: reason.into() },
            };
            actions.push(Action::Finish { waiter: w.id, outcome });
        }
        actions
    }

    /// hotswap stops: every client is told its reload will not happen.
    pub fn cancel_all(&mut self) -> Vec<Action> {
        self.take(|_| true)
            .into_iter()
            .map(|w| Action::Finish { waiter: w.id, outcome: Outcome::Cancelled })
            .collect()
    }

    /// Removes and returns the waiters whose stage satisfies `f`, in arrival order.
    fn take(&mut self, f: impl Fn(Stage) -> bool) -> Vec<Waiter> {
        let (taken, rest) = std::mem::take(&mut self.list).into_iter().partition(|w| f(w.stage));
        self.list = rest;
        taken
    }
}
