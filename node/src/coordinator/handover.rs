//! Planned switchover: Redis's `FAILOVER`, and `SHUTDOWN` of a primary
//! that hands over before it exits.
//!
//! **How.** The primary holds new writes (they wait, as Redis's paused
//! clients do), waits for the target secondary to have acknowledged its
//! last LSN, names the target in the cluster's `term` record, and gives up
//! its lease: the `primary` key goes at once, the election that follows
//! prefers the named target when it is as up to date as any candidate, and
//! this node steps down to follow it. The held writes are then answered
//! `-READONLY ... The primary is at HOST:PORT.`, so a client that retries
//! once reaches the new primary. Nothing acknowledged is lost: the target
//! holds every write this node took, and it took none after the hold.
//!
//! With `TIMEOUT` and no `FORCE`, a target that does not catch up in time
//! ends the attempt: writes resume here. `FAILOVER ABORT` does the same
//! while the wait lasts. Once the lease is given up there is no way back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::records::{self, Keys, PrimaryRecord};
use super::Etcd;
use crate::Node;

/// How long `SHUTDOWN` waits for a secondary to catch up before it gives
/// up its lease anyway (Redis's `shutdown-timeout` is 10 s; a handover
/// should not hold writes that long).
pub const SHUTDOWN_CATCH_UP_MAX: Duration = Duration::from_secs(2);
/// How long a handover waits for this node to have stepped down.
const STEP_DOWN_MAX: Duration = Duration::from_secs(5);

/// `INFO replication`'s `master_failover_state`, as Redis names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HandoverState {
    #[default]
    NoFailover,
    WaitingForSync,
    FailoverInProgress,
}

impl HandoverState {
    pub fn name(self) -> &'static str {
        match self {
            HandoverState::NoFailover => "no-failover",
            HandoverState::WaitingForSync => "waiting-for-sync",
            HandoverState::FailoverInProgress => "failover-in-progress",
        }
    }
}

/// What to hand over to, and how long to wait for it.
#[derive(Clone, Debug)]
pub struct HandoverPlan {
    /// The target's node id; `None`: the secondary furthest ahead.
    pub to: Option<u64>,
    pub timeout: Option<Duration>,
    /// Hand over at the timeout even if the target has not caught up.
    pub force: bool,
}

/// Why `FAILOVER` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    #[error("ERR FAILOVER needs a coordinator (--coordinator): roles are decided through etcd")]
    NoCoordinator,
    #[error("ERR FAILOVER is not valid when server is a replica.")]
    NotPrimary,
    #[error("ERR FAILOVER already in progress.")]
    InProgress,
    #[error("ERR FAILOVER requires connected replicas.")]
    NoSecondary,
    #[error("ERR FAILOVER target replica is not online.")]
    UnknownTarget(String),
    #[error("ERR No failover in progress.")]
    NotInProgress,
    #[error("ERR FAILOVER is past the point it can be aborted: the lease is being handed over")]
    TooLate,
    #[error("ERR FAILOVER cannot start its thread: {0}")]
    Thread(String),
}

/// The node's handover in progress, if any.
#[derive(Debug, Default)]
pub struct Handover {
    state: std::sync::Mutex<HandoverState>,
    abort: AtomicBool,
    /// True while writes are held.
    held: tokio::sync::watch::Sender<bool>,
    /// Writes past the hold and not yet answered: a handover waits for
    /// them before it reads the LSN the target must reach.
    in_flight: AtomicUsize,
}

