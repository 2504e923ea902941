//! hotblock-node: the RAM storage node behind the RESP port, and the two
//! binaries that run it, `hotblock-node` and `hotblock-secondary`.
//!
//! **What it is.** One engine, in one of two roles, served to any Redis
//! client: the RESP codec ([`resp`]), the server and its commands, `INFO`,
//! the command lines ([`cli`], [`cmd`]), the fencing notice a promoted node
//! sends its former primary ([`fence`]), and the composition of the role
//! crates: a primary is a [`hotblock_primary::Db`] with its `Replicator`; a
//! secondary is a [`hotblock_secondary::SecondaryNode`], and a relay is a
//! secondary controller and a primary controller on one engine ([`relay`]).
//! `hotblock-secondary` turns into a primary in place on `REPLICAOF NO ONE`;
//! keeping both roles behind one server means a promoted secondary answers
//! exactly like a node started as primary.
//!
//! **What it is not.** No storage or protocol logic of its own: the engine
//! is `hotblock-core`, the data directory `hotblock-persist`, the links
//! `hotblock-nic-transport`, the controllers `hotblock-primary` and
//! `hotblock-secondary`.
//!
//! **Limits** are in [`limits`]: clients, request and reply sizes, as Redis
//! names them.

pub mod cli;
pub mod cmd;
mod commands;
pub mod coordinator;
pub mod error;
pub mod fence;
mod follower;
pub use follower::Follower;
mod info;
pub mod limits;
pub mod relay;
pub mod resp;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::resp::RespLimits;
use hotblock_core::repl::{Epoch, EpochHistory, Mode};
use hotblock_core::{DatabaseOptions, Engine, Error, Lsn};
use hotblock_persist::Persister;

use hotblock_primary::{Db, DbConfig, ReplicationConfig};

use crate::error::{PromoteError, RepointError};

pub use server::{serve, serve_until_shutdown, ServerHandle};

/// The database `SET`, `GET` and `DEL` act on: no non-unique keys.
pub const DEFAULT_DATABASE: &str = "0";

/// Limits of the client port, named as Redis names its own.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Connected clients at most (Redis's `maxclients`); one more is told
    /// `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    pub resp: RespLimits,
    /// Reply bytes held for one client before they are written out (and
    /// more requests run): at most this plus one reply, which the block
    /// size bounds.
    pub output_buffer_max: usize,
    /// A client whose replies make no progress for this long is dropped (it
    /// pipelines and never reads).
    pub output_stall: std::time::Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_clients: limits::CLIENTS_MAX,
            resp: RespLimits::default(),
            output_buffer_max: limits::OUTPUT_BUFFER_BYTES_MAX,
            output_stall: limits::OUTPUT_STALL_MAX,
        }
    }
}

/// A follower's replication state, for `INFO` and `ROLE`.
#[derive(Clone, Debug)]
pub struct FollowerInfo {
    /// The primary's replication address.
    pub primary: String,
    pub mode: Mode,
    pub connected: bool,
    /// Caught up and applying the stream (not loading a snapshot).
    pub streaming: bool,
    pub lsn: Lsn,
    pub epoch: Epoch,
    pub snapshots: u64,
    /// Blocks found different from the primary's by verification.
    pub blocks_diverged: u64,
    pub last_error: Option<String>,
}

/// How the node is run.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `--requirepass`: clients must `AUTH` first.
    pub requirepass: Option<String>,
    pub limits: ServerLimits,
    /// A secondary: answer reads (`--serve-reads`), not only admin commands.
    pub serve_reads: bool,
    /// A secondary: how to serve secondaries once promoted (`--repl-listen`).
    pub promote_replication: Option<ReplicationConfig>,
    /// The block size of databases created over RESP (`--block-size`).
    pub block_size: Option<usize>,
    pub db: DbConfig,
    /// `--data-dir`: where the log and snapshots go.
    pub persister: Option<Persister>,
    /// Accept `DEBUG FLIPBYTE` (tests of digest verification only: it
    /// corrupts a block on purpose). Off unless `HOTBLOCK_FAULT_INJECTION=1`.
    pub fault_injection: bool,
}

/// What this node serves as now, holding the controller of that role. Not
/// the engine's [`hotblock_core::Role`] (whether the engine runs its own
/// transactions), which follows from it: a `Primary` holds a primary
/// engine, a `Secondary` a follower engine.
pub(crate) enum Serving {
    Primary(Db),
    Secondary(Box<Follower>),
    /// Between `REPLICAOF NO ONE` and the new primary being ready.
    Promoting,
}

impl Serving {
    /// As `INFO` shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Serving::Primary(_) => "primary",
            Serving::Secondary(_) => "secondary",
            Serving::Promoting => "promoting",
        }
    }
}

