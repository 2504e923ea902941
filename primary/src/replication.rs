//! The primary controller: drives `hotblock_core::repl::Primary` over links
//! (TCP, TLS, QUIC or in process).
//!
//! One task owns the protocol state machine (no locks around it); commits
//! reach it through the [`CommitPipe`](crate::pipe) (fed by the engine's
//! commit hook, in LSN order), and secondaries' frames through
//! per-connection reader tasks. After each batch of inputs it writes every
//! session's pending frames in one write, so concurrent commits share round
//! trips (group commit). After each round it publishes one [`AckProgress`]:
//! the single record of what the quorum acknowledged, what timed out, and
//! whether this primary is fenced, which every waiter (blocking or async)
//! reads with the same rule, [`AckProgress::outcome`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotblock_core::repl::{
    Epoch, EpochHistory, Frame, Primary, PrimaryConfig, PrimaryEvent, SessionId, SessionStatus,
};
use hotblock_core::{Delta, Engine, HookPurpose, Lsn};

use crate::error::{StartError, WriteError};
use crate::limits::{
    CONTROLLER_TICK_MAX, FLUSH_BYTES_MAX, IDLE_DRAIN, SESSION_QUEUE_BYTES_HIGH,
    SESSION_QUEUE_BYTES_LOW, STATUS_FRESH, STATUS_REFRESH_INTERVAL, SYNC_WAIT_GUARD_EXTRA,
};
use crate::pipe::{CommitPipe, Handoff};
use hotblock_nic_transport::tcp::FrameReader;
use hotblock_nic_transport::{ListenOn, Listener, Secret};
use hotblock_persist::{PersistedState, Persister};
use tokio::sync::mpsc;

/// How a primary serves secondaries.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Where secondaries connect (`--repl-listen`).
    pub listen: ListenOn,
    pub secret: Secret,
    pub protocol: PrimaryConfig,
    /// This node's epoch history (a promoted node passes its own).
    pub history: EpochHistory,
}

impl ReplicationConfig {
    /// Listening on TCP at `listen`.
    pub fn new(listen: SocketAddr, secret: Secret) -> Self {
        Self::on(ListenOn::Tcp(listen), secret)
    }

    pub fn on(listen: ListenOn, secret: Secret) -> Self {
        ReplicationConfig {
            listen,
            secret,
            protocol: PrimaryConfig::default(),
            history: EpochHistory::default(),
        }
    }
}

#[derive(Debug)]
enum Input {
    /// A newer epoch was learnt outside a session (`Replicator::fence`).
    Fence(Epoch),
    /// `VERIFY`: send digests to every caught-up secondary now; reply with
    /// how many were sent them.
    Verify(tokio::sync::oneshot::Sender<usize>),
    Connected(u64, Writer),
    /// A paused connection's writer emptied its queue.
    Drained(u64),
    Frame(u64, Frame),
    Closed(u64),
}

/// What async waiters (`WAIT`, sync commits of the RESP server) watch: the
/// controller publishes it after every round that changed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckProgress {
    /// Every commit up to here is acknowledged by the sync quorum.
    pub quorum_acked: Lsn,
    /// Sync commits up to here timed out: their outcome is unknown.
    pub timed_out: Lsn,
    pub fenced: bool,
    /// The acknowledged LSN of each streaming secondary.
    pub secondaries: Vec<Lsn>,
}

impl AckProgress {
    /// What a sync commit at `lsn` has come to, once known: the one rule
    /// every waiter applies. A fenced primary answers `Fenced` first.
    pub fn outcome(&self, lsn: Lsn) -> Option<Result<(), WriteError>> {
        if self.fenced {
            return Some(Err(WriteError::Fenced));
        }
        if self.quorum_acked >= lsn {
            return Some(Ok(()));
        }
        if self.timed_out >= lsn {
            return Some(Err(WriteError::OutcomeUnknown { lsn }));
        }
        None
    }

    /// Secondaries that acknowledged `lsn` or later.
    pub fn count_at_least(&self, lsn: Lsn) -> usize {
        self.secondaries.iter().filter(|&&a| a >= lsn).count()
    }
}

