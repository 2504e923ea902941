//! What `hotblock-node` and `hotblock-secondary` share at their command
//! line: the config file, sizes, secrets, logging and the loopback rule.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hotblock_core::repl::{PrimaryConfig, SyncPolicy};
use hotblock_nic_transport::{hex, ListenOn, TlsIdentity};

use crate::error::StartupError;

/// How secondaries and their primary connect (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Plain TCP: for a trusted network (the secret is proven, but frames
    /// are not encrypted).
    Tcp,
    /// TCP under TLS 1.3: the serving side logs its certificate's SHA-256,
    /// which the connecting side pins (`--primary-fingerprint`).
    Tls,
    /// QUIC, always under TLS 1.3, pinned the same way.
    Quic,
}

impl Transport {
    /// Whether the link is encrypted, and so needs a certificate.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Quic)
    }
}

/// The file in a data directory that keeps this node's TLS certificate and
/// key, so that a restart keeps the fingerprint secondaries pinned. One
/// file, replaced whole: `HBTLS1`, the certificate's length (u32 LE), the
/// certificate (DER), the PKCS#8 key (DER). Readable by the owner only.
const TLS_IDENTITY_FILE: &str = "tls-identity.hb";
const TLS_IDENTITY_MAGIC: &[u8] = b"HBTLS1";

/// Listening for secondaries on `addr` over `transport`. For TLS and QUIC,
/// the certificate kept in `data_dir` (made there at the first start), or
/// a fresh self-signed one without a data directory; its fingerprint is
/// logged.
pub fn listen_on(
    transport: Transport,
    addr: SocketAddr,
    data_dir: Option<&Path>,
) -> Result<ListenOn, StartupError> {
    if !transport.is_tls() {
        return Ok(ListenOn::Tcp(addr));
    }
    let identity = match data_dir {
        Some(dir) => kept_identity(dir)?,
        None => TlsIdentity::self_signed().map_err(StartupError::Tls)?,
    };
    tracing::info!(
        %addr,
        ?transport,
        fingerprint = %hex(&identity.fingerprint()),
        "TLS certificate: secondaries pin it with --primary-fingerprint <this>"
    );
    Ok(match transport {
        Transport::Quic => ListenOn::Quic(addr, identity),
        _ => ListenOn::Tls(addr, identity),
    })
}

/// The identity in `dir`, made and saved if there is none.
fn kept_identity(dir: &Path) -> Result<TlsIdentity, StartupError> {
    let path = dir.join(TLS_IDENTITY_FILE);
    let broken = |why: &str| {
        StartupError::BadFile {
        path: path.clone(),
        why: format!(
            "{why}; remove it to make a new certificate (secondaries must then pin the new fingerprint)"
        ),
    }
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let rest = bytes
                .strip_prefix(TLS_IDENTITY_MAGIC)
                .ok_or_else(|| broken("not a hotblock TLS identity"))?;
            let (len, rest) = rest
                .split_at_checked(4)
                .ok_or_else(|| broken("truncated"))?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (cert, key) = rest
                .split_at_checked(len)
                .ok_or_else(|| broken("truncated"))?;
            let identity = TlsIdentity::from_der(cert.to_vec(), key.to_vec());
            identity.check().map_err(|e| broken(&e.to_string()))?;
            Ok(identity)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = TlsIdentity::self_signed().map_err(StartupError::Tls)?;
            let (cert, key) = identity.to_der();
            let mut bytes = TLS_IDENTITY_MAGIC.to_vec();
            bytes.extend_from_slice(&(cert.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&cert);
            bytes.extend_from_slice(&key);
            write_private_atomically(&path, &bytes).map_err(|source| StartupError::File {
                path: path.clone(),
                source,
            })?;
            tracing::info!(file = %path.display(), "made a TLS certificate for this node");
            Ok(identity)
        }
        Err(source) => Err(StartupError::File { path, source }),
    }
}

