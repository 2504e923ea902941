//! hotblock-secondary: the secondary backup-and-recovery controller.
//!
//! A secondary holds blocks. It applies the primary's deltas a whole
//! transaction at a time through its own location table, acknowledges each
//! only after applying it, and on promotion rebuilds any indexes it did not
//! keep and hands its engine to the primary controller. The protocol logic
//! is `hotblock_core::repl::Secondary`; this crate drives it over a link
//! (TCP, TLS, QUIC or in process), reconnecting with backoff.
//!
//! **What it is not.** No primary controller: a relay (a secondary serving
//! secondaries of its own) is composed by the caller, a primary controller
//! on the same engine told of resyncs through [`Downstream`]. No client
//! port: that is `hotblock-node`.
//!
//! With a [`Persister`] (`--data-dir`), every applied transaction is also
//! appended to the local log, acknowledgements wait for it under
//! `fsync always`, a full resync stops logging until it completes and is
//! checkpointed, and the epoch history is saved whenever it changes, before
//! any transaction of the new epoch is logged.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotblock_core::repl::{
    Epoch, EpochHistory, Message, Mode, NodeId, Secondary, SecondaryConfig, SecondaryEvent,
};
use hotblock_core::{Engine, EngineConfig, Error, IndexMode, Lsn, Role};
use hotblock_nic_transport::tcp::{write_frames, FrameReader};
use hotblock_nic_transport::{ConnectTo, Link, Secret};
use hotblock_persist::{PersistedState, Persister};
use tokio::sync::oneshot;

/// Reconnection backoff: first wait, and the most it grows to. The first
/// wait is short: after a switchover the new primary opens its replication
/// port a few ms after etcd names it, and its first sync commit waits for
/// a secondary to reconnect (50 ms here was a third of a switchover).
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The longest the follow loop sleeps when the state machine names no
/// deadline.
pub const FOLLOW_TICK_MAX: Duration = Duration::from_millis(100);
const _: () = assert!(BACKOFF_MIN.as_millis() < BACKOFF_MAX.as_millis());

#[derive(Clone, Debug)]
pub struct SecondaryNodeConfig {
    pub primary: ConnectTo,
    /// The primary's address as the operator gave it (`host:port`), shown
    /// by `INFO` and logs.
    pub primary_address: String,
    pub secret: Secret,
    pub node: NodeId,
    pub mode: Mode,
    /// `Maintained` serves reads (hot); `Deferred` keeps blocks only (passive).
    pub indexes: IndexMode,
    /// Told when the stream restarts or resumes: a relay serving
    /// secondaries of this node's own (a daisy chain), composed by the
    /// caller on the same engine.
    pub downstream: Option<Arc<dyn Downstream>>,
    /// Replicate these databases only (by name); empty: all. The others'
    /// transactions arrive empty, so LSNs still follow the primary's.
    pub databases: Vec<String>,
    /// Log applied transactions here (`--data-dir`); the engine passed to
    /// `start_with` must be the one this persister recovered.
    pub persister: Option<Persister>,
    /// Show snapshot loading as a progress bar (on a terminal) instead of
    /// log lines.
    pub progress_bar: bool,
}

/// What a relay on this node's engine needs to hear from the follow loop,
/// in order with the deltas the engine applies: the relay (a primary
/// controller, in `hotblock-node`) forwards those deltas, and must restart
/// its own secondaries when the blocks are replaced, and stamp frames with
/// the upstream's epochs.
pub trait Downstream: Send + Sync + std::fmt::Debug {
    /// A full resync began: the blocks are about to be replaced.
    fn resync_started(&self);
    /// The copy is whole and streaming again, under `history`.
    fn online(&self, history: &EpochHistory);
    /// Waits while the relay cannot take more (its commit pipe is full):
    /// called before frames are read from the upstream, so a slow relay
    /// slows its own upstream link (TCP flow control) instead of queueing
    /// without bound. Blocks the follow loop's own thread only.
    fn admit(&self) {}
}

/// What the controller says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecondaryStatus {
    pub connected: bool,
    pub streaming: bool,
    pub lsn: Lsn,
    pub snapshots: u64,
    pub connects: u64,
    /// Blocks that incremental resyncs found current and did not transfer.
    pub blocks_kept: u64,
    /// The highest epoch this secondary has seen.
    pub epoch: Epoch,
    /// The epoch its last applied transaction was written in: with `lsn`,
    /// what ranks it among candidates in an election.
    pub last_epoch: Epoch,
    /// Its blocks are a whole state (not a snapshot loaded in part): it
    /// could be promoted.
    pub consistent: bool,
    /// It may stand in an election (`Secondary::vouches`): consistent, and
    /// not a copy started from nothing that has yet to be level with a
    /// primary.
    pub vouches: bool,
    /// The lineage of the history it follows (0: unnamed).
    pub lineage: u64,
    /// Blocks that digest verification found different from the primary's
    /// (each repaired by a resync).
    pub blocks_diverged: u64,
    pub last_error: Option<String>,
}

