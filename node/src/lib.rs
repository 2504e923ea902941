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
mod clients;
pub mod cmd;
mod commands;
pub mod coordinator;
pub mod error;
pub mod fence;
mod follower;
pub mod history;
pub use follower::Follower;
mod glob;
mod info;
pub mod limits;
pub mod relay;
pub mod resp;
mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::cli::Transport;
use crate::coordinator::agent::{Position, Standing};
use crate::coordinator::lease::LeaseKeeper;
use crate::coordinator::ClusterState;
use crate::resp::RespLimits;
use hotblock_core::repl::{Epoch, EpochHistory, Mode, NodeId};
use hotblock_core::{DatabaseOptions, Engine, Error, IndexMode, Lsn};
use hotblock_nic_transport::Secret;
use hotblock_persist::Persister;

use hotblock_primary::{Db, DbConfig, ReplicationConfig, WriteLease};
use hotblock_secondary::{SecondaryNode, SecondaryNodeConfig};

use crate::error::{DemoteError, PromoteError, RepointError};

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
    /// The lineage of the history followed (Redis's `master_replid`).
    pub lineage: u64,
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
    /// `--coordinator` and its flags: automatic failover through etcd.
    pub coordinator: Option<coordinator::Config>,
    /// With a coordinator: the gate on this node's writes while primary
    /// (every `Db` it serves is made with it).
    pub write_lease: Option<Arc<WriteLease>>,
    /// How this node follows a primary when it steps down in place.
    pub follow: Option<FollowSettings>,
}