/// Writes `bytes` as `path`, whole or not at all, readable by the owner
/// only: a temporary file, fsynced, renamed over, the directory fsynced.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("hb.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What a sync commit does when its quorum is late (`--on-sync-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnSyncTimeout {
    /// The commit fails with "outcome unknown"; never OK.
    Block,
    /// Late sync secondaries become async until they catch up.
    Degrade,
}

/// The sync flags of a node that serves secondaries (a secondary's apply
/// once it is promoted).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct SyncArgs {
    /// Sync secondaries that must apply a commit before it returns OK
    /// (0: commits never wait, async replication).
    #[arg(long, default_value_t = 0)]
    pub sync_quorum: usize,
    /// How long a sync commit waits for its quorum.
    #[arg(long, default_value_t = 1000)]
    pub sync_timeout_ms: u64,
    /// What a sync commit does when its quorum is late.
    #[arg(long, value_enum, default_value = "block")]
    pub on_sync_timeout: OnSyncTimeout,
}

impl SyncArgs {
    /// `base` with these settings.
    pub fn apply(&self, base: PrimaryConfig) -> PrimaryConfig {
        PrimaryConfig {
            sync_quorum: self.sync_quorum,
            sync_timeout: Duration::from_millis(self.sync_timeout_ms),
            on_sync_timeout: match self.on_sync_timeout {
                OnSyncTimeout::Block => SyncPolicy::Block,
                OnSyncTimeout::Degrade => SyncPolicy::Degrade,
            },
            ..base
        }
    }
}

/// How a node replicates when it is a secondary (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The primary's sync commits wait for this secondary.
    Sync,
    /// Commits do not wait; the primary tracks this secondary's lag.
    Async,
}

impl ModeArg {
    pub fn mode(self) -> hotblock_core::repl::Mode {
        match self {
            ModeArg::Sync => hotblock_core::repl::Mode::Sync,
            ModeArg::Async => hotblock_core::repl::Mode::Async,
        }
    }

    pub fn member_mode(self) -> crate::coordinator::MemberMode {
        match self {
            ModeArg::Sync => crate::coordinator::MemberMode::Sync,
            ModeArg::Async => crate::coordinator::MemberMode::Async,
        }
    }
}

/// Automatic failover through etcd: the same flags on both binaries.
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// etcd, for automatic failover: etcd://HOST:PORT[,HOST:PORT...]. The
    /// primary holds a lease there; when it lapses, the most up-to-date
    /// sync secondary takes over, the others follow it, and an old primary
    /// that comes back steps down in place. Without it, failover is manual
    /// (REPLICAOF NO ONE).
    #[arg(long)]
    pub coordinator: Option<crate::coordinator::CoordinatorUrl>,
    /// The cluster's name in etcd, and its master name for the Sentinel
    /// commands (SENTINEL get-master-addr-by-name NAME).
    #[arg(long, default_value = "hotblock")]
    pub cluster: String,
    /// The primary's lease: how long after it stops renewing (dies, hangs,
    /// loses etcd) another node may take over. It stops taking writes
    /// shortly before. etcd grants at least 2 s with its default timing.
    #[arg(long, default_value_t = crate::coordinator::FAILOVER_TIMEOUT_DEFAULT_MS,
          value_parser = clap::value_parser!(u64).range(1000..=crate::coordinator::FAILOVER_TIMEOUT_MAX_MS))]
    pub failover_timeout_ms: u64,
    /// The client address (HOST:PORT) other nodes and clients should see
    /// for this node (behind NAT, say). Default: the address it listens on.
    #[arg(long)]
    pub announce: Option<String>,
    /// Let this node stand in elections though it replicates async: it may
    /// lack the last writes the old primary acknowledged (the async window).
    #[arg(long)]
    pub failover_async: bool,
}