#[derive(Debug)]
struct Shared {
    pipe: CommitPipe,
    status: Mutex<Vec<SessionStatus>>,
    addresses: Mutex<HashMap<SessionId, String>>,
    /// Where a fencing is saved (`PersistedState::epoch_seen`), so that a
    /// restart does not lift it.
    fencing_kept_in: Mutex<Option<Persister>>,
    /// The epoch this primary (or relay) writes under.
    epoch: AtomicU64,
    /// `Primary::accepts_writes`, as of the controller's last round.
    writable: AtomicBool,
    /// The one record of acknowledgements and fencing (see the module doc).
    progress: tokio::sync::watch::Sender<AckProgress>,
    /// Blocking waiters sleep here; notified whenever `progress` changes.
    progressed: (parking_lot::Mutex<()>, parking_lot::Condvar),
}

impl Shared {
    /// Publishes `change` to `progress`, waking every kind of waiter if it
    /// changed anything.
    fn publish(&self, change: impl FnOnce(&mut AckProgress) -> bool) {
        let _guard = self.progressed.0.lock();
        if self.progress.send_if_modified(change) {
            self.progressed.1.notify_all();
        }
    }

    fn is_fenced(&self) -> bool {
        self.progress.borrow().fenced
    }
}

/// A running primary controller. Dropping it stops replication.
#[derive(Debug)]
pub struct Replicator {
    shared: Arc<Shared>,
    inputs: mpsc::UnboundedSender<Input>,
    local_addr: String,
    sync_quorum: usize,
    sync_timeout: Duration,
    engine: Engine,
    _runtime: tokio::runtime::Runtime,
}