/// A running secondary. `stop` (or drop) ends it; `promote` turns it into
/// the engine and history of a new primary.
#[derive(Debug)]
pub struct SecondaryNode {
    engine: Engine,
    status: Arc<Mutex<SecondaryStatus>>,
    upstream: Arc<Upstream>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<Secondary>>,
}

impl SecondaryNode {
    /// Starts following `config.primary` with a new, empty engine.
    pub fn start(config: SecondaryNodeConfig) -> SecondaryNode {
        let engine = Engine::new(EngineConfig {
            role: Role::Follower(config.indexes),
            ..Default::default()
        });
        Self::start_with(engine, EpochHistory::default(), Epoch(0), config)
    }

    /// Starts following with an existing follower engine (a restart that
    /// kept its blocks): it resumes from the engine's LSN.
    /// `epoch_seen` is the highest epoch it knew of before (saved with its
    /// data directory): frames from older epochs stay refused.
    pub fn start_with(
        engine: Engine,
        history: EpochHistory,
        epoch_seen: Epoch,
        config: SecondaryNodeConfig,
    ) -> SecondaryNode {
        let status = Arc::new(Mutex::new(SecondaryStatus {
            lsn: engine.lsn(),
            epoch: history.current().max(epoch_seen),
            last_epoch: history.epoch_of(engine.lsn()),
            consistent: true,
            vouches: engine.lsn() > Lsn::ZERO,
            lineage: history.lineage(),
            ..Default::default()
        }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let secondary = Secondary::new(
            engine.clone(),
            history,
            SecondaryConfig {
                databases: config.databases.clone(),
                ..SecondaryConfig::new(config.node, config.mode)
            },
            Instant::now(),
        );
        let mut secondary = secondary;
        secondary.observe_epoch(epoch_seen);
        let upstream = Arc::new(Upstream {
            target: Mutex::new(Target {
                to: config.primary.clone(),
                address: config.primary_address.clone(),
            }),
            changed: tokio::sync::Notify::new(),
        });
        let thread_upstream = upstream.clone();
        let thread_status = status.clone();
        let handle = std::thread::Builder::new()
            .name("hotblock-secondary".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(follow(
                    secondary,
                    config,
                    thread_upstream,
                    thread_status,
                    stop_rx,
                ))
            })
            .expect("spawning the secondary thread");
        SecondaryNode {
            engine,
            status,
            upstream,
            stop: Some(stop_tx),
            handle: Some(handle),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn status(&self) -> SecondaryStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Follows `to` from now on (`REPLICAOF host port`): the current
    /// session ends and the next connects there, resuming from this node's
    /// LSN. A primary on an older epoch than this node has seen is refused
    /// as any would be.
    pub fn repoint(&self, to: ConnectTo, address: String) {
        let mut target = self.upstream.target.lock().expect("upstream lock");
        tracing::warn!(from = %target.address, to = %address, "re-pointed");
        *target = Target { to, address };
        self.upstream.changed.notify_one();
    }

    /// The primary followed now: how to reach it, and its address as given.
    pub fn upstream(&self) -> (ConnectTo, String) {
        let target = self.upstream.target.lock().expect("upstream lock");
        (target.to.clone(), target.address.clone())
    }

    /// Stops following. Returns the protocol state (engine and history).
    pub fn stop(mut self) -> Secondary {
        self.stop_thread().expect("stopped once")
    }

    fn stop_thread(&mut self) -> Option<Secondary> {
        let _ = self.stop.take()?.send(());
        self.handle.take()?.join().ok()
    }

    /// Stops following and promotes: indexes rebuilt if passive, a new
    /// epoch above `at_least`. Returns the engine (now writable) and its
    /// history, to start a primary with.
    pub fn promote(
        self,
        at_least: hotblock_core::repl::Epoch,
    ) -> Result<(Engine, EpochHistory), Error> {
        self.stop().promote(at_least)
    }
}

impl Drop for SecondaryNode {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Where the follow loop connects; `repoint` changes it and wakes the loop.
/// The one record of the primary followed: `INFO` and the fence notice
/// read it here too, so they never disagree with the loop.
#[derive(Debug)]
struct Upstream {
    target: Mutex<Target>,
    changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Target {
    to: ConnectTo,
    address: String,
}

async fn follow(
    mut secondary: Secondary,
    config: SecondaryNodeConfig,
    upstream: Arc<Upstream>,
    status: Arc<Mutex<SecondaryStatus>>,
    mut stop: oneshot::Receiver<()>,
) -> Secondary {
    let mut backoff = BACKOFF_MIN;
    let mut persist = Persist {
        persister: config.persister.as_ref(),
        downstream: config.downstream.as_deref(),
        saved: (secondary.history().clone(), secondary.epoch()),
        resyncing: false,
    };
    loop {
        let to = upstream.target.lock().expect("upstream lock").to.clone();
        let connected = tokio::select! {
            _ = &mut stop => return secondary,
            connected = hotblock_nic_transport::connect(&to, &config.secret) => connected,
            _ = upstream.changed.notified() => continue,
        };
        match connected {
            Ok(link) => {
                status.lock().expect("status lock").connects += 1;
                let ended = tokio::select! {
                    _ = &mut stop => None,
                    ended = session(&mut secondary, link, &config, &mut persist, &status) => Some(ended.to_string()),
                    _ = upstream.changed.notified() => Some("re-pointed to another primary".into()),
                };
                secondary.disconnected();
                let mut s = status.lock().expect("status lock");
                // Only a session that got as far as streaming resets the
                // backoff: a primary that accepts and refuses at once (a
                // relay withheld, a node being promoted) is retried ever
                // more slowly, not 100 times a second.
                if s.streaming {
                    backoff = BACKOFF_MIN;
                }
                s.connected = false;
                s.streaming = false;
                match ended {
                    None => return secondary,
                    Some(reason) => {
                        tracing::warn!(%reason, "replication session ended");
                        s.last_error = Some(reason);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the primary");
                status.lock().expect("status lock").last_error = Some(e.to_string());
            }
        }
        tokio::select! {
            _ = &mut stop => return secondary,
            _ = tokio::time::sleep(backoff) => {}
            _ = upstream.changed.notified() => {
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs one connection until it ends; returns why. The status shows
/// where it ended: an election reads this node's LSN there, and must see
/// every transaction it acknowledged, the last ones included.
async fn session(
    secondary: &mut Secondary,
    link: Link,
    config: &SecondaryNodeConfig,
    persist: &mut Persist<'_>,
    status: &Mutex<SecondaryStatus>,
) -> SessionEnd {
    let end = session_loop(secondary, link, config, persist, status).await;
    publish_status(status, secondary);
    end
}

async fn session_loop(
    secondary: &mut Secondary,
    link: Link,
    config: &SecondaryNodeConfig,
    persist: &mut Persist<'_>,
    status: &Mutex<SecondaryStatus>,
) -> SessionEnd {
    let downstream = config.downstream.as_deref();
    let (read, mut write) = (link.read, link.write);
    let mut reader = FrameReader::new(read);
    if let Err(e) = secondary.connect(Instant::now()) {
        return SessionEnd::Refused(e);
    }
    status.lock().expect("status lock").connected = true;
    let mut progress = Progress::new(config.progress_bar);
    loop {
        // Events first: the end of a resync is checkpointed to disk before
        // the acknowledgement that follows it goes out.
        let handled = handle_events(secondary, persist, downstream, status, &mut progress);
        let disconnect = match handled {
            Ok(disconnect) => disconnect,
            Err(e) => return e,
        };
        let now = Instant::now();
        let disconnecting = disconnect.is_some();
        if let Err(e) = send_queued(secondary, persist, &mut write, now, disconnecting).await {
            return e;
        }
        if let Some(reason) = disconnect {
            return SessionEnd::Protocol(reason);
        }
        publish_status(status, secondary);
        let timeout = secondary
            .poll_timeout()
            .unwrap_or_else(|| now + FOLLOW_TICK_MAX);
        if let Some(d) = downstream {
            d.admit();
        }
        if let Err(e) = receive_or_timeout(&mut reader, secondary, persist, timeout).await {
            return e;
        }
    }
}

/// Acts on the state machine's events until none is left or one asks to
/// disconnect: `Ok(Some(reason))` then, after which the frames already
/// queued still go out. `Err` ends the session at once.
fn handle_events(
    secondary: &mut Secondary,
    persist: &mut Persist<'_>,
    downstream: Option<&dyn Downstream>,
    status: &Mutex<SecondaryStatus>,
    progress: &mut Progress,
) -> Result<Option<String>, SessionEnd> {
    while let Some(event) = secondary.poll_event() {
        match event {
            SecondaryEvent::Disconnect { reason } => return Ok(Some(reason)),
            SecondaryEvent::SnapshotStarted { blocks } => {
                tracing::info!(blocks, "full resync started");
                progress.start(blocks);
                // The relay heard of it when the snapshot's first frame
                // came (`Persist::handle_frame`), before any of its deltas.
                status.lock().expect("status lock").snapshots += 1;
            }
            SecondaryEvent::SnapshotProgress { installed, blocks } => {
                progress.update(installed, blocks)
            }
            SecondaryEvent::Online => {
                progress.finish();
                tracing::info!(lsn = %secondary.engine().lsn(), epoch = %secondary.epoch(), "secondary online");
                persist.online(secondary)?;
                if let Some(d) = downstream {
                    d.online(secondary.history());
                }
            }
        }
    }
    Ok(None)
}

/// Sends what the state machine has queued, in one write (an error frame
/// before a disconnect included).
async fn send_queued(
    secondary: &mut Secondary,
    persist: &Persist<'_>,
    write: &mut hotblock_nic_transport::link::LinkWrite,
    now: Instant,
    disconnecting: bool,
) -> Result<(), SessionEnd> {
    let mut frames = Vec::new();
    while let Some(frame) = secondary.poll_transmit(now) {
        frames.push(frame);
    }
    if frames.is_empty() {
        return Ok(());
    }
    // An acknowledgement promises the transaction is on disk too.
    if let (Some(p), false) = (persist.persister, disconnecting) {
        p.wait_durable(secondary.engine().lsn())
            .map_err(SessionEnd::LocalLog)?;
    }
    Ok(write_frames(write, &frames).await?)
}

/// Shows where the state machine is now in the controller's status.
fn publish_status(status: &Mutex<SecondaryStatus>, secondary: &Secondary) {
    let mut s = status.lock().expect("status lock");
    s.lsn = secondary.engine().lsn();
    s.streaming = secondary.is_streaming();
    s.blocks_kept = secondary.blocks_kept();
    s.epoch = secondary.epoch();
    s.last_epoch = secondary.history().epoch_of(s.lsn);
    s.consistent = secondary.is_consistent();
    s.vouches = secondary.vouches();
    s.lineage = secondary.history().lineage();
    s.blocks_diverged = secondary.blocks_diverged();
}

/// Waits for the primary's next frame or the state machine's deadline,
/// whichever comes first, and hands it over. `Err` ends the session.
async fn receive_or_timeout(
    reader: &mut FrameReader<hotblock_nic_transport::link::LinkRead>,
    secondary: &mut Secondary,
    persist: &mut Persist<'_>,
    timeout: Instant,
) -> Result<(), SessionEnd> {
    tokio::select! {
        frame = reader.next() => match frame {
            Ok(Some(frame)) => handle_burst(reader, secondary, persist, frame),
            Ok(None) => Err(SessionEnd::Closed),
            Err(e) => Err(e.into()),
        },
        _ = tokio::time::sleep_until(timeout.into()) => {
            secondary.handle_timeout(Instant::now());
            Ok(())
        }
    }
}

/// Handles `frame`, then everything already received behind it before
/// replying, so one acknowledgement covers a burst of commits.
fn handle_burst(
    reader: &mut FrameReader<hotblock_nic_transport::link::LinkRead>,
    secondary: &mut Secondary,
    persist: &mut Persist<'_>,
    frame: hotblock_core::repl::Frame,
) -> Result<(), SessionEnd> {
    let now = Instant::now();
    persist.handle_frame(secondary, now, frame)?;
    while let Some(frame) = reader.buffered()? {
        persist.handle_frame(secondary, now, frame)?;
    }
    Ok(())
}

/// Why a replication session ended (after which the follow loop
/// reconnects); `INFO` shows it as the last error.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The state machine refused to go on (its reason says why).
    #[error("{0}")]
    Protocol(String),
    /// The state machine could not start a session.
    #[error("{0}")]
    Refused(#[source] Error),
    /// The link failed or carried a bad frame.
    #[error("{0}")]
    Link(#[from] hotblock_nic_transport::TransportError),
    #[error("{0}")]
    Write(#[from] std::io::Error),
    #[error("the primary closed the connection")]
    Closed,
    /// An acknowledgement would promise a transaction the local log does
    /// not hold.
    #[error("local log: {0}")]
    LocalLog(#[source] hotblock_persist::PersistError),
    #[error(transparent)]
    Persist(#[from] LocalLogError),
}

/// Why a secondary with a data directory stopped a session: its own disk
/// failed, not the link. The session ends and the follow loop retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalLogError {
    #[error("saving the epoch history: {0}")]
    SaveHistory(#[source] hotblock_persist::PersistError),
    #[error("writing the snapshot after a resync: {0}")]
    Checkpoint(#[source] hotblock_persist::PersistError),
}

/// What a secondary with a data directory does around the protocol.
struct Persist<'a> {
    persister: Option<&'a Persister>,
    /// Told of a resync before the snapshot's first frame is handled, so
    /// that it hears of it before any delta applied after it.
    downstream: Option<&'a dyn Downstream>,
    /// The history and epoch last saved.
    saved: (EpochHistory, Epoch),
    /// A full resync is loading: the log is stopped until it completes.
    resyncing: bool,
}

impl Persist<'_> {
    fn handle_frame(
        &mut self,
        secondary: &mut Secondary,
        now: Instant,
        frame: hotblock_core::repl::Frame,
    ) -> Result<(), LocalLogError> {
        let snapshot = matches!(frame.message, Message::SnapshotBegin { .. });
        if let (true, Some(d)) = (snapshot, self.downstream) {
            d.resync_started();
        }
        let Some(p) = self.persister else {
            secondary.handle_frame(now, frame);
            return Ok(());
        };
        // A snapshot replaces the blocks piecemeal; a copy started from
        // nothing vouches for no acknowledged write until it is level with
        // its primary. Either way the files keep the last whole state that
        // vouches (or nothing) until then: a restart half-way must not come
        // back as a copy that vouches.
        if snapshot || (secondary.is_blank() && !self.resyncing) {
            p.begin_resync();
            self.resyncing = true;
        }
        secondary.handle_frame(now, frame);
        if self.resyncing && secondary.is_streaming() && secondary.vouches() {
            self.finish_resync(p, secondary)?;
        }
        self.save_if_changed(secondary)
    }

    /// The resync (or the catch-up of a blank copy) is complete: one
    /// checkpoint makes the files that state.
    fn finish_resync(&mut self, p: &Persister, secondary: &Secondary) -> Result<(), LocalLogError> {
        // The flag stays set until the checkpoint succeeds: a failed one
        // leaves the files at the state before the resync, which the saved
        // history still describes.
        let started = Instant::now();
        let lsn = p
            .checkpoint(secondary.engine())
            .map_err(LocalLogError::Checkpoint)?;
        self.resyncing = false;
        tracing::info!(%lsn, ms = started.elapsed().as_millis() as u64, "resync saved to the data directory");
        self.saved.0 = EpochHistory::default();
        Ok(())
    }

    /// The history is saved before any transaction of a new epoch is
    /// logged, so a restart never claims a tail under the wrong epoch.
    fn save_if_changed(&mut self, secondary: &Secondary) -> Result<(), LocalLogError> {
        let (Some(p), false) = (self.persister, self.resyncing) else {
            return Ok(());
        };
        let now = (secondary.history().clone(), secondary.epoch());
        if now != self.saved {
            p.save_state(&PersistedState {
                history: now.0.clone(),
                epoch_seen: now.1,
            })
            .map_err(LocalLogError::SaveHistory)?;
            self.saved = now;
        }
        Ok(())
    }

    fn online(&mut self, secondary: &Secondary) -> Result<(), LocalLogError> {
        let Some(p) = self.persister else {
            return Ok(());
        };
        if self.resyncing && secondary.vouches() {
            self.finish_resync(p, secondary)?;
        }
        self.save_if_changed(secondary)
    }
}

/// Snapshot loading, shown as a bar on a terminal or as log lines.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    use_bar: bool,
    /// The last tenth logged.
    logged: u64,
}

impl Progress {
    fn new(use_bar: bool) -> Self {
        Progress {
            bar: None,
            use_bar,
            logged: 0,
        }
    }

    fn start(&mut self, blocks: u64) {
        self.logged = 0;
        if self.use_bar {
            let bar = indicatif::ProgressBar::new(blocks);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "loading snapshot {bar:40} {pos}/{len} blocks {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            self.bar = Some(bar);
        }
    }

    fn update(&mut self, installed: u64, blocks: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(installed),
            None => {
                let tenth = installed * 10 / blocks.max(1);
                if tenth > self.logged {
                    self.logged = tenth;
                    tracing::info!(installed, blocks, "loading snapshot: {}%", tenth * 10);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