/// How a node follows a primary as a secondary: what `hotblock-secondary`
/// takes from its flags, kept so a primary can step down in place.
#[derive(Clone, Debug)]
pub struct FollowSettings {
    pub mode: Mode,
    pub transport: Transport,
    pub secret: Secret,
    pub node_id: NodeId,
    pub indexes: IndexMode,
    pub databases: Vec<String>,
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
    /// Bytes read from and written to clients.
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Keys the primary deleted because their time ran out.
    pub expired_keys: AtomicU64,
    /// `total_commands_processed` sampled every 100 ms, for
    /// `instantaneous_ops_per_sec`.
    pub ops_samples: Mutex<info::OpsSamples>,
    /// Error replies by code (the first word: `ERR`, `WRONGTYPE`, ...),
    /// for `INFO errorstats`.
    pub error_codes: Mutex<std::collections::BTreeMap<String, u64>>,
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
    /// What the coordinator's agent last learned of the cluster.
    cluster: Mutex<ClusterState>,
    /// The coordinator's lease keeper, once started.
    keeper: Mutex<Option<Arc<LeaseKeeper>>>,
    /// A planned switchover (`FAILOVER`, `SHUTDOWN`) in progress.
    handover: coordinator::handover::Handover,
    /// The connected clients (`CLIENT LIST`, `CLIENT KILL`).
    clients: Arc<clients::Clients>,
    /// A random id of this run (Redis's `run_id`).
    run_id: String,
    /// The client port, once bound.
    client_port: std::sync::OnceLock<SocketAddr>,
    /// `maxclients`, which `CONFIG SET` may change.
    max_clients: std::sync::atomic::AtomicUsize,
    /// The keys clients `WATCH`.
    watches: Arc<watch::Watches>,
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
            history: Mutex::new(history),
            stats: Stats::default(),
            started: Instant::now(),
            shutdown: tokio::sync::watch::Sender::new(false),
            cluster: Mutex::new(ClusterState::default()),
            keeper: Mutex::new(None),
            handover: Default::default(),
            clients: Default::default(),
            run_id: run_id(),
            client_port: Default::default(),
            max_clients: options.limits.max_clients.into(),
            watches: Default::default(),
            options,
        })
    }

    /// When the node started, in seconds since the Unix epoch.
    pub(crate) fn started_unix_secs(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        now.saturating_sub(self.started.elapsed().as_secs())
    }

    pub(crate) fn clients(&self) -> &Arc<clients::Clients> {
        &self.clients
    }

    pub(crate) fn watches(&self) -> &Arc<watch::Watches> {
        &self.watches
    }

    /// Connected clients at most (`--maxclients`, `CONFIG SET maxclients`).
    pub(crate) fn max_clients(&self) -> usize {
        self.max_clients.load(Ordering::Relaxed)
    }

    /// `CONFIG RESETSTAT`: the counters of `INFO stats` and `errorstats`
    /// back to zero.
    pub(crate) fn reset_stats(&self) {
        let s = &self.stats;
        for counter in [
            &s.connections_received,
            &s.rejected_connections,
            &s.commands_processed,
            &s.keyspace_hits,
            &s.keyspace_misses,
            &s.errors,
            &s.net_input_bytes,
            &s.net_output_bytes,
            &s.expired_keys,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        s.error_codes.lock().expect("error codes lock").clear();
    }

    pub(crate) fn set_max_clients(&self, n: usize) {
        self.max_clients.store(n, Ordering::Relaxed);
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
        self.promote_at(Epoch(0))
    }

    /// [`Node::promote`] to an epoch above `at_least` (the term an election
    /// in etcd gave) as well as every epoch this node has seen.
    pub fn promote_at(&self, at_least: Epoch) -> Result<(Lsn, Epoch), PromoteError> {
        let follower = self.take_follower()?;
        let started = Instant::now();
        let relay_address = follower.relay_address();
        let upstream = follower.upstream();
        let (engine, history) = Self::promote_follower(*follower, at_least)?;
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
                let e = PromoteError::Incomplete { epoch, problems };
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
    fn promote_follower(
        follower: Follower,
        at_least: Epoch,
    ) -> Result<(Engine, EpochHistory), PromoteError> {
        follower.promote(at_least).map_err(|e| {
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
        if let Some(lease) = &self.options.write_lease {
            db = db.with_lease(lease.clone());
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

    /// A primary steps down in place to follow the primary replicating at
    /// `repl` (whose epoch is `epoch`): its engine becomes a follower's,
    /// its blocks stay, and the new primary decides what of them it keeps
    /// (a partial resync, or a digest resync that sends only the blocks
    /// that differ). Blocking: run it off the async workers.
    pub fn demote(&self, repl: &str, epoch: Epoch) -> Result<(), DemoteError> {
        let settings = self
            .options
            .follow
            .clone()
            .ok_or(DemoteError::NotConfigured)?;
        let to = cmd::secondary::connect_to(settings.transport, repl, None)?;
        let db = {
            let mut role = self.role.write().expect("role lock");
            match std::mem::replace(&mut *role, Serving::Promoting) {
                Serving::Primary(db) => db,
                other => {
                    *role = other;
                    return Err(DemoteError::NotAPrimary);
                }
            }
        };
        let started = Instant::now();
        let lsn = db.lsn();
        let engine = db.engine().clone();
        // The controller stops once the last clone (a request finishing)
        // is gone; commits from here on fail, the engine being a follower's.
        drop(db);
        engine.demote(settings.indexes);
        let history = self.history.lock().expect("history lock").clone();
        let was = history.current();
        let config = SecondaryNodeConfig {
            primary: to,
            primary_address: repl.to_string(),
            secret: settings.secret.clone(),
            node: settings.node_id,
            mode: settings.mode,
            indexes: settings.indexes,
            downstream: None,
            databases: settings.databases.clone(),
            persister: self.options.persister.clone(),
            progress_bar: false,
        };
        let node = SecondaryNode::start_with(engine, history, epoch, config);
        let follower = Follower::new(
            node,
            (None, None),
            settings.mode,
            settings.transport,
            settings.secret,
            settings.node_id,
        )
        .stepped_down_from(was);
        *self.role.write().expect("role lock") = Serving::Secondary(Box::new(follower));
        tracing::warn!(
            lsn = lsn.0, %epoch, primary = repl, ms = started.elapsed().as_millis() as u64,
            "stepped down: now a secondary (transactions above the new primary's history are discarded)"
        );
        Ok(())
    }

    /// Follows the primary replicating at `repl` (a `host:port`).
    pub(crate) fn repoint_to(&self, repl: &str) -> Result<(), RepointError> {
        use std::net::ToSocketAddrs;
        let address = repl
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| error::UpstreamError::NoAddress {
                address: repl.to_string(),
            })?;
        self.repoint(address, None)
    }

    /// What the coordinator's agent does with this node now.
    pub(crate) fn standing(&self) -> Standing {
        match &*self.role.read().expect("role lock") {
            Serving::Primary(_) => Standing::Primary,
            Serving::Secondary(_) => Standing::Secondary,
            Serving::Promoting => Standing::Changing,
        }
    }

    /// A secondary's position, for its candidacy.
    pub(crate) fn position(&self) -> Option<Position> {
        match &*self.role.read().expect("role lock") {
            Serving::Secondary(f) => Some(f.position()),
            _ => None,
        }
    }

    pub(crate) fn write_lease(&self) -> Arc<WriteLease> {
        self.options
            .write_lease
            .clone()
            .unwrap_or_else(|| Arc::new(WriteLease::new()))
    }

    pub(crate) fn update_cluster(&self, f: impl FnOnce(&mut ClusterState)) {
        f(&mut self.cluster.lock().expect("cluster lock"));
    }

    /// What this node knows of its cluster (empty without a coordinator).
    pub(crate) fn cluster(&self) -> ClusterState {
        self.cluster.lock().expect("cluster lock").clone()
    }

    /// The coordinator's lease keeper, if the agent runs.
    pub(crate) fn lease_keeper(&self) -> Option<Arc<LeaseKeeper>> {
        self.keeper.lock().expect("keeper lock").clone()
    }

    pub(crate) fn handover(&self) -> &coordinator::handover::Handover {
        &self.handover
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts the coordinator's agent, if configured, now that clients
    /// reach this node at `client` (the bound address).
    pub(crate) fn start_coordinator(self: &Arc<Self>, client: SocketAddr) -> std::io::Result<()> {
        let (Some(config), Some(follow)) = (&self.options.coordinator, &self.options.follow) else {
            return Ok(());
        };
        let repl = match &*self.role.read().expect("role lock") {
            Serving::Primary(db) => db.replicator().map(|r| r.local_addr().to_string()),
            Serving::Secondary(f) => f.relay_address().map(|a| a.to_string()),
            Serving::Promoting => None,
        }
        .unwrap_or_default();
        let (client, repl) = match &config.announce {
            // The announced host, with the ports bound here.
            Some(announce) => {
                let host = announce
                    .rsplit_once(':')
                    .map_or(announce.as_str(), |(h, _)| h);
                let repl_port = repl.rsplit_once(':').map_or("", |(_, p)| p);
                (announce.clone(), format!("{host}:{repl_port}"))
            }
            None => (client.to_string(), repl),
        };
        let keeper = coordinator::agent::start(self, config.clone(), follow.node_id, client, repl)?;
        *self.keeper.lock().expect("keeper lock") = Some(keeper);
        Ok(())
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// 40 hex digits that differ from one run to the next.
fn run_id() -> String {
    use xxhash_rust::xxh3::xxh3_128_with_seed;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = std::process::id() as u64;
    let a = xxh3_128_with_seed(&now.to_le_bytes(), seed);
    let b = xxh3_128_with_seed(&a.to_le_bytes(), seed);
    format!("{a:032x}{:08x}", b as u32)
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

impl Node {
    /// The error a client gets for `r`: with a coordinator, a write sent to
    /// a secondary is told where the primary is (clients reconnect there).
    pub(crate) fn refusal(&self, r: Reject) -> String {
        match (r, self.cluster().primary) {
            (Reject::ReadOnly, Some(p)) => {
                format!("{} The primary is at {}.", r.message(), p.client)
            }
            _ => r.message().to_string(),
        }
    }
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