impl Replicator {
    /// Listens on `config.listen` and streams every later commit of `engine`
    /// to the secondaries that connect.
    pub fn start(engine: Engine, config: ReplicationConfig) -> Result<Replicator, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hotblock-repl")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listener = runtime
            .block_on(Listener::bind(&config.listen))
            .map_err(StartError::Listen)?;
        let local_addr = listener.local_addr().map_err(StartError::Listen)?;
        let shared = Arc::new(Shared {
            pipe: CommitPipe::new(),
            status: Mutex::new(Vec::new()),
            addresses: Mutex::new(HashMap::new()),
            fencing_kept_in: Mutex::new(None),
            epoch: AtomicU64::new(config.history.current().0),
            writable: AtomicBool::new(config.protocol.min_secondaries == 0),
            progress: tokio::sync::watch::Sender::new(AckProgress {
                quorum_acked: engine.lsn(),
                ..Default::default()
            }),
            progressed: Default::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let inputs = tx.clone();
        let hook_shared = shared.clone();
        engine.set_commit_hook(
            HookPurpose::Replication,
            Some(Arc::new(move |delta: &Delta| {
                hook_shared.pipe.push(Handoff::Commit(delta.clone()))
            })),
        );
        let wait = config.protocol.sync_quorum > 0;
        let primary = Primary::new(
            engine.clone(),
            config.history.clone(),
            config.protocol.clone(),
        );
        runtime.spawn(run(primary, rx, shared.clone(), wait));
        runtime.spawn(accept_loop(listener, config.secret.clone(), tx));
        tracing::info!(%local_addr, epoch = %config.history.current(), "replication listening");
        Ok(Replicator {
            shared,
            inputs,
            local_addr,
            sync_quorum: config.protocol.sync_quorum,
            sync_timeout: config.protocol.sync_timeout,
            engine,
            _runtime: runtime,
        })
    }

    /// For a relay: frames downstream carry this (the upstream's) history.
    pub fn set_history(&self, history: EpochHistory) {
        self.shared
            .epoch
            .store(history.current().0, Ordering::Relaxed);
        self.shared.pipe.push(Handoff::History(history));
    }

    /// For a relay: its log restarted from a snapshot; downstream sessions
    /// start over.
    pub fn reset(&self) {
        self.shared.pipe.push(Handoff::Reset);
    }

    /// For a relay: whether its copy is whole, so it may serve.
    pub fn set_available(&self, available: bool) {
        self.shared.pipe.push(Handoff::Available(available));
    }

    /// Sends every caught-up secondary the digests of its blocks now; each
    /// compares them with its own and resyncs what differs. Returns how
    /// many secondaries were sent them.
    pub async fn verify(&self) -> usize {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inputs.send(Input::Verify(tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// The address secondaries connect to (`host:port`; useful with port 0).
    pub fn local_addr(&self) -> &str {
        &self.local_addr
    }

    /// Per-secondary state, as of the last timer tick.
    pub fn status(&self) -> Vec<SessionStatus> {
        self.shared.status.lock().expect("status lock").clone()
    }

    /// Per-secondary state with each secondary's address.
    pub fn secondaries(&self) -> Vec<(SessionStatus, String)> {
        let addresses = self.shared.addresses.lock().expect("address lock");
        self.status()
            .into_iter()
            .map(|s| {
                let address = addresses.get(&s.session).cloned().unwrap_or_default();
                (s, address)
            })
            .collect()
    }

    /// Whether a newer epoch fenced this primary.
    pub fn is_fenced(&self) -> bool {
        self.shared.is_fenced()
    }

    /// Waits, outside every lock, while the commit pipe is full (see
    /// [`crate::pipe`]); `Db::begin` calls it before a transaction begins.
    pub fn admit(&self) {
        self.shared.pipe.admit();
    }

    /// Saves a fencing in `persister`'s state file when it happens.
    pub fn keep_fencing_in(&self, persister: Persister) {
        *self.shared.fencing_kept_in.lock().expect("fencing lock") = Some(persister);
    }

    /// Fences this primary: epoch `epoch`, newer than its own, exists (the
    /// answer to a fence notice, or a fencing found on disk at start).
    /// Writes are refused once the controller has taken it, at once for
    /// `check_writable`.
    pub fn fence(&self, epoch: Epoch) {
        if epoch.0 > self.shared.epoch.load(Ordering::Relaxed) {
            // Published at once, so that `check_writable` refuses the next
            // write; the controller learns it next.
            self.shared
                .publish(|p| !std::mem::replace(&mut p.fenced, true));
            let _ = self.inputs.send(Input::Fence(epoch));
        }
    }

    /// Whether a write may begin: not fenced, and enough current
    /// secondaries (`min_secondaries`). Checked when a transaction begins.
    pub fn check_writable(&self) -> Result<(), WriteError> {
        if self.is_fenced() {
            return Err(WriteError::Fenced);
        }
        if !self.shared.writable.load(Ordering::Relaxed) {
            return Err(WriteError::TooFewSecondaries);
        }
        Ok(())
    }

    /// Acknowledgement progress, for async waiters.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<AckProgress> {
        self.shared.progress.subscribe()
    }

    /// The sync quorum commits wait for (0: none).
    pub fn sync_quorum(&self) -> usize {
        self.sync_quorum
    }

    /// `wait_sync` for async callers: the same outcome without blocking a
    /// thread.
    pub async fn wait_sync_async(&self, lsn: Lsn) -> Result<(), WriteError> {
        if let Some(done) = self.no_wait(lsn) {
            return done;
        }
        let deadline = tokio::time::Instant::now() + self.wait_guard();
        let mut rx = self.shared.progress.subscribe();
        loop {
            if let Some(outcome) = rx.borrow_and_update().outcome(lsn) {
                return outcome;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(WriteError::OutcomeUnknown { lsn }),
            }
        }
    }

    /// Waits until the commit at `lsn` is acknowledged by the sync quorum.
    /// Returns at once when no quorum is configured.
    pub fn wait_sync(&self, lsn: Lsn) -> Result<(), WriteError> {
        if let Some(done) = self.no_wait(lsn) {
            return done;
        }
        let deadline = Instant::now() + self.wait_guard();
        let mut guard = self.shared.progressed.0.lock();
        loop {
            if let Some(outcome) = self.shared.progress.borrow().outcome(lsn) {
                return outcome;
            }
            if self
                .shared
                .progressed
                .1
                .wait_until(&mut guard, deadline)
                .timed_out()
            {
                return Err(WriteError::OutcomeUnknown { lsn });
            }
        }
    }

    /// The answer that needs no wait: fenced, or no quorum to wait for.
    fn no_wait(&self, _lsn: Lsn) -> Option<Result<(), WriteError>> {
        if self.is_fenced() {
            return Some(Err(WriteError::Fenced));
        }
        (self.sync_quorum == 0).then_some(Ok(()))
    }

    /// The protocol times a sync wait out; this longer guard only protects
    /// a waiter from a controller that stopped.
    fn wait_guard(&self) -> Duration {
        self.sync_timeout * 2 + SYNC_WAIT_GUARD_EXTRA
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.engine.set_commit_hook(HookPurpose::Replication, None);
    }
}

/// The controller's handle on one connection's writer task.
#[derive(Debug)]
struct Writer {
    /// The peer's address, for `INFO replication`.
    peer: String,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    paused: Arc<AtomicBool>,
}

async fn accept_loop(mut listener: Listener, secret: Secret, tx: mpsc::UnboundedSender<Input>) {
    let mut next_conn = 0u64;
    loop {
        let incoming = match listener.accept().await {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::warn!(error = %e, "replication accept failed");
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let (tx, secret) = (tx.clone(), secret.clone());
        // Each handshake runs on its own: a silent peer holds up no other.
        tokio::spawn(async move {
            match incoming.finish(&secret).await {
                Ok(link) => serve(conn, link, tx),
                Err(e) => tracing::warn!(conn, error = %e, "replication connection refused"),
            }
        });
    }
}

/// Starts the reader and writer tasks of an authenticated connection.
fn serve(conn: u64, link: hotblock_nic_transport::Link, tx: mpsc::UnboundedSender<Input>) {
    let peer = link.peer;
    tracing::info!(%peer, conn, "secondary connected");
    let (read, mut write, keep) = (link.read, link.write, link.keep);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let paused = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        peer: peer.to_string(),
        tx: out_tx,
        queued: queued.clone(),
        paused: paused.clone(),
    };
    if tx.send(Input::Connected(conn, writer)).is_err() {
        return;
    }
    let drained = tx.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _keep = keep;
        while let Some(bytes) = out_rx.recv().await {
            // The flush matters under TLS (see `write_frames`).
            if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                break;
            }
            let left = queued.fetch_sub(bytes.len(), Ordering::AcqRel) - bytes.len();
            if left <= SESSION_QUEUE_BYTES_LOW && paused.swap(false, Ordering::AcqRel) {
                let _ = drained.send(Input::Drained(conn));
            }
        }
        // The session ended: a TLS close_notify, after the last frames
        // (an error frame, say) went out.
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut reader = FrameReader::new(read);
        loop {
            match reader.next().await {
                Ok(Some(frame)) => {
                    if tx.send(Input::Frame(conn, frame)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(conn, error = %e, "replication connection dropped");
                    break;
                }
            }
        }
        let _ = tx.send(Input::Closed(conn));
    });
}

/// The controller task: owns the state machine.
async fn run(
    mut primary: Primary,
    mut rx: mpsc::UnboundedReceiver<Input>,
    shared: Arc<Shared>,
    wait: bool,
) {
    let mut writers: HashMap<SessionId, Writer> = HashMap::new();
    let mut sessions: HashMap<u64, SessionId> = HashMap::new();
    let mut next_status = Instant::now();
    let mut last_status = Instant::now();
    let mut more = false;
    // What the quorum acknowledged and what timed out: published each
    // round in `AckProgress`, the only copy waiters read.
    let mut quorum_acked = shared.progress.borrow().quorum_acked;
    let mut timed_out = Lsn::ZERO;
    let mut handoffs = Vec::new();
    loop {
        // With frames left over from the last round (a snapshot in
        // progress), only look for inputs; do not wait.
        let idle = writers.is_empty() && !wait;
        shared.pipe.set_wake_per_push(!idle);
        // A push between the last drain and the flag above woke nobody.
        if !idle && !shared.pipe.is_empty() {
            more = true;
        }
        let timeout = match more {
            true => Instant::now(),
            false => {
                let next = primary
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + CONTROLLER_TICK_MAX);
                if idle {
                    next.min(Instant::now() + IDLE_DRAIN)
                } else {
                    next
                }
            }
        };
        if more {
            tokio::task::yield_now().await;
        }
        let input = tokio::select! {
            input = rx.recv(), if !idle => match input {
                Some(input) => Some(input),
                None => return,
            },
            _ = shared.pipe.woken(), if !idle => None,
            _ = tokio::time::sleep_until(timeout.into()) => None,
        };
        let now = Instant::now();
        let mut inputs: Vec<Input> = input.into_iter().collect();
        // Take everything already queued: one flush serves all of it.
        loop {
            match rx.try_recv() {
                Ok(more) => inputs.push(more),
                Err(mpsc::error::TryRecvError::Empty) => break,
                // Every sender gone: the replicator was dropped.
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if idle && inputs.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        // Commits (and a relay's news) first, in the order they happened.
        shared.pipe.drain(&mut handoffs);
        for handoff in handoffs.drain(..) {
            match handoff {
                Handoff::Commit(delta) => primary.on_commit(now, delta, wait),
                Handoff::History(history) => primary.set_history(history),
                Handoff::Reset => primary.reset(),
                Handoff::Available(available) => primary.set_available(available),
            }
        }
        // Acknowledgements arrived: INFO and ROLE should show them soon.
        let heard = inputs.iter().any(|i| matches!(i, Input::Frame(..)));
        for input in inputs {
            match input {
                Input::Fence(epoch) => primary.fence(epoch),
                Input::Verify(reply) => {
                    let _ = reply.send(primary.verify_now(now));
                }
                Input::Connected(conn, writer) => {
                    let session = primary.connect(now);
                    sessions.insert(conn, session);
                    shared
                        .addresses
                        .lock()
                        .expect("address lock")
                        .insert(session, writer.peer.clone());
                    writers.insert(session, writer);
                }
                Input::Drained(conn) => {
                    if let Some(&session) = sessions.get(&conn) {
                        primary.set_paused(session, false);
                    }
                }
                Input::Frame(conn, frame) => {
                    if let Some(&session) = sessions.get(&conn) {
                        primary.handle_frame(now, session, frame);
                    }
                }
                Input::Closed(conn) => {
                    if let Some(session) = sessions.remove(&conn) {
                        writers.remove(&session);
                        shared
                            .addresses
                            .lock()
                            .expect("address lock")
                            .remove(&session);
                        primary.disconnect(session);
                    }
                }
            }
        }
        if primary.poll_timeout().is_some_and(|t| t <= now) {
            primary.handle_timeout(now);
        }
        // Every session's frames, encoded into one buffer each.
        let mut batches: HashMap<SessionId, Vec<u8>> = HashMap::new();
        let mut batched = 0;
        more = false;
        while let Some((session, frame)) = primary.poll_transmit(now) {
            let batch = batches.entry(session).or_default();
            let before = batch.len();
            frame.encode(batch);
            batched += batch.len() - before;
            if batched >= FLUSH_BYTES_MAX {
                more = true;
                break;
            }
        }
        for (session, bytes) in batches {
            if let Some(writer) = writers.get(&session) {
                let queued = writer.queued.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
                if queued > SESSION_QUEUE_BYTES_HIGH {
                    writer.paused.store(true, Ordering::Release);
                    primary.set_paused(session, true);
                }
                let _ = writer.tx.send(bytes);
            }
        }
        while let Some(event) = primary.poll_event() {
            match event {
                PrimaryEvent::SyncAcked(lsn) => quorum_acked = quorum_acked.max(lsn),
                PrimaryEvent::SyncTimedOut(lsn) => {
                    tracing::warn!(%lsn, "sync commits timed out: outcome unknown");
                    timed_out = lsn;
                }
                PrimaryEvent::Close { session, reason } => {
                    tracing::info!(?session, %reason, "closing secondary session");
                    // Dropping the writer ends the connection's writer task.
                    writers.remove(&session);
                    shared
                        .addresses
                        .lock()
                        .expect("address lock")
                        .remove(&session);
                    sessions.retain(|_, s| *s != session);
                    primary.disconnect(session);
                }
                PrimaryEvent::Fenced(epoch) => {
                    tracing::error!(%epoch, "a newer epoch exists: this primary is fenced; it refuses writes (restart it as hotblock-secondary --data-dir to rejoin)");
                    shared.publish(|p| !std::mem::replace(&mut p.fenced, true));
                    let kept_in = shared.fencing_kept_in.lock().expect("fencing lock").clone();
                    if let Some(p) = kept_in {
                        let state = PersistedState {
                            history: primary.history().clone(),
                            epoch_seen: epoch,
                        };
                        if let Err(e) = p.save_state(&state) {
                            tracing::error!(error = %e, "cannot keep the fencing in the data directory: a restart would lift it");
                        }
                    }
                }
                PrimaryEvent::Online(session) => tracing::info!(?session, "secondary online"),
                PrimaryEvent::Degraded { session, degraded } => {
                    tracing::warn!(?session, degraded, "sync secondary degraded to async")
                }
            }
        }
        shared
            .writable
            .store(primary.accepts_writes(now), Ordering::Relaxed);
        let secondaries = primary.acked_lsns();
        shared.publish(|p| {
            let changed = (p.quorum_acked, p.timed_out, &p.secondaries)
                != (quorum_acked, timed_out, &secondaries);
            p.quorum_acked = quorum_acked;
            p.timed_out = timed_out;
            p.secondaries = secondaries;
            changed
        });
        if now >= next_status || (heard && now >= last_status + STATUS_FRESH) {
            last_status = now;
            *shared.status.lock().expect("status lock") = primary.status(now);
            next_status = now + STATUS_REFRESH_INTERVAL;
        }
    }
}
