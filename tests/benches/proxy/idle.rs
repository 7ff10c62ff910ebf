//! Memory per idle keep-alive connection: the server's resident memory (its whole process
//! tree) with N connections open and idle, each after one answered request, against the same
//! server before they were opened.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Result, bail};
use netguard_tests::{NetNs, http::Client};

use crate::procs;

/// Idle connections held open.
pub const N: usize = 2_000;

#[derive(Clone, Debug)]
pub struct Idle {
    pub before: u64,
    pub after: u64,
    pub n: usize,
}

impl Idle {
    pub fn per_connection(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.n as f64
    }
}

/// Opens [`N`] connections to `addr` in `ns`, one request on each, and measures the tree of
/// `pid` before and after. The connections close when this returns.
pub fn measure(ns: &NetNs, pid: u32, addr: SocketAddr, host: &str) -> Result<Idle> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    // Warm the server (and its allocator) first, so the baseline is not a cold process.
    let warm = ns.run(|| -> Vec<u16> {
        let mut c = Client::connect(addr);
        (0..200)
            .map(|_| {
                c.write(request.as_bytes());
                c.response(Duration::from_secs(5)).status
            })
            .collect()
    });
    if warm.iter().any(|s| *s != 200) {
        bail!("warming {addr}: statuses {warm:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = procs::tree_rss(pid);
    let clients = ns.run(|| -> Result<Vec<Client>> {
        let mut out = Vec::with_capacity(N);
        for i in 0..N {
            let mut c = Client::connect(addr);
            c.write(request.as_bytes());
            let r = c.responses(1, Duration::from_secs(5));
            match r.first().map(|r| r.status) {
                Some(200) => out.push(c),
                other => bail!("idle connection {i} to {addr}: answer {other:?}"),
            }
        }
        Ok(out)
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let after = procs::tree_rss(pid);
    drop(clients);
    // Let the server notice the closes before the next measurement.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Idle {
        before,
        after,
        n: N,
    })
}
