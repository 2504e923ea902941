//! `hotblock-secondary`'s command line and start-up: flags (and the config
//! file), recovery from the data directory, the relay (with --repl-listen)
//! and the follower, then the RESP port until a shutdown. A library module
//! so that `hotblock-bench` can run the same secondary as a process of its
//! own.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{self, ModeArg, Transport};
use crate::error::{StartupError, UpstreamError};
use crate::relay::Relay;
use crate::Follower;
use crate::{serve_until_shutdown, FollowSettings, Node, NodeOptions, ServerLimits};
use clap::Parser;
use hotblock_core::repl::{Epoch, EpochHistory, PrimaryConfig};
use hotblock_core::{Engine, EngineConfig, IndexMode, Role};
use hotblock_nic_transport::{ConnectTo, Secret, Trust};
use hotblock_persist::{FsyncPolicy, PersistConfig, Persister};
use hotblock_primary::WriteLease;
use hotblock_primary::{DbConfig, ReplicationConfig, StartError};
use hotblock_secondary::{SecondaryNode, SecondaryNodeConfig};

/// A hotblock secondary: applies a primary's transactions to its own
/// blocks and acknowledges each once applied (and logged, with
/// --data-dir). Passive by default: it keeps blocks only, and its RESP port
/// (--listen) answers PING, INFO, ROLE, REPLICAOF NO ONE and SHUTDOWN.
/// `REPLICAOF NO ONE` promotes it in place: indexes rebuilt, a new epoch,
/// writes on --listen and secondaries on --repl-listen.
///
/// Settings come from flags, then the --config file (TOML, keys named as
/// the flags), then the environment variables named.
#[derive(Debug, Parser)]
#[command(name = "hotblock-secondary", version, args_override_self = true)]
pub struct Args {
    /// The primary's replication address (its --repl-listen). With
    /// --coordinator, etcd says who the primary is, and this may be left out.
    #[arg(long, required_unless_present = "coordinator")]
    primary: Option<String>,
    #[arg(long, value_enum, default_value = "async")]
    mode: ModeArg,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// With --transport tls or quic: the SHA-256 of the primary's
    /// certificate (hex, as the primary logs it). Only that certificate is
    /// accepted.
    #[arg(long)]
    primary_fingerprint: Option<String>,
    /// The secret the primary expects.
    #[arg(long, env = "HOTBLOCK_REPL_SECRET", hide_env_values = true, value_parser = cli::parse_secret)]
    repl_secret: Option<String>,
    /// Replication handshakes in progress at once: past it, new connections
    /// to --repl-listen are closed at once (a flood of peers that never
    /// prove the secret holds this many descriptors at most).
    #[arg(long, default_value_t = hotblock_primary::limits::REPL_PENDING_HANDSHAKES_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    repl_max_pending_handshakes: u64,
    /// RESP port: admin commands and, with --serve-reads, reads.
    #[arg(long, default_value = "127.0.0.1:7381")]
    listen: SocketAddr,
    /// Keep indexes and answer GET, EXISTS, DBSIZE and REC.* reads.
    #[arg(long)]
    serve_reads: bool,
    /// Serve downstream secondaries (a relay); after promotion, this
    /// node's secondaries connect here.
    #[arg(long)]
    repl_listen: Option<SocketAddr>,
    /// Clients of --listen must AUTH with this password.
    #[arg(long, env = "HOTBLOCK_PASSWORD", hide_env_values = true, value_parser = cli::parse_secret)]
    requirepass: Option<String>,
    /// Persist blocks and the log here; recover from them on restart and
    /// resume by partial resync. The directory must exist.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --data-dir: `always` acknowledges only what is on disk;
    /// `everysec` and `no` acknowledge once applied and logged.
    #[arg(long, default_value = "everysec")]
    fsync: FsyncPolicy,
    /// Replicate only these databases (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    databases: Vec<String>,
    /// This node's id, in the epoch it starts when promoted (1 to 65535).
    /// Default: the one kept in --data-dir (made at random the first time),
    /// else random.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    node_id: Option<u16>,
    /// Most memory for blocks (`512mb`, `2gb`).
    #[arg(long, value_parser = cli::parse_size)]
    maxmemory: Option<u64>,
    /// Once promoted: how commits wait for this node's sync secondaries.
    #[command(flatten)]
    sync: cli::SyncArgs,
    /// Block size of databases created once promoted.
    #[arg(long)]
    block_size: Option<usize>,
    #[command(flatten)]
    coordinator: cli::CoordinatorArgs,
    /// TOML file with any of these settings; flags win.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `hotblock-secondary`'s `main`: parses the command line, runs until stopped.
pub fn main() -> ExitCode {
    main_from(std::env::args_os().collect())
}

/// `main` with the command line given (the program name first).
pub fn main_from(argv: Vec<std::ffi::OsString>) -> ExitCode {
    cli::main_with(
        "hotblock-secondary",
        argv,
        |a: &Args| a.config.as_deref(),
        run,
    )
}

/// Runs a secondary with `args` until `SHUTDOWN` or a signal.
pub fn run(args: Args) -> Result<(), StartupError> {
    check_exposure(&args)?;
    if args.mode == ModeArg::Sync && !args.databases.is_empty() {
        return Err(StartupError::Setting(
            "--databases with --mode sync: a secondary that holds some databases only cannot acknowledge commits to the others, so it counts toward no sync quorum; run it --mode async, or without --databases".into(),
        ));
    }
    let coordinator = args.coordinator.config(args.mode, args.sync.sync_quorum);
    if coordinator.is_some() {
        if args.repl_listen.is_none() {
            return Err(StartupError::Setting(
                "--coordinator needs --repl-listen: a secondary elected primary serves the others there".into(),
            ));
        }
        cli::check_coordinated(
            args.transport,
            args.listen,
            args.coordinator.announce.as_deref(),
            args.data_dir.is_some() || args.node_id.is_some(),
            args.sync.on_sync_timeout,
        )?;
    }
    // With a coordinator, the cluster's epoch as etcd has it: this node
    // follows no primary older than that (a copy started from nothing must
    // not catch up with a deposed one and then stand in elections).
    let (primary, cluster_epoch) = match (&args.primary, &coordinator) {
        (Some(primary), _) => (primary.clone(), Epoch(0)),
        (None, Some(config)) => cli::primary_from_coordinator(config),
        (None, None) => unreachable!("clap requires --primary without --coordinator"),
    };
    let connect = connect_to(
        args.transport,
        &primary,
        args.primary_fingerprint.as_deref(),
    )?;
    let mode = args.mode.mode();
    let indexes = match args.serve_reads {
        true => IndexMode::Maintained,
        false => IndexMode::Deferred,
    };
    let engine_config = EngineConfig {
        memory_limit_bytes: args.maxmemory,
        role: Role::Follower(indexes),
        ..Default::default()
    };
    let Recovered {
        engine,
        persister,
        history,
        epoch_seen,
    } = match &args.data_dir {
        Some(dir) => recover(&args, dir, &engine_config, indexes)?,
        None => Recovered {
            engine: Engine::new(engine_config.clone()),
            persister: None,
            history: EpochHistory::default(),
            epoch_seen: Default::default(),
        },
    };
    let secret = cli::repl_secret(args.repl_secret.as_deref());
    let relay_config = relay_config(&args, &secret)?;
    let (relay, relay_error) = match start_relay(&engine, &history, relay_config.as_ref()) {
        Ok(relay) => (relay, None),
        Err(e) => (None, Some(format!("relay: {e}"))),
    };
    if let (Some(relay), Some(_)) = (&relay, &coordinator) {
        // Its address may be where the primary was: secondaries that
        // still dial it must not get this node's state before it is
        // current.
        relay.withhold();
    }
    let node_id = cli::node_id(args.node_id, persister.as_ref())?;
    let config = SecondaryNodeConfig {
        primary: connect,
        primary_address: primary.clone(),
        secret: secret.clone(),
        node: node_id,
        mode,
        indexes,
        downstream: relay
            .clone()
            .map(|r| r as Arc<dyn hotblock_secondary::Downstream>),
        databases: args.databases.clone(),
        persister: persister.clone(),
        progress_bar: std::io::stderr().is_terminal(),
    };
    let follower =
        SecondaryNode::start_with(engine, history, epoch_seen.max(cluster_epoch), config);
    tracing::info!(%primary, ?mode, node = node_id.0, "following");
    let mut options = node_options(&args, relay_config, engine_config, persister);
    if let Some(config) = coordinator {
        options.follow = Some(FollowSettings {
            mode,
            transport: args.transport,
            secret: secret.clone(),
            node_id,
            indexes,
            databases: args.databases.clone(),
        });
        options.coordinator = Some(config);
        options.write_lease = Some(Arc::new(WriteLease::new()));
    }
    let node = Node::secondary(
        Follower::new(
            follower,
            (relay, relay_error),
            mode,
            args.transport,
            secret,
            node_id,
        ),
        options,
    );
    serve_until_shutdown(node, args.listen)
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
    if let Some(repl) = args.repl_listen {
        cli::check_exposure(
            "secondaries",
            repl,
            args.repl_secret.is_some(),
            "--repl-secret",
        )?;
    }
    Ok(())
}

/// What a start finds: the engine, and with --data-dir the files'
/// persister and state.
struct Recovered {
    engine: Engine,
    persister: Option<Persister>,
    history: EpochHistory,
    /// The newest epoch this node has seen.
    epoch_seen: Epoch,
}

/// Recovers from the data directory `dir`, keeping `indexes` from then on.
fn recover(
    args: &Args,
    dir: &Path,
    engine_config: &EngineConfig,
    indexes: IndexMode,
) -> Result<Recovered, StartupError> {
    let (persister, engine, state) = Persister::open(
        PersistConfig {
            fsync: args.fsync,
            ..PersistConfig::new(dir.to_path_buf())
        },
        engine_config.clone(),
    )?;
    // An old primary restarted as a secondary: its blocks stay; the
    // primary decides what of them it can keep.
    engine.demote(indexes);
    persister.attach(&engine);
    tracing::info!(dir = %dir.display(), lsn = %engine.lsn(), epoch = %state.history.current(), "recovered from the data directory");
    Ok(Recovered {
        engine,
        persister: Some(persister),
        history: state.history,
        epoch_seen: state.epoch_seen,
    })
}

/// With --repl-listen: how this node serves secondaries, as a relay and
/// once promoted.
fn relay_config(args: &Args, secret: &Secret) -> Result<Option<ReplicationConfig>, StartupError> {
    Ok(match args.repl_listen {
        Some(addr) => Some(ReplicationConfig {
            listen: cli::listen_on(args.transport, addr, args.data_dir.as_deref())?,
            secret: secret.clone(),
            protocol: PrimaryConfig::default(),
            history: EpochHistory::default(),
            pending_handshakes_max: args.repl_max_pending_handshakes as usize,
        }),
        None => None,
    })
}

/// Starts relaying to downstream secondaries, if configured to. A relay
/// that cannot start is logged, and the node follows without it.
pub(crate) fn start_relay(
    engine: &Engine,
    history: &EpochHistory,
    config: Option<&ReplicationConfig>,
) -> Result<Option<Arc<Relay>>, StartError> {
    match config {
        Some(config) => match Relay::start(engine, history, config.clone()) {
            Ok(relay) => Ok(Some(relay)),
            Err(e) => {
                // The secondary still follows, and says (log, INFO's
                // last_error) why it does not relay.
                tracing::error!(error = %e, "cannot start relaying");
                Err(e)
            }
        },
        None => Ok(None),
    }
}

/// The node's options; with a relay, it serves secondaries once promoted
/// under the sync flags.
fn node_options(
    args: &Args,
    relay_config: Option<ReplicationConfig>,
    engine_config: EngineConfig,
    persister: Option<Persister>,
) -> NodeOptions {
    let protocol = args.sync.apply(PrimaryConfig::default());
    NodeOptions {
        requirepass: args.requirepass.clone(),
        limits: ServerLimits::default(),
        serve_reads: args.serve_reads,
        promote_replication: relay_config.map(|r| ReplicationConfig { protocol, ..r }),
        block_size: args.block_size,
        db: DbConfig {
            engine: engine_config,
            auto_compact: true,
        },
        persister,
        fault_injection: std::env::var("HOTBLOCK_FAULT_INJECTION").is_ok_and(|v| v == "1"),
        coordinator: None,
        write_lease: None,
        follow: None,
    }
}

/// How to reach the primary at `address` (`host:port`) over `transport`;
/// TLS and QUIC pin `fingerprint`.
pub(crate) fn connect_to(
    transport: Transport,
    address: &str,
    fingerprint: Option<&str>,
) -> Result<ConnectTo, UpstreamError> {
    let addr: SocketAddr = address
        .to_socket_addrs()
        .map_err(|source| UpstreamError::Resolve {
            address: address.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| UpstreamError::NoAddress {
            address: address.to_string(),
        })?;
    Ok(match transport {
        Transport::Tcp => ConnectTo::Tcp(addr),
        Transport::Tls | Transport::Quic => {
            let hex = fingerprint.ok_or(UpstreamError::FingerprintMissing)?;
            let trust = Trust::Pinned(parse_fingerprint(hex)?);
            match transport {
                Transport::Quic => ConnectTo::Quic(addr, trust),
                _ => ConnectTo::Tls(addr, trust),
            }
        }
    })
}

fn parse_fingerprint(hex: &str) -> Result<[u8; 32], UpstreamError> {
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() != 64 {
        return Err(UpstreamError::BadFingerprint);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| UpstreamError::BadFingerprint)?;
    }
    Ok(out)
}
