//! This node's etcd lease, kept alive on a thread of its own, and the
//! write gate it holds open while this node is the primary.
//!
//! **Why a thread of its own.** The renewals are what keep a primary
//! writable; they must not queue behind the coordinator's other calls (an
//! election's reads, a promotion), each of which can block for a whole
//! call timeout when etcd is slow.
//!
//! **The margin.** This node stops writes at `sent + TTL − margin` on its
//! own monotonic clock, where `sent` is when it sent the last renewal etcd
//! confirmed: the rule and its margin are
//! [`hotblock_core::repl::election::write_deadline`]'s, shared with the
//! simulator that checks them. A node paused (SIGSTOP, a VM stall) past
//! the deadline finds the gate closed when it runs again: time closes it,
//! not this thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotblock_core::repl::election;
use hotblock_primary::WriteLease;

use super::etcd::{Etcd, EtcdError, LeaseId};

/// How soon a failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The lease as the coordinator's thread sees it. One lock for all of it:
/// whether the gate may open depends on the lease held and on holding the
/// primary key under that very lease, and both change together.
#[derive(Debug, Default)]
struct Held {
    lease: Option<LeaseId>,
    /// The lease this node holds the primary key under, if it does: only
    /// renewals of that lease open the write gate.
    primary_under: Option<LeaseId>,
    /// etcd said the lease was gone (expired or revoked) since the
    /// coordinator last asked.
    lost: bool,
    link_up: bool,
    last_error: Option<String>,
    /// When the last renewal etcd confirmed was sent, and the TTL it
    /// confirmed: the lease lasts at least until `sent + ttl`.
    renewed: Option<(Instant, Duration)>,
}

/// The lease keeper: shared by its thread and the coordinator's.
#[derive(Debug)]
pub struct LeaseKeeper {
    etcd: Arc<Etcd>,
    ttl: Duration,
    held: Mutex<Held>,
    gate: Arc<WriteLease>,
    stop: AtomicBool,
}

