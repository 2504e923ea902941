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

use std::sync::atomic::{AtomicBool, Ordering};
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
    #[error("ERR FAILOVER target {0} is not a replica of this primary.")]
    UnknownTarget(String),
    #[error("ERR No failover in progress.")]
    NotInProgress,
}

/// The node's handover in progress, if any.
#[derive(Debug, Default)]
pub struct Handover {
    state: std::sync::Mutex<HandoverState>,
    abort: AtomicBool,
    /// True while writes are held.
    held: tokio::sync::watch::Sender<bool>,
}

impl Handover {
    pub fn state(&self) -> HandoverState {
        *self.state.lock().expect("handover lock")
    }

    /// Waits while writes are held by a handover.
    pub async fn writes_released(&self) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    pub fn abort(&self) -> Result<(), HandoverError> {
        match self.state() {
            HandoverState::WaitingForSync => {
                self.abort.store(true, Ordering::SeqCst);
                Ok(())
            }
            _ => Err(HandoverError::NotInProgress),
        }
    }

    fn set(&self, state: HandoverState) {
        *self.state.lock().expect("handover lock") = state;
    }
}

/// Starts a handover (`FAILOVER`); it runs on a thread of its own.
pub fn start(node: &Arc<Node>, plan: HandoverPlan) -> Result<(), HandoverError> {
    let target = check(node, &plan)?;
    let h = node.handover();
    {
        let mut state = h.state.lock().expect("handover lock");
        if *state != HandoverState::NoFailover {
            return Err(HandoverError::InProgress);
        }
        *state = HandoverState::WaitingForSync;
    }
    h.abort.store(false, Ordering::SeqCst);
    h.held.send_replace(true);
    let node = node.clone();
    let spawned = std::thread::Builder::new()
        .name("hotblock-failover".into())
        .spawn(move || run(&node, target, plan, true));
    if spawned.is_err() {
        h.set(HandoverState::NoFailover);
        h.held.send_replace(false);
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
    node.handover().set(HandoverState::WaitingForSync);
    node.handover().held.send_replace(true);
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
    let h = node.handover();
    let started = Instant::now();
    let Some(keeper) = node.lease_keeper() else {
        return finish(node, "no coordinator agent");
    };
    // New writes are held by the client port from here on; those already
    // begun finish and are acknowledged as usual (the gate stays open until
    // the lease goes), and the target must have acknowledged them too.
    tracing::warn!(
        target,
        "FAILOVER: writes held, waiting for the target to catch up"
    );
    let caught_up = wait_caught_up(node, target, &plan, &h.abort);
    if !caught_up && (!plan.force || h.abort.load(Ordering::SeqCst)) {
        return finish(
            node,
            "the target did not catch up (or FAILOVER ABORT): writes resume here",
        );
    }
    h.set(HandoverState::FailoverInProgress);
    if let Err(e) = name_target(node, target) {
        tracing::warn!(error = %e, "FAILOVER: cannot name the target in etcd; the election picks the best candidate");
    }
    // The primary key goes with the lease: the election starts now.
    keeper.resign_lease();
    let deadline = Instant::now() + STEP_DOWN_MAX;
    while step_down && node.db().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(
        target,
        ms = started.elapsed().as_millis() as u64,
        "FAILOVER: handed over"
    );
    finish(node, "")
}

fn finish(node: &Node, why: &str) {
    if !why.is_empty() {
        tracing::warn!(why, "FAILOVER ended");
    }
    let h = node.handover();
    h.set(HandoverState::NoFailover);
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
        let acked = db
            .replicator()
            .map(|r| r.status())
            .unwrap_or_default()
            .iter()
            .filter(|s| s.node.is_some_and(|n| n.0 == target))
            .map(|s| s.acked_lsn)
            .max();
        if acked.is_some_and(|a| a >= lsn) {
            return true;
        }
        if abort.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() > d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The cluster's members, read from etcd now (blocking).
pub fn read_members(node: &Node) -> Result<Vec<records::MemberRecord>, String> {
    let config = node
        .options()
        .coordinator
        .as_ref()
        .ok_or("no coordinator")?;
    let etcd = Etcd::new(config.url.clone(), Duration::from_millis(500));
    let keys = Keys::new(&config.cluster);
    etcd.get_prefix(&keys.members())
        .map_err(|e| e.to_string())?
        .iter()
        .map(|kv| records::parse(&kv.key, &kv.value))
        .collect()
}

/// Names `target` in the cluster's `term` record: the election prefers it.
fn name_target(node: &Node, target: u64) -> Result<(), String> {
    let config = node
        .options()
        .coordinator
        .as_ref()
        .ok_or("no coordinator")?;
    let etcd = Etcd::new(config.url.clone(), Duration::from_millis(500));
    let keys = Keys::new(&config.cluster);
    let kv = etcd
        .get(&keys.term())
        .map_err(|e| e.to_string())?
        .ok_or("no term record")?;
    let mut term: PrimaryRecord = records::parse(&kv.key, &kv.value)?;
    term.handover_to = Some(target);
    let replaced = etcd
        .replace(&keys.term(), kv.mod_revision, &records::encode(&term), None)
        .map_err(|e| e.to_string())?;
    replaced
        .then_some(())
        .ok_or_else(|| "the term record changed".into())
}