/// Client-port counters, for `INFO stats` and `INFO clients`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections_received: AtomicU64,
    pub connected_clients: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    pub errors: AtomicU64,
}

/// The shared state of a running node.
pub struct Node {
    role: RwLock<Serving>,
    options: NodeOptions,
    /// The epoch history this node writes under (primary) or last knew.
    history: Mutex<EpochHistory>,
    stats: Stats,
    started: Instant,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("role", &self.role_name())
            .finish()
    }
}

impl Node {
    /// A primary over `db`, creating the default database if it is missing.
    pub fn primary(
        db: Db,
        history: EpochHistory,
        options: NodeOptions,
    ) -> Result<Arc<Node>, Error> {
        if db.database(DEFAULT_DATABASE).is_err() {
            let mut create = DatabaseOptions::default();
            if let Some(size) = options.block_size {
                create = create.block_size(size);
            }
            // The node's own set-up, not a client's write: it must not be
            // refused for want of secondaries (`--min-secondaries`), which
            // cannot have connected yet. It is logged and replicated as any
            // commit.
            db.engine().create_database(DEFAULT_DATABASE, create)?;
        }
        Ok(Self::new(Serving::Primary(db), history, options))
    }

    /// A secondary around `follower`.
    pub fn secondary(follower: Follower, options: NodeOptions) -> Arc<Node> {
        Self::new(
            Serving::Secondary(Box::new(follower)),
            EpochHistory::default(),
            options,
        )
    }

    fn new(role: Serving, history: EpochHistory, options: NodeOptions) -> Arc<Node> {
        Arc::new(Node {
            role: RwLock::new(role),
            options,
            history: Mutex::new(history),
            stats: Stats::default(),
            started: Instant::now(),
            shutdown: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// `REPLICAOF host port [fingerprint]` on a secondary: follow another
    /// primary (after a failover, say) without a restart.
    pub fn repoint(
        &self,
        address: SocketAddr,
        fingerprint: Option<&str>,
    ) -> Result<(), RepointError> {
        match &*self.role.read().expect("role lock") {
            Serving::Secondary(f) => f.repoint(address, fingerprint),
            Serving::Primary(_) => Err(RepointError::NotASecondary),
            Serving::Promoting => Err(RepointError::Unavailable(Reject::Promoting.message())),
        }
    }

    pub fn role_name(&self) -> &'static str {
        self.role.read().expect("role lock").name()
    }

    /// The primary's `Db`, if this node is one.
    pub fn db(&self) -> Option<Db> {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => Some(db.clone()),
            _ => None,
        }
    }

    /// The engine reads are served from: the primary's, or a follower's when
    /// it serves reads.
    pub(crate) fn read_engine(&self) -> Result<Engine, Reject> {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => Ok(db.engine().clone()),
            Serving::Secondary(f) if self.options.serve_reads => Ok(f.engine().clone()),
            Serving::Secondary(_) => Err(Reject::Passive),
            Serving::Promoting => Err(Reject::Promoting),
        }
    }

