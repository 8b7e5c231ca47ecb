//! The signals hotswap handles (DESIGN.md §2), as one stream.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A handled signal that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caught {
    Hup,
    Term,
    Int,
    Quit,
    Usr1,
    Usr2,
    Winch,
    Chld,
}

/// The runtime's handlers for every handled signal.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    quit: Signal,
    usr1: Signal,
    usr2: Signal,
    winch: Signal,
    chld: Signal,
}

impl Signals {
    /// Installs the handlers. Until the caller unblocks the signals, those
    /// that arrive wait.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            winch: signal(SignalKind::window_change())?,
            chld: signal(SignalKind::child())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Caught {
        tokio::select! {
            _ = self.hup.recv() => Caught::Hup,
            _ = self.term.recv() => Caught::Term,
            _ = self.int.recv() => Caught::Int,
            _ = self.quit.recv() => Caught::Quit,
            _ = self.usr1.recv() => Caught::Usr1,
            _ = self.usr2.recv() => Caught::Usr2,
            _ = self.winch.recv() => Caught::Winch,
            _ = self.chld.recv() => Caught::Chld,
        }
    }

    /// A signal the handlers caught and the runtime has seen, without
    /// waiting. Before a re-exec, with the signals blocked and after one
    /// turn of the runtime, these are the signals the exec would lose.
    pub fn caught_now(&mut self) -> Option<Caught> {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(self.next()).poll(&mut cx) {
            Poll::Ready(caught) => Some(caught),
            Poll::Pending => None,
        }
    }
}