/// A write let through the hold; counted until dropped (its reply made).
#[derive(Debug)]
pub struct WriteTicket<'a>(&'a Handover);

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handover {
    pub fn state(&self) -> HandoverState {
        *self.state.lock().expect("handover lock")
    }

    /// Waits while writes are held, then counts this write in until the
    /// ticket is dropped. Counted first, checked second (and the handover
    /// holds first, counts second): either the write sees the hold, or the
    /// handover sees the write.
    pub async fn enter_write(&self) -> WriteTicket<'_> {
        loop {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !*self.held.borrow() {
                return WriteTicket(self);
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let mut rx = self.held.subscribe();
            let _ = rx.wait_for(|held| !*held).await;
        }
    }

    /// `FAILOVER ABORT`: only while waiting for the target (after that, the
    /// lease is being given up and there is no way back).
    pub fn abort(&self) -> Result<(), HandoverError> {
        match *self.state.lock().expect("handover lock") {
            HandoverState::WaitingForSync => {
                self.abort.store(true, Ordering::SeqCst);
                Ok(())
            }
            HandoverState::FailoverInProgress => Err(HandoverError::TooLate),
            HandoverState::NoFailover => Err(HandoverError::NotInProgress),
        }
    }

    /// Takes the handover from waiting to in progress, unless aborted.
    fn commit_to_handing_over(&self) -> bool {
        let mut state = self.state.lock().expect("handover lock");
        if self.abort.load(Ordering::SeqCst) {
            return false;
        }
        *state = HandoverState::FailoverInProgress;
        true
    }

    /// Starts holding writes, if no handover runs.
    fn begin(&self) -> Result<(), HandoverError> {
        let mut state = self.state.lock().expect("handover lock");
        if *state != HandoverState::NoFailover {
            return Err(HandoverError::InProgress);
        }
        *state = HandoverState::WaitingForSync;
        self.abort.store(false, Ordering::SeqCst);
        self.held.send_replace(true);
        Ok(())
    }

    /// Waits (blocking) until no write is between the hold and its reply.
    fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// Starts a handover (`FAILOVER`); it runs on a thread of its own.
pub fn start(node: &Arc<Node>, plan: HandoverPlan) -> Result<(), HandoverError> {
    if node.handover().state() != HandoverState::NoFailover {
        return Err(HandoverError::InProgress);
    }
    let target = check(node, &plan)?;
    node.handover().begin()?;
    let runner = node.clone();
    let spawned = std::thread::Builder::new()
        .name("hotblock-failover".into())
        .spawn(move || run(&runner, target, plan, true));
    if let Err(e) = spawned {
        finish(node, "");
        return Err(HandoverError::Thread(e.to_string()));
    }
    Ok(())
}

/// `SHUTDOWN` of a coordinated primary: hands over to the secondary
/// furthest ahead, then returns (blocking) so the process can exit.
pub fn before_shutdown(node: &Arc<Node>) {
    let plan = HandoverPlan {
        to: None,
        timeout: Some(SHUTDOWN_CATCH_UP_MAX),
        force: true,
    };
    let target = match check(node, &plan) {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(error = %e, "SHUTDOWN: no handover; giving up the lease (the others elect at once)");
            return;
        }
    };
    if node.handover().begin().is_err() {
        return;
    }
    // The process exits next: no need to step down first.
    run(node, target, plan, false);
}

/// The target's node id, if the handover can start.
fn check(node: &Node, plan: &HandoverPlan) -> Result<u64, HandoverError> {
    if node.options().coordinator.is_none() {
        return Err(HandoverError::NoCoordinator);
    }
    let db = node.db().ok_or(HandoverError::NotPrimary)?;
    let secondaries = db.replicator().map(|r| r.status()).unwrap_or_default();
    let online = secondaries.iter().filter(|s| s.state == "online");
    match plan.to {
        Some(to) => online
            .filter_map(|s| s.node)
            .find(|n| n.0 == to)
            .map(|n| n.0)
            .ok_or_else(|| HandoverError::UnknownTarget(to.to_string())),
        None => online
            .max_by_key(|s| (s.mode == hotblock_core::repl::Mode::Sync, s.acked_lsn))
            .and_then(|s| s.node)
            .map(|n| n.0)
            .ok_or(HandoverError::NoSecondary),
    }
}

