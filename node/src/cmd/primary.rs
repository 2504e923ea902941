//! `hotblock-node`'s command line and start-up: flags (and the config
//! file), recovery from the data directory, replication, then the client
//! port until a shutdown. A library module so that `hotblock-bench` can run
//! the same node as a process of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::error::StartupError;
use crate::resp::RespLimits;
use crate::{cli, serve_until_shutdown, FollowSettings, Node, NodeOptions, ServerLimits};
use clap::Parser;
use hotblock_core::repl::{Epoch, EpochHistory, NodeId, PrimaryConfig};
use hotblock_core::{Engine, EngineConfig, IndexMode, Lsn, Role};
use hotblock_persist::{FsyncPolicy, PersistConfig, PersistedState, Persister};
use hotblock_primary::WriteLease;
use hotblock_primary::{Db, DbConfig, ReplicationConfig};
use hotblock_secondary::{SecondaryNode, SecondaryNodeConfig};
use std::sync::Arc;

/// A hotblock primary: records in RAM blocks, served over RESP (the Redis
/// protocol), each transaction streamed to secondaries
/// (`hotblock-secondary --primary <this --repl-listen>`).
///
/// Settings come from flags, then the --config file (TOML, keys named as
/// the flags: `sync-quorum = 1`), then the environment variables named.
#[derive(Debug, Parser)]
#[command(name = "hotblock-node", version, args_override_self = true)]
pub struct Args {
    /// Address for clients (RESP).
    #[arg(long, default_value = "127.0.0.1:7379")]
    listen: SocketAddr,
    /// Address for secondaries.
    #[arg(long, default_value = "127.0.0.1:7380")]
    repl_listen: SocketAddr,
    /// How secondaries connect: TCP, or QUIC (TLS 1.3; secondaries pin the
    /// certificate fingerprint this node logs at start).
    #[arg(long, value_enum, default_value = "tcp")]
    transport: cli::Transport,
    /// Clients must AUTH with this password. Required to listen beyond loopback.
    #[arg(long, env = "HOTBLOCK_PASSWORD", hide_env_values = true, value_parser = cli::parse_secret)]
    requirepass: Option<String>,
    /// Secret secondaries prove by challenge. Required to serve them beyond loopback.
    #[arg(long, env = "HOTBLOCK_REPL_SECRET", hide_env_values = true, value_parser = cli::parse_secret)]
    repl_secret: Option<String>,
    /// Replication handshakes in progress at once: past it, new connections
    /// to --repl-listen are closed at once (a flood of peers that never
    /// prove the secret holds this many descriptors at most).
    #[arg(long, default_value_t = hotblock_primary::limits::REPL_PENDING_HANDSHAKES_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    repl_max_pending_handshakes: u64,
    #[command(flatten)]
    sync: cli::SyncArgs,
    /// Refuse writes while fewer than N secondaries acknowledged within --max-lag-ms.
    #[arg(long, default_value_t = 0)]
    min_secondaries: usize,
    /// How recently a secondary must have acknowledged to count for
    /// --min-secondaries.
    #[arg(long, default_value_t = 10_000)]
    max_lag_ms: u64,
    /// Block size of new databases (a power of two, 4096 to 1048576); a
    /// record (key, values, payload) must fit in one block.
    #[arg(long)]
    block_size: Option<usize>,
    /// Most memory for blocks (`1073741824`, `512mb`, `2gb`); past it
    /// writes get -OOM and reads go on. Default: no limit.
    #[arg(long, value_parser = cli::parse_size)]
    maxmemory: Option<u64>,
    /// Keep a snapshot and a log of every commit here, and recover from
    /// them at start. The directory must exist.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --data-dir: when commits reach the disk. `always`: before OK
    /// (nothing acknowledged is lost); `everysec`: within a second (a power
    /// loss loses up to 1 s; a crash of this process, nothing); `no`: when
    /// the OS writes back.
    #[arg(long, default_value = "everysec")]
    fsync: FsyncPolicy,
    /// This node's id in the epochs it starts (1 to 65535). Default: the
    /// one kept in --data-dir (made at random the first time), else random.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    node_id: Option<u16>,
    /// Most connected clients.
    #[arg(long, default_value_t = 10_000)]
    maxclients: usize,
    /// Reply bytes buffered for one client before they are written out
    /// (`64mb`; 0: no limit, as in Redis); a client that takes none of them
    /// for --client-output-stall-ms is dropped (it pipelines and never
    /// reads).
    #[arg(long, value_parser = cli::parse_size, default_value = "64mb")]
    client_output_buffer_limit: u64,
    #[arg(long, default_value_t = 30_000)]
    client_output_stall_ms: u64,
    /// Bytes held for one client's requests not yet whole (`1gb`, Redis's
    /// default); a client past it is closed.
    #[arg(long, value_parser = cli::parse_request_limit, default_value = "1gb")]
    client_query_buffer_limit: u64,
    /// Longest bulk string in a request (`512mb`, Redis's default); a
    /// longer one closes the client with a protocol error.
    #[arg(long, value_parser = cli::parse_request_limit, default_value = "512mb")]
    proto_max_bulk_len: u64,
    /// Check a secondary's blocks against this node's digests this often (0: never).
    #[arg(long, default_value_t = 0)]
    verify_interval_ms: u64,
    /// How this node replicates when it serves as a secondary: after it
    /// steps down for a newer primary (with --coordinator).
    #[arg(long, value_enum, default_value = "sync")]
    mode: cli::ModeArg,
    #[command(flatten)]
    coordinator: cli::CoordinatorArgs,
    /// TOML file with any of these settings; flags win.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `hotblock-node`'s `main`: parses the command line, runs until stopped.
pub fn main() -> ExitCode {
    main_from(std::env::args_os().collect())
}

/// `main` with the command line given (the program name first).
pub fn main_from(argv: Vec<std::ffi::OsString>) -> ExitCode {
    cli::main_with("hotblock-node", argv, |a: &Args| a.config.as_deref(), run)
}

/// Runs a node with `args` until `SHUTDOWN` or a signal.
pub fn run(args: Args) -> Result<(), StartupError> {
    check_exposure(&args)?;
    let engine_config = EngineConfig {
        memory_limit_bytes: args.maxmemory,
        ..Default::default()
    };
    let Recovered {
        engine,
        persister,
        history,
        fenced_by,
        node_id,
    } = match &args.data_dir {
        Some(dir) => recover(&args, dir, &engine_config)?,
        None => Recovered {
            engine: Engine::new(engine_config.clone()),
            persister: None,
            // A log from nothing: a lineage of its own, so that secondaries
            // of an earlier life of this node resync instead of taking it
            // for the continuation of theirs.
            history: EpochHistory::default().with_lineage(cli::random_lineage()),
            fenced_by: None,
            node_id: cli::node_id(args.node_id, None)?,
        },
    };
    let replication = replication_config(&args, &history)?;
    let db_config = DbConfig {
        engine: engine_config,
        auto_compact: true,
    };
    let coordinator = args.coordinator.config(args.mode, args.sync.sync_quorum);
    if let Some(config) = &coordinator {
        cli::check_coordinated(
            args.transport,
            args.listen,
            args.coordinator.announce.as_deref(),
            args.data_dir.is_some() || args.node_id.is_some(),
            args.sync.on_sync_timeout,
        )?;
        // It writes nothing and serves no secondary before etcd says what
        // it is: a cluster that exists has its primary already.
        if let Some((primary, cluster_epoch)) = cli::cluster_primary(config) {
            let joining = Joining {
                engine,
                persister,
                history,
                node_id,
                primary,
                cluster_epoch,
                replication,
                db_config,
            };
            return join_as_secondary(&args, config.clone(), joining);
        }
    }
    // With a coordinator, writes wait for it: the gate opens once etcd
    // says this node is the primary.
    let write_lease = coordinator.is_some().then(|| Arc::new(WriteLease::new()));
    let mut db = start_db(
        &args,
        engine,
        persister.as_ref(),
        fenced_by,
        replication.clone(),
        db_config.clone(),
    )?;
    if let Some(lease) = &write_lease {
        db = db.with_lease(lease.clone());
    }
    let mut options = node_options(&args, db_config, persister);
    if let Some(config) = args.coordinator.config(args.mode, args.sync.sync_quorum) {
        // Serving secondaries again on the same address if it is elected
        // after stepping down.
        let bound = db.replicator().map(|r| r.local_addr().to_string());
        let mut promote = replication;
        if let Some(addr) = bound.and_then(|a| a.parse().ok()) {
            promote.listen = promote.listen.at(addr);
        }
        options.promote_replication = Some(promote);
        options.follow = Some(FollowSettings {
            mode: args.mode.mode(),
            transport: args.transport,
            secret: cli::repl_secret(args.repl_secret.as_deref()),
            node_id,
            indexes: IndexMode::Maintained,
            databases: Vec::new(),
        });
        options.coordinator = Some(config);
        options.write_lease = write_lease;
    }
    let node = Node::primary(db, history, options).map_err(|source| StartupError::Engine {
        what: "creating the default database",
        source,
    })?;
    serve_until_shutdown(node, args.listen)
}

/// What `hotblock-node` recovered, to start as a secondary of the
/// cluster's primary instead.
struct Joining {
    engine: Engine,
    persister: Option<Persister>,
    history: EpochHistory,
    node_id: NodeId,
    /// The primary's replication address, as etcd gives it.
    primary: String,
    /// The cluster's epoch, as etcd gives it: no older primary is followed.
    cluster_epoch: Epoch,
    replication: ReplicationConfig,
    db_config: DbConfig,
}

/// `hotblock-node --coordinator` of a cluster that exists: it starts as a
/// secondary (its blocks kept; the primary decides what of them it can
/// keep) and relays on its --repl-listen, unavailable until it is current;
/// the coordinator's agent does the rest (it may win the next election).
fn join_as_secondary(
    args: &Args,
    config: crate::coordinator::Config,
    j: Joining,
) -> Result<(), StartupError> {
    tracing::info!(primary = %j.primary, "the cluster exists in etcd: starting as a secondary");
    j.engine.demote(IndexMode::Maintained);
    let (relay, relay_error) =
        match crate::cmd::secondary::start_relay(&j.engine, &j.history, Some(&j.replication)) {
            Ok(relay) => (relay, None),
            Err(e) => (None, Some(format!("relay: {e}"))),
        };
    if let Some(relay) = &relay {
        relay.withhold();
    }
    let follow = FollowSettings {
        mode: args.mode.mode(),
        transport: args.transport,
        secret: cli::repl_secret(args.repl_secret.as_deref()),
        node_id: j.node_id,
        indexes: IndexMode::Maintained,
        databases: Vec::new(),
    };
    let to = crate::cmd::secondary::connect_to(args.transport, &j.primary, None)?;
    let secondary = SecondaryNode::start_with(
        j.engine,
        j.history.clone(),
        j.history.current().max(j.cluster_epoch),
        SecondaryNodeConfig {
            primary: to,
            primary_address: j.primary.clone(),
            secret: follow.secret.clone(),
            node: j.node_id,
            mode: follow.mode,
            indexes: follow.indexes,
            downstream: relay
                .clone()
                .map(|r| r as Arc<dyn hotblock_secondary::Downstream>),
            databases: Vec::new(),
            persister: j.persister.clone(),
            progress_bar: false,
        },
    );
    let mut promote = j.replication;
    if let Some(addr) = relay.as_ref().and_then(|r| r.local_addr().parse().ok()) {
        promote.listen = promote.listen.at(addr);
    }
    let follower = crate::Follower::new(
        secondary,
        (relay, relay_error),
        follow.mode,
        follow.transport,
        follow.secret.clone(),
        follow.node_id,
    );
    let mut options = node_options(args, j.db_config, j.persister);
    options.promote_replication = Some(promote);
    options.follow = Some(follow);
    options.coordinator = Some(config);
    options.write_lease = Some(Arc::new(WriteLease::new()));
    serve_until_shutdown(Node::secondary(follower, options), args.listen)
}

/// Refuses to listen beyond loopback without the password or secret
/// that port needs.
fn check_exposure(args: &Args) -> Result<(), StartupError> {
    cli::check_exposure(
        "clients",
        args.listen,
        args.requirepass.is_some(),
        "--requirepass",
    )?;
    cli::check_exposure(
        "secondaries",
        args.repl_listen,
        args.repl_secret.is_some(),
        "--repl-secret",
    )
}

/// What a start finds: the engine, and with --data-dir the files'
/// persister and state.
struct Recovered {
    engine: Engine,
    persister: Option<Persister>,
    history: EpochHistory,
    /// The newer epoch that fenced this node before it stopped, if any.
    fenced_by: Option<Epoch>,
    node_id: NodeId,
}

/// Recovers from the data directory `dir`: the engine with its indexes
/// rebuilt, and a new epoch unless the node was fenced.
fn recover(
    args: &Args,
    dir: &Path,
    engine_config: &EngineConfig,
) -> Result<Recovered, StartupError> {
    let (persister, engine, state) = Persister::open(
        PersistConfig {
            fsync: args.fsync,
            ..PersistConfig::new(dir.to_path_buf())
        },
        EngineConfig {
            role: Role::Follower(IndexMode::Deferred),
            ..engine_config.clone()
        },
    )?;
    engine.promote().map_err(|source| StartupError::Engine {
        what: "rebuilding indexes",
        source,
    })?;
    persister.attach(&engine);
    // Made and kept on the first start, so the id is the same after every
    // restart (the epoch a restart starts carries it).
    let node = cli::node_id(args.node_id, Some(&persister))?;
    let mut history = state.history;
    if history.lineage() == 0 {
        // A new data directory (or one from before lineages): named now,
        // and kept with the state below.
        history = history.with_lineage(cli::random_lineage());
        persister.save_state(&PersistedState {
            history: history.clone(),
            epoch_seen: state.epoch_seen,
        })?;
    }
    let coordinated = args.coordinator.coordinator.is_some();
    // Fenced before it stopped (a newer primary exists): it stays
    // fenced, rather than start an epoch above the one that
    // replaced it.
    let fenced_by = (state.epoch_seen > history.current()).then_some(state.epoch_seen);
    // With a coordinator, epochs come from etcd's elections: a restart
    // starts none of its own (it would outrank the primary elected while
    // this node was down, and refuse its frames).
    if engine.lsn() > Lsn::ZERO && fenced_by.is_none() && !coordinated {
        // A restart writes under a new epoch: secondaries that hold
        // transactions this node lost (a power loss under
        // `everysec`) then see the fork instead of taking new
        // transactions at the same LSNs for a continuation.
        history.promote(engine.lsn(), node, state.epoch_seen);
        persister.save_state(&PersistedState {
            history: history.clone(),
            epoch_seen: history.current(),
        })?;
    }
    tracing::info!(dir = %dir.display(), lsn = %engine.lsn(), epoch = %history.current(), fsync = %args.fsync, "recovered from the data directory");
    Ok(Recovered {
        engine,
        persister: Some(persister),
        history,
        fenced_by,
        node_id: node,
    })
}

/// How this node serves secondaries (--repl-listen and the sync flags).
fn replication_config(
    args: &Args,
    history: &EpochHistory,
) -> Result<ReplicationConfig, StartupError> {
    Ok(ReplicationConfig {
        listen: cli::listen_on(args.transport, args.repl_listen, args.data_dir.as_deref())?,
        secret: cli::repl_secret(args.repl_secret.as_deref()),
        protocol: args.sync.apply(PrimaryConfig {
            min_secondaries: args.min_secondaries,
            max_lag: Duration::from_millis(args.max_lag_ms),
            verify_interval: (args.verify_interval_ms > 0)
                .then(|| Duration::from_millis(args.verify_interval_ms)),
            ..PrimaryConfig::default()
        }),
        history: history.clone(),
        pending_handshakes_max: args.repl_max_pending_handshakes as usize,
    })
}

/// The primary's [`Db`] around `engine`: logging to the data directory,
/// serving secondaries, and fenced if it was before it stopped.
fn start_db(
    args: &Args,
    engine: Engine,
    persister: Option<&Persister>,
    fenced_by: Option<Epoch>,
    replication: ReplicationConfig,
    db_config: DbConfig,
) -> Result<Db, StartupError> {
    let mut db = Db::from_engine(engine, db_config);
    if let Some(p) = persister {
        db = db.with_persistence(p.clone());
    }
    let db = db
        .with_replication(replication)
        .map_err(|source| StartupError::Replication {
            listen: args.repl_listen.to_string(),
            source,
        })?;
    if let (Some(epoch), Some(r)) = (fenced_by, db.replicator()) {
        tracing::error!(%epoch, "this node was fenced by a newer primary before it stopped: it refuses writes; start it as hotblock-secondary --primary <the new primary> --data-dir <this directory> to rejoin");
        r.fence(epoch);
    }
    Ok(db)
}

/// The node's options: client limits, and the data directory's persister.
fn node_options(args: &Args, db_config: DbConfig, persister: Option<Persister>) -> NodeOptions {
    NodeOptions {
        requirepass: args.requirepass.clone(),
        limits: ServerLimits {
            max_clients: args.maxclients,
            output_buffer_max: match args.client_output_buffer_limit {
                0 => usize::MAX,
                limit => limit as usize,
            },
            output_stall: Duration::from_millis(args.client_output_stall_ms),
            resp: RespLimits {
                query_buffer_max: usize::try_from(args.client_query_buffer_limit)
                    .unwrap_or(usize::MAX),
                bulk_len_max: usize::try_from(args.proto_max_bulk_len).unwrap_or(usize::MAX),
                ..RespLimits::default()
            },
        },
        serve_reads: true,
        promote_replication: None,
        block_size: args.block_size,
        db: db_config,
        persister,
        fault_injection: std::env::var("HOTBLOCK_FAULT_INJECTION").is_ok_and(|v| v == "1"),
        coordinator: None,
        write_lease: None,
        follow: None,
    }
}