    pub(crate) fn write_db(&self) -> Result<Db, Reject> {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => Ok(db.clone()),
            Serving::Secondary(_) => Err(Reject::ReadOnly),
            Serving::Promoting => Err(Reject::Promoting),
        }
    }

    /// The engine in either role (admin commands such as `DEBUG DIGEST`).
    pub fn engine(&self) -> Option<Engine> {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => Some(db.engine().clone()),
            Serving::Secondary(f) => Some(f.engine().clone()),
            Serving::Promoting => None,
        }
    }

    pub fn lsn(&self) -> Lsn {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => db.lsn(),
            Serving::Secondary(f) => f.engine().lsn(),
            Serving::Promoting => Lsn::ZERO,
        }
    }

    pub fn epoch(&self) -> Epoch {
        match &*self.role.read().expect("role lock") {
            Serving::Secondary(f) => f.info().epoch,
            _ => self.history.lock().expect("history lock").current(),
        }
    }

    /// Asks the server to stop (`SHUTDOWN`, SIGTERM).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once a shutdown was asked for.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Flushes what must reach the disk before the process exits.
    pub fn close(&self) {
        if let Some(p) = &self.options.persister {
            if let Err(e) = p.sync_all() {
                tracing::error!(error = %e, "final log sync failed");
            }
        }
    }

    /// `REPLICAOF NO ONE`: turns this secondary into a primary in place.
    /// Blocking: run it off the async workers.
    pub fn promote(&self) -> Result<(Lsn, Epoch), PromoteError> {
        let follower = self.take_follower()?;
        let started = Instant::now();
        let relay_address = follower.relay_address();
        let upstream = follower.upstream();
        let (engine, history) = Self::promote_follower(*follower)?;
        let lsn = engine.lsn();
        let epoch = history.current();
        // From here on the engine is a primary's: whatever else fails, the
        // node serves it, and says what is missing.
        let mut problems = Vec::new();
        self.persist_promotion(&engine, &history, &mut problems);
        let db = self.promoted_db(engine, &history, relay_address, &mut problems);
        if let Some((to, secret, node)) = upstream {
            fence::announce(fence::FenceNotice {
                to,
                secret,
                node,
                lsn,
                history: history.clone(),
                db: db.clone(),
            });
        }
        *self.history.lock().expect("history lock") = history;
        *self.role.write().expect("role lock") = Serving::Primary(db);
        tracing::warn!(
            lsn = lsn.0, %epoch, ms = started.elapsed().as_millis() as u64,
            "promoted to primary: transactions above this LSN on the old primary are lost"
        );
        match problems.is_empty() {
            true => Ok((lsn, epoch)),
            false => {
                let e = PromoteError::Incomplete { problems };
                tracing::error!(error = %e, "promoted, with problems");
                Err(e)
            }
        }
    }

    /// [`Node::promote`]'s first step: takes the follower out of the role,
    /// leaving [`Serving::Promoting`] in its place, unless this node is not
    /// a secondary.
    fn take_follower(&self) -> Result<Box<Follower>, PromoteError> {
        let mut role = self.role.write().expect("role lock");
        match std::mem::replace(&mut *role, Serving::Promoting) {
            Serving::Secondary(f) => Ok(f),
            other => {
                *role = other;
                Err(PromoteError::AlreadyPrimary)
            }
        }
    }

    /// Promotes `follower`'s engine, its epoch history with it; on failure
    /// the node stays [`Serving::Promoting`].
    fn promote_follower(follower: Follower) -> Result<(Engine, EpochHistory), PromoteError> {
        follower.promote().map_err(|e| {
            // The follower's controller has stopped and its blocks are
            // not known to be whole: stay unavailable rather than serve
            // them. A restart recovers from the data directory, if any.
            tracing::error!(error = %e, "promotion failed; restart this node");
            PromoteError::Failed(e)
        })
    }

    /// Makes the data directory, if any, match the promoted `engine`: its
    /// state written when the files are not it, then the new epoch saved.
    fn persist_promotion(
        &self,
        engine: &Engine,
        history: &EpochHistory,
        problems: &mut Vec<String>,
    ) {
        let Some(p) = &self.options.persister else {
            return;
        };
        // Promoted in the middle of a resync (the engine was reset and
        // is consistent, but the files are not its state): make them so
        // before anything is logged on top.
        if p.status().resyncing || p.check_healthy().is_err() {
            if let Err(e) = p.checkpoint(engine) {
                problems.push(format!(
                    "cannot write a snapshot of the promoted state: {e}"
                ));
            }
        }
        let state = hotblock_persist::PersistedState {
            history: history.clone(),
            epoch_seen: history.current(),
        };
        if let Err(e) = p.save_state(&state) {
            problems.push(format!("cannot persist the new epoch: {e}"));
        }
    }

    /// The primary's [`Db`] around the promoted `engine`: logging to the
    /// data directory, if any, and serving secondaries if configured to
    /// (on the relay's address, when it had one).
    fn promoted_db(
        &self,
        engine: Engine,
        history: &EpochHistory,
        relay_address: Option<SocketAddr>,
        problems: &mut Vec<String>,
    ) -> Db {
        let mut db = Db::from_engine(engine, self.options.db.clone());
        if let Some(p) = &self.options.persister {
            db = db.with_persistence(p.clone());
        }
        if let Some(repl) = &self.options.promote_replication {
            let mut repl = repl.clone();
            if let Some(addr) = relay_address {
                repl.listen = repl.listen.at(addr);
            }
            repl.history = history.clone();
            match db.clone().with_replication(repl) {
                Ok(replicating) => db = replicating,
                Err(e) => problems.push(format!("cannot serve secondaries: {e}")),
            }
        }
        db
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the node refuses a command in its current role.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reject {
    /// A passive secondary keeps blocks only.
    Passive,
    /// A secondary does not take writes.
    ReadOnly,
    Promoting,
}

impl Reject {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Reject::Passive => {
                "ERR this is a passive secondary: it holds blocks only (start it with --serve-reads to serve reads)"
            }
            Reject::ReadOnly => "READONLY You can't write against a read only replica.",
            Reject::Promoting => "LOADING this node is being promoted to primary",
        }
    }
}