/// The handover itself; with `step_down`, returns once this node follows
/// the new primary (or after `STEP_DOWN_MAX`).
fn run(node: &Arc<Node>, target: u64, plan: HandoverPlan, step_down: bool) {
    // Whatever happens here (a panic included), writes are released.
    struct Release<'a>(&'a Node);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            finish(self.0, "");
        }
    }
    let _release = Release(node);
    let h = node.handover();
    let started = Instant::now();
    let Some(keeper) = node.lease_keeper() else {
        return tracing::warn!("FAILOVER ended: no coordinator agent");
    };
    let lease = keeper.lease();
    // New writes are held from here on; those already past the hold are
    // answered first (acknowledged as usual), then the gate closes: the
    // LSN read next is this primary's last.
    tracing::warn!(
        target,
        "FAILOVER: writes held, waiting for the target to catch up"
    );
    let drained = h.drain(plan.timeout.unwrap_or(STEP_DOWN_MAX));
    let drained_ms = started.elapsed().as_millis() as u64;
    keeper.set_primary(None);
    let caught_up = drained && wait_caught_up(node, target, &plan, &h.abort);
    tracing::info!(
        drained_ms,
        caught_up_ms = started.elapsed().as_millis() as u64,
        caught_up,
        "FAILOVER: writes in flight drained, then the target caught up"
    );
    let lost_role = node.db().is_none();
    if lost_role || (!caught_up && !plan.force) || !h.commit_to_handing_over() {
        if !lost_role {
            keeper.set_primary(lease);
        }
        return tracing::warn!(
            "FAILOVER ended: the target did not catch up in time, or FAILOVER ABORT; writes resume here"
        );
    }
    if let Err(e) = name_target(node, target) {
        tracing::warn!(error = %e, "FAILOVER: cannot name the target in etcd; the election picks the best candidate");
    }
    let named_ms = started.elapsed().as_millis() as u64;
    // The primary key goes with the lease: the election starts now.
    keeper.resign_lease();
    tracing::info!(
        named_ms,
        resigned_ms = started.elapsed().as_millis() as u64,
        "FAILOVER: target named in etcd, lease given up"
    );
    let deadline = Instant::now() + STEP_DOWN_MAX;
    while step_down && node.db().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(
        target,
        ms = started.elapsed().as_millis() as u64,
        "FAILOVER: handed over"
    );
}

fn finish(node: &Node, why: &str) {
    if !why.is_empty() {
        tracing::warn!(why, "FAILOVER ended");
    }
    let h = node.handover();
    *h.state.lock().unwrap_or_else(|e| e.into_inner()) = HandoverState::NoFailover;
    h.held.send_replace(false);
}

/// Whether `target` acknowledged this primary's last LSN before the
/// timeout (none: until aborted).
fn wait_caught_up(node: &Node, target: u64, plan: &HandoverPlan, abort: &AtomicBool) -> bool {
    let deadline = plan.timeout.map(|t| Instant::now() + t);
    loop {
        let Some(db) = node.db() else {
            return false;
        };
        let lsn = db.lsn();
        // From the acknowledgements as they arrive: `status()` is refreshed
        // at most every few ms, and not at all once writes stop.
        let acked = db
            .replicator()
            .and_then(|r| r.acked_by(hotblock_core::repl::NodeId(target)));
        if acked.is_some_and(|a| a >= lsn) {
            return true;
        }
        if abort.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() > d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A client of this node's etcd, for one quick call off the agent's thread,
/// and the cluster's keys.
fn cluster_client(node: &Node) -> Result<(Etcd, Keys), String> {
    let config = node
        .options()
        .coordinator
        .as_ref()
        .ok_or("no coordinator")?;
    let etcd = Etcd::new(config.url.clone(), Duration::from_millis(500));
    Ok((etcd, Keys::new(&config.cluster)))
}

/// The cluster's members, read from etcd now (blocking).
pub fn read_members(node: &Node) -> Result<Vec<records::MemberRecord>, String> {
    let (etcd, keys) = cluster_client(node)?;
    etcd.get_prefix(&keys.members())
        .map_err(|e| e.to_string())?
        .iter()
        .map(|kv| records::parse(&kv.key, &kv.value))
        .collect()
}

/// Names `target` in the cluster's `term` record: the election prefers it.
fn name_target(node: &Node, target: u64) -> Result<(), String> {
    let (etcd, keys) = cluster_client(node)?;
    let kv = etcd
        .get(&keys.term())
        .map_err(|e| e.to_string())?
        .ok_or("no term record")?;
    let mut term: PrimaryRecord = records::parse(&kv.key, &kv.value)?;
    if term.epoch != node.epoch().0 {
        return Err("the term record is a newer primary's".into());
    }
    term.handover_to = Some(target);
    let replaced = etcd
        .replace(&keys.term(), kv.mod_revision, &records::encode(&term), None)
        .map_err(|e| e.to_string())?;
    replaced
        .then_some(())
        .ok_or_else(|| "the term record changed".into())
}
