//! This node's etcd lease, kept alive on a thread of its own, and the
//! write gate it holds open while this node is the primary.
//!
//! **Why a thread of its own.** The renewals are what keep a primary
//! writable; they must not queue behind the coordinator's other calls (an
//! election's reads, a promotion), each of which can block for a whole
//! call timeout when etcd is slow.
//!
//! **The margin.** etcd restarts a lease's TTL when its leader processes
//! the renewal, which is after this node sent it: so the lease cannot
//! expire before `sent + TTL` on etcd's clock. This node stops writes at
//! `sent + TTL − margin` on its own monotonic clock. The margin covers the
//! two clocks running at different rates (bounded by `CLOCK_DRIFT_MAX`
//! of the TTL) and the time between a write's last lease check and its
//! commit being visible to anyone (microseconds; `GATE_SLACK` is far
//! above it). A node paused (SIGSTOP, a VM stall) past the deadline finds
//! the gate closed when it runs again: time closes it, not this thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotblock_primary::WriteLease;

use super::etcd::{Etcd, EtcdError, LeaseId};

/// Most the etcd leader's clock may run ahead of ours, as a fraction of the
/// TTL (1/50: 2%; real clocks drift by parts per million).
const CLOCK_DRIFT_MAX_DIVISOR: u32 = 50;
/// Time allowed between a write's lease check and its effect.
const GATE_SLACK: Duration = Duration::from_millis(200);
/// How soon a failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// How long before `sent + ttl` writes stop.
pub fn margin(ttl: Duration) -> Duration {
    GATE_SLACK + ttl / CLOCK_DRIFT_MAX_DIVISOR
}

/// The lease as the coordinator's thread sees it.
#[derive(Debug, Default)]
struct Held {
    lease: Option<LeaseId>,
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
    /// Whether this node holds the primary key under the lease: only then
    /// do renewals open the write gate.
    primary: AtomicBool,
    gate: Arc<WriteLease>,
    stop: AtomicBool,
}

impl LeaseKeeper {
    pub fn new(etcd: Arc<Etcd>, ttl: Duration, gate: Arc<WriteLease>) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            etcd,
            ttl,
            held: Mutex::new(Held::default()),
            primary: AtomicBool::new(false),
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
    /// (a clean shutdown): the keys under it go at once.
    pub fn resign(&self) {
        self.stop();
        self.primary.store(false, Ordering::SeqCst);
        self.gate.revoke();
        let lease = self.held.lock().expect("lease lock").lease.take();
        if let Some(lease) = lease {
            match self.etcd.revoke(lease) {
                Ok(()) => tracing::info!(lease = lease.0, "coordinator lease given up"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot revoke the coordinator lease; it expires by itself")
                }
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

    /// This node now holds the primary key under its lease (`true`), or no
    /// longer does (`false`: the gate closes at once).
    pub fn set_primary(&self, primary: bool) {
        self.primary.store(primary, Ordering::SeqCst);
        match primary {
            // Open at once, up to what the last renewal proved, rather
            // than at the next renewal.
            true => {
                if let Some((sent, ttl)) = self.held.lock().expect("lease lock").renewed {
                    self.open_gate(sent, ttl);
                }
            }
            false => self.gate.revoke(),
        }
    }

    fn open_gate(&self, sent: Instant, ttl: Duration) {
        self.gate
            .extend_until(sent + ttl.saturating_sub(margin(ttl)));
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
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(RETRY_AFTER.min(until - Instant::now()));
            }
        }
        self.gate.revoke();
    }

    /// Grants a lease if none is held, else renews it; extends the gate
    /// when this node is the primary.
    fn renew(&self) -> Result<(), EtcdError> {
        let sent = Instant::now();
        let ttl_s = match self.lease() {
            None => {
                let (lease, ttl_s) = self.etcd.grant(self.ttl)?;
                tracing::info!(lease = lease.0, ttl_s, "coordinator lease granted");
                self.held.lock().expect("lease lock").lease = Some(lease);
                ttl_s
            }
            Some(lease) => {
                let ttl_s = self.etcd.keep_alive(lease)?;
                if ttl_s <= 0 {
                    tracing::warn!(
                        lease = lease.0,
                        "the coordinator lease expired: this node holds nothing in etcd any more"
                    );
                    self.primary.store(false, Ordering::SeqCst);
                    self.gate.revoke();
                    let mut held = self.held.lock().expect("lease lock");
                    held.lease = None;
                    held.lost = true;
                    held.renewed = None;
                    return Ok(());
                }
                ttl_s
            }
        };
        let ttl = Duration::from_secs(ttl_s as u64).min(self.ttl.max(Duration::from_secs(1)));
        let mut held = self.held.lock().expect("lease lock");
        held.renewed = Some((sent, ttl));
        if self.primary.load(Ordering::SeqCst) {
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