impl CoordinatorArgs {
    /// The coordinator's settings, if `--coordinator` was given.
    pub fn config(&self, mode: ModeArg, sync_quorum: usize) -> Option<crate::coordinator::Config> {
        Some(crate::coordinator::Config {
            url: self.coordinator.clone()?,
            cluster: self.cluster.clone(),
            failover_timeout: Duration::from_millis(self.failover_timeout_ms),
            announce: self.announce.clone(),
            mode: mode.member_mode(),
            candidate: mode == ModeArg::Sync || self.failover_async,
            sync_quorum,
        })
    }
}

/// The replication address of the cluster's primary, read from etcd: the
/// live primary's, else the last one elected (an election then follows);
/// `None` if the cluster does not exist yet. Waits for etcd to answer.
pub fn cluster_primary(
    config: &crate::coordinator::Config,
) -> Option<(String, hotblock_core::repl::Epoch)> {
    use crate::coordinator::records::{self, Keys, PrimaryRecord};
    let etcd = crate::coordinator::Etcd::new(config.url.clone(), Duration::from_secs(2));
    let keys = Keys::new(&config.cluster);
    let mut said = false;
    loop {
        let read = [keys.primary(), keys.term()].map(|key| {
            let kv = etcd.get(&key).map_err(|e| e.to_string())?;
            kv.map(|kv| records::parse::<PrimaryRecord>(&key, &kv.value))
                .transpose()
        });
        match read {
            [Ok(Some(p)), _] | [Ok(None), Ok(Some(p))] => {
                return Some((p.repl, hotblock_core::repl::Epoch(p.epoch)))
            }
            [Ok(None), Ok(None)] => return None,
            [Err(e), _] | [_, Err(e)] => {
                if !said {
                    tracing::warn!(error = %e, coordinator = %config.url, "cannot read the cluster from etcd yet; retrying");
                    said = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`cluster_primary`], waiting until the cluster exists
/// (`hotblock-secondary --coordinator` without `--primary`).
pub fn primary_from_coordinator(
    config: &crate::coordinator::Config,
) -> (String, hotblock_core::repl::Epoch) {
    let mut said = false;
    loop {
        if let Some(primary) = cluster_primary(config) {
            return primary;
        }
        if !said {
            tracing::info!(cluster = %config.cluster, coordinator = %config.url, "waiting for the cluster's primary to appear in etcd");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `--coordinator` cannot work with yet, or without: refused at start.
pub fn check_coordinated(
    transport: Transport,
    listen: SocketAddr,
    announce: Option<&str>,
    stable_id: bool,
    on_sync_timeout: OnSyncTimeout,
) -> Result<(), StartupError> {
    let refuse = |why: &str| Err(StartupError::Setting(format!("--coordinator: {why}")));
    if transport != Transport::Tcp {
        return refuse("--transport tcp only for now (the nodes do not publish their certificate fingerprints in etcd yet)");
    }
    if listen.ip().is_unspecified() && announce.is_none() {
        return refuse(&format!(
            "--listen {listen} is no address others can dial: give --announce HOST:PORT"
        ));
    }
    if !stable_id {
        return refuse("give --data-dir or --node-id: the cluster counts its members by id, and a random id each start would leave a member that never returns");
    }
    if on_sync_timeout == OnSyncTimeout::Degrade {
        return refuse("--on-sync-timeout degrade acknowledges writes no secondary holds, which an election cannot find");
    }
    Ok(())
}

/// Parses the command line; with `--config FILE`, the file's settings are
/// read first and the command line's win.
///
/// The file is TOML with the flags' names as keys (`repl-listen =
/// "127.0.0.1:7380"`, `sync-quorum = 1`, `serve-reads = true`). Each key
/// becomes the flag it names, placed before the real arguments, so clap
/// checks the file exactly as it checks flags (an unknown key is an unknown
/// flag) and a later flag overrides it. Environment variables
/// (`HOTBLOCK_PASSWORD`, `HOTBLOCK_REPL_SECRET`) count only where neither
/// gives the setting.
pub fn parse_with_config<A: Parser>(
    argv: Vec<OsString>,
    config_of: impl Fn(&A) -> Option<&std::path::Path>,
) -> A {
    let args = A::parse_from(argv.clone());
    let Some(path) = config_of(&args) else {
        return args;
    };
    let from_file = match config_args(path) {
        Ok(from_file) => from_file,
        Err(e) => A::command()
            .error(
                clap::error::ErrorKind::Io,
                format!("config file {}: {e}", path.display()),
            )
            .exit(),
    };
    let mut argv = argv;
    let program = if argv.is_empty() {
        OsString::new()
    } else {
        argv.remove(0)
    };
    A::parse_from(std::iter::once(program).chain(from_file).chain(argv))
}

/// A binary's `main`: parses `argv` (with the config file), starts the
/// logs, runs, and on failure logs the error and says it on stderr.
pub fn main_with<A: Parser>(
    name: &str,
    argv: Vec<OsString>,
    config_of: impl Fn(&A) -> Option<&std::path::Path>,
    run: impl FnOnce(A) -> Result<(), StartupError>,
) -> std::process::ExitCode {
    let args = parse_with_config(argv, config_of);
    init_logging();
    handle_file_size_signal();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A file grown past the process's file-size limit (RLIMIT_FSIZE) sends
/// SIGXFSZ, which kills by default; handled, the write fails with EFBIG
/// instead, and that is reported like a full disk (writes refused, nothing
/// lost). Installed before anything is recovered or written. The handler
/// tokio installs stays for the life of the process, whatever runtime
/// asked for it.
fn handle_file_size_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let installed = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async { signal(SignalKind::from_raw(libc::SIGXFSZ)).map(drop) })
                .map_err(|e| e.to_string())
        });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot handle SIGXFSZ: a file-size limit would kill this process");
    }
}

/// A TOML file's settings as `--key value` arguments.
pub fn config_args(path: &std::path::Path) -> Result<Vec<OsString>, ConfigFileError> {
    let text = std::fs::read_to_string(path)?;
    let table: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for (key, value) in table {
        if key == "config" {
            return Err(ConfigFileError::Nested);
        }
        let flag = OsString::from(format!("--{key}"));
        match value {
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.extend([flag, s.into()]),
            toml::Value::Integer(i) => out.extend([flag, i.to_string().into()]),
            toml::Value::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.extend([flag, items.join(",").into()]);
            }
            other => {
                return Err(ConfigFileError::Unsupported {
                    key,
                    value: other.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Why a `--config` file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("a config file cannot name another (config)")]
    Nested,
    #[error("{key}: unsupported value {value}")]
    Unsupported { key: String, value: String },
}

/// Why a size flag's value was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    #[error("'{0}' is not a size (try 1048576, 64kb, 512mb, 2gb)")]
    NotASize(String),
    #[error("'{size}': unknown unit '{unit}' (b, kb, mb, gb, tb)")]
    UnknownUnit { size: String, unit: String },
    #[error("'{0}' is too large")]
    TooLarge(String),
    #[error("'{0}' is below the least allowed, 1mb (as in Redis)")]
    BelowOneMb(String),
}

/// A request limit (`--proto-max-bulk-len`, `--client-query-buffer-limit`):
/// a size of at least 1 MiB, Redis's least for both, so that a whole block
/// of records can always be sent.
pub fn parse_request_limit(s: &str) -> Result<u64, SizeError> {
    match parse_size(s)? {
        n if n < 1 << 20 => Err(SizeError::BelowOneMb(s.to_string())),
        n => Ok(n),
    }
}

/// A password or secret: never empty. An empty one would pass the
/// beyond-loopback checks while protecting nothing (`AUTH ""` would
/// succeed).
pub fn parse_secret(s: &str) -> Result<String, String> {
    match s.is_empty() {
        true => Err("an empty secret protects nothing: give a non-empty one, or leave the flag out (loopback only)".into()),
        false => Ok(s.to_string()),
    }
}

/// A byte count: `1048576`, `64kb`, `512mb`, `2gb` (powers of 1024, as
/// Redis reads `maxmemory`).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let lower = s.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotASize(s.to_string()))?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                size: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// Logs to stderr through `tracing`; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A port open beyond this machine needs a password: refuse to bind one
/// without (Redis's protected mode, made an error).
pub fn check_exposure(
    what: &str,
    addr: SocketAddr,
    has_secret: bool,
    flag: &str,
) -> Result<(), StartupError> {
    if addr.ip().is_loopback() || has_secret {
        return Ok(());
    }
    Err(StartupError::Setting(format!(
        "refusing to listen for {what} on {addr}, beyond loopback, without {flag}"
    )))
}

/// The replication secret, or the empty one on loopback (logged).
pub fn repl_secret(secret: Option<&str>) -> hotblock_nic_transport::Secret {
    match secret {
        Some(s) => hotblock_nic_transport::Secret::new(s.as_bytes().to_vec()),
        None => {
            tracing::warn!(
                "no --repl-secret (or HOTBLOCK_REPL_SECRET): replication is authenticated with the empty secret; use one outside a test"
            );
            hotblock_nic_transport::Secret::new(Vec::new())
        }
    }
}

/// This node's id: `--node-id`, else the one kept in the data directory
/// (made at random there the first time), else a random one for this run.
/// Never derived from the port: two nodes on two hosts with the same port
/// would share it, and a primary takes a second session of one id for a
/// reconnect of the first, closing it. Logged, so that `INFO` and the
/// peers' logs can be matched to a node.
pub fn node_id(
    explicit: Option<u16>,
    persister: Option<&hotblock_persist::Persister>,
) -> Result<hotblock_core::repl::NodeId, StartupError> {
    use hotblock_core::repl::NodeId;
    let (id, from) = match (explicit, persister) {
        (Some(id), _) => (NodeId(u64::from(id)), "--node-id"),
        (None, Some(p)) => (p.node_id(random_node_id)?, "the data directory"),
        (None, None) => (random_node_id(), "random, for this run"),
    };
    tracing::info!(node = id.0, from, "node id");
    Ok(id)
}

/// A random, non-zero lineage for a history started from nothing (0 is
/// "unnamed").
pub fn random_lineage() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    u64::from_le_bytes(bytes).max(1)
}

/// A random node id in `1..=NODE_ID_MAX`.
pub fn random_node_id() -> hotblock_core::repl::NodeId {
    let mut bytes = [0u8; 8];
    // The OS's random source; without it, the clock's nanoseconds and the
    // process id still differ between nodes started side by side.
    let random = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            u64::from(nanos) ^ (u64::from(std::process::id()) << 20)
        }
    };
    hotblock_core::repl::NodeId(random % hotblock_persist::NODE_ID_MAX + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_redis() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999tb").is_err());
        assert_eq!(parse_request_limit("1mb"), Ok(1 << 20));
        assert!(parse_request_limit("1023kb").is_err());
    }

    #[test]
    fn config_keys_become_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nsync-quorum = 2\nserve-reads = true\nfast = false\ndatabases = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let args: Vec<String> = config_args(&path)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--databases",
                "a,b",
                "--listen",
                "127.0.0.1:1",
                "--serve-reads",
                "--sync-quorum",
                "2"
            ]
        );
        std::fs::write(&path, "config = \"other.toml\"\n").unwrap();
        assert!(config_args(&path).is_err());
        std::fs::write(&path, "listen = \n").unwrap();
        assert!(config_args(&path).is_err());
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert!(parse_secret("").is_err());
        assert_eq!(parse_secret("s").unwrap(), "s");
    }

    #[test]
    fn only_loopback_goes_without_a_secret() {
        let lo: SocketAddr = "127.0.0.1:7379".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7379".parse().unwrap();
        assert!(check_exposure("clients", lo, false, "--requirepass").is_ok());
        assert!(check_exposure("clients", any, true, "--requirepass").is_ok());
        let e = check_exposure("clients", any, false, "--requirepass").unwrap_err();
        assert!(e.to_string().contains("--requirepass"), "{e}");
    }
}
