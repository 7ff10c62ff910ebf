//! Spreading client connections evenly over the workers.
//!
//! Each worker accepts on its own `SO_REUSEPORT` sockets and the kernel hashes every new
//! connection to one of them. With many short connections that evens out; with a few dozen
//! long-lived keep-alive connections it often does not (64 over 2 workers: 36/28 is common),
//! and the clients of the busier worker wait longer for the same CPU. So the worker that
//! accepted a connection hands it to the worker with the fewest open connections when it has
//! at least [`SLACK`] more itself — HAProxy's least-loaded-thread rule. A handoff costs one
//! channel message and one epoll registration on the other worker, once per connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::state::Admitted;

/// How many more connections the accepting worker may hold than the least busy one before it
/// hands a new connection over: 1 would move connections back and forth over a difference
/// that changes with every close.
pub const SLACK: usize = 2;

/// The worker that serves a connection accepted by worker `me`, given every worker's open
/// connections.
pub fn choose(open: impl IntoIterator<Item = usize>, me: usize) -> usize {
    let (mut mine, mut least, mut fewest) = (0, me, usize::MAX);
    for (worker, n) in open.into_iter().enumerate() {
        if worker == me {
            mine = n;
        }
        if n < fewest {
            (least, fewest) = (worker, n);
        }
    }
    if fewest != usize::MAX && mine >= fewest + SLACK {
        least
    } else {
        me
    }
}

/// A connection accepted by one worker for another to serve.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub local_port: u16,
    /// It arrived on the HTTPS listener.
    pub tls: bool,
    pub accepted: Instant,
    pub admitted: Admitted,
    pub open: Open,
}

/// Open connections per worker and each worker's inbox for handed-over ones.
#[derive(Debug)]
pub struct Balancer {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
    /// The receiving ends, until each worker takes its own.
    receivers: Mutex<Vec<Option<mpsc::UnboundedReceiver<Handoff>>>>,
}

impl Balancer {
    /// The balancer for `workers` workers.
    pub fn new(workers: usize) -> Arc<Balancer> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            })
            .unzip();
        Arc::new(Balancer {
            open: (0..senders.len()).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into(),
            receivers: Mutex::new(receivers),
        })
    }

    /// Worker `index`'s inbox of connections handed over by other workers (once).
    pub fn take_inbox(&self, index: usize) -> Option<mpsc::UnboundedReceiver<Handoff>> {
        self.receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
            .and_then(Option::take)
    }

    /// Open connections per worker now.
    pub fn open_per_worker(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker to serve a connection `me` accepted, counted as open there.
    pub fn assign(self: &Arc<Self>, me: usize) -> Open {
        let open = self.open.iter().map(|n| n.load(Ordering::Relaxed));
        self.count(choose(open, me))
    }

    fn count(self: &Arc<Self>, worker: usize) -> Open {
        let worker = worker.min(self.open.len() - 1);
        self.open[worker].fetch_add(1, Ordering::Relaxed);
        Open {
            balancer: self.clone(),
            worker,
        }
    }

    /// Sends a connection to its worker; gives it back if that worker has stopped.
    pub fn hand_over(&self, handoff: Handoff) -> Result<(), Box<Handoff>> {
        let worker = handoff.open.worker;
        self.inboxes[worker]
            .send(handoff)
            .map_err(|mpsc::error::SendError(h)| Box::new(h))
    }
}

/// One open connection counted against its worker until dropped.
#[derive(Debug)]
pub struct Open {
    balancer: Arc<Balancer>,
    worker: usize,
}

impl Open {
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Counts the connection against `worker` instead (its handoff failed: served here).
    pub fn move_to(self, worker: usize) -> Open {
        self.balancer.count(worker)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balancer.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_moves_only_to_a_worker_with_at_least_slack_fewer() {
        assert_eq!(choose([0], 0), 0);
        assert_eq!(choose([0, 0], 1), 1);
        assert_eq!(choose([1, 0], 0), 0, "one more is within the slack");
        assert_eq!(choose([2, 0], 0), 1);
        assert_eq!(choose([36, 28], 0), 1);
        assert_eq!(choose([28, 36], 0), 0);
        assert_eq!(choose([5, 9, 3, 3], 1), 2, "the first of the least busy");
        assert_eq!(choose([4, 4, 3, 4], 0), 0);
    }

    #[test]
    fn accepting_everything_on_one_worker_still_ends_even() {
        let b = Balancer::new(2);
        let opens: Vec<Open> = (0..64).map(|_| b.assign(0)).collect();
        let per = b.open_per_worker();
        assert_eq!(per.iter().sum::<usize>(), 64);
        assert!(per[0].abs_diff(per[1]) <= SLACK, "{per:?}");
        // Closing releases the counts; a moved connection counts on its new worker only.
        let moved = b.count(0).move_to(1);
        assert_eq!(moved.worker(), 1);
        drop(opens);
        assert_eq!(b.open_per_worker(), [0, 1]);
        drop(moved);
        assert_eq!(b.open_per_worker(), [0, 0]);
    }
}