impl LeaseKeeper {
    pub fn new(etcd: Arc<Etcd>, ttl: Duration, gate: Arc<WriteLease>) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            etcd,
            ttl,
            held: Mutex::new(Held::default()),
            gate,
            stop: AtomicBool::new(false),
        })
    }

    /// Renews until [`LeaseKeeper::stop`], on a thread of its own.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let keeper = self.clone();
        std::thread::Builder::new()
            .name("hotblock-lease".into())
            .spawn(move || keeper.run())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops renewing and revokes the lease now, from the caller's thread
    /// (a clean shutdown, or a node that cannot serve what it won): the
    /// keys under it go at once.
    pub fn resign(&self) {
        self.stop();
        let lease = {
            let mut held = self.held.lock().expect("lease lock");
            held.primary_under = None;
            self.gate.revoke();
            held.lease.take()
        };
        if let Some(lease) = lease {
            match self.etcd.revoke(lease) {
                Ok(()) => tracing::info!(lease = lease.0, "coordinator lease given up"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot revoke the coordinator lease; it expires by itself")
                }
            }
        }
    }

    /// Revokes the lease now and goes on renewing (a new lease is granted
    /// next): whatever was held under it, the primary key first, goes at
    /// once. A planned switchover's last step.
    pub fn resign_lease(&self) {
        let lease = {
            let mut held = self.held.lock().expect("lease lock");
            held.primary_under = None;
            self.gate.revoke();
            held.renewed = None;
            held.lease.take()
        };
        if let Some(lease) = lease {
            if let Err(e) = self.etcd.revoke(lease) {
                tracing::warn!(error = %e, "cannot revoke the coordinator lease; it expires by itself");
            }
        }
    }

    /// The lease, if one is held now.
    pub fn lease(&self) -> Option<LeaseId> {
        self.held.lock().expect("lease lock").lease
    }

    /// Whether the lease was lost since the last call (then cleared).
    pub fn take_lost(&self) -> bool {
        std::mem::take(&mut self.held.lock().expect("lease lock").lost)
    }

    pub fn link(&self) -> (bool, Option<String>) {
        let held = self.held.lock().expect("lease lock");
        (held.link_up, held.last_error.clone())
    }

    /// This node now holds the primary key under `lease` (`Some`), or no
    /// longer holds it (`None`: the gate closes at once). The gate opens
    /// only while `lease` is the one held: a lease lost and granted anew
    /// in between opens nothing.
    pub fn set_primary(&self, lease: Option<LeaseId>) {
        let mut held = self.held.lock().expect("lease lock");
        held.primary_under = lease.filter(|l| held.lease == Some(*l));
        match (held.primary_under, held.renewed) {
            // Open at once, up to what the last renewal proved, rather
            // than at the next renewal.
            (Some(_), Some((sent, ttl))) => self.open_gate(sent, ttl),
            (Some(_), None) => {}
            (None, _) => self.gate.revoke(),
        }
    }

    fn open_gate(&self, sent: Instant, ttl: Duration) {
        self.gate.extend_until(election::write_deadline(sent, ttl));
    }

    pub fn gate(&self) -> &Arc<WriteLease> {
        &self.gate
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn run(&self) {
        let renew_every = self.ttl / 4;
        while !self.stop.load(Ordering::SeqCst) {
            let wait = match self.renew() {
                Ok(()) => renew_every,
                Err(e) => {
                    let mut held = self.held.lock().expect("lease lock");
                    if held.link_up {
                        tracing::warn!(error = %e, "cannot renew the coordinator lease");
                    }
                    held.link_up = false;
                    held.last_error = Some(e.to_string());
                    RETRY_AFTER
                }
            };
            let until = Instant::now() + wait;
            // A lease given up (a switchover) is replaced at once.
            while Instant::now() < until
                && !self.stop.load(Ordering::SeqCst)
                && self.lease().is_some()
            {
                std::thread::sleep(RETRY_AFTER.min(until - Instant::now()));
            }
        }
    }

    /// Grants a lease if none is held, else renews it; extends the gate
    /// when this node holds the primary key under it.
    fn renew(&self) -> Result<(), EtcdError> {
        let sent = Instant::now();
        let (lease, ttl_s) = match self.lease() {
            None => {
                let (lease, ttl_s) = self.etcd.grant(self.ttl)?;
                tracing::info!(lease = lease.0, ttl_s, "coordinator lease granted");
                if Duration::from_secs(ttl_s.max(0) as u64) > self.ttl {
                    // Writes still stop by `--failover-timeout-ms`; the
                    // others wait for etcd's longer lease before electing.
                    tracing::warn!(
                        asked_ms = self.ttl.as_millis() as u64,
                        granted_s = ttl_s,
                        "etcd grants no lease this short (its minimum is 1.5 election timeouts, in whole seconds): failover takes as long as the granted lease; run etcd with a shorter --election-timeout and --heartbeat-interval, or raise --failover-timeout-ms"
                    );
                }
                let mut held = self.held.lock().expect("lease lock");
                if self.stop.load(Ordering::SeqCst) {
                    // Resigned meanwhile: this lease just expires.
                    return Ok(());
                }
                held.lease = Some(lease);
                held.renewed = None;
                (lease, ttl_s)
            }
            Some(lease) => (lease, self.etcd.keep_alive(lease)?),
        };
        let mut held = self.held.lock().expect("lease lock");
        if held.lease != Some(lease) {
            // Resigned while the call was out.
            return Ok(());
        }
        if ttl_s <= 0 {
            tracing::warn!(
                lease = lease.0,
                "the coordinator lease expired: this node holds nothing in etcd any more"
            );
            self.gate.revoke();
            *held = Held {
                lost: true,
                link_up: true,
                ..Held::default()
            };
            return Ok(());
        }
        let ttl = Duration::from_secs(ttl_s as u64).min(self.ttl.max(Duration::from_secs(1)));
        held.renewed = Some((sent, ttl));
        if held.primary_under == Some(lease) {
            self.open_gate(sent, ttl);
        }
        if !held.link_up {
            tracing::info!("coordinator link up");
        }
        held.link_up = true;
        held.last_error = None;
        Ok(())
    }
}
