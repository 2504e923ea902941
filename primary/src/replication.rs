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
    Epoch, EpochHistory, Frame, NodeId, Primary, PrimaryConfig, PrimaryEvent, SessionId,
    SessionStatus,
};
use hotblock_core::{Delta, Engine, HookPurpose, Lsn};

use crate::error::{StartError, WriteError};
use crate::limits::{
    ACCEPT_RETRY_MAX, ACCEPT_RETRY_MIN, ACCEPT_WARN_EVERY, CONTROLLER_TICK_MAX, FLUSH_BYTES_MAX,
    IDLE_DRAIN, REPL_PENDING_HANDSHAKES_DEFAULT, SESSION_QUEUE_BYTES_HIGH, SESSION_QUEUE_BYTES_LOW,
    STATUS_FRESH, STATUS_REFRESH_INTERVAL, SYNC_WAIT_GUARD_EXTRA,
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
    /// Handshakes in progress at once; more connections are closed at once
    /// (`--repl-max-pending-handshakes`).
    pub pending_handshakes_max: usize,
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
            pending_handshakes_max: REPL_PENDING_HANDSHAKES_DEFAULT,
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
    /// The acknowledged LSN of each streaming secondary, by node.
    pub secondaries: Vec<(NodeId, Lsn)>,
}

impl AckProgress {
    /// What a sync commit at `lsn` has come to, once known: the one rule
    /// every waiter applies. A commit the quorum acknowledged is committed,
    /// fenced or not since (the quorum stops moving once fenced, so it only
    /// covers what was acknowledged before); otherwise, once fenced, its
    /// outcome is unknown (it was applied here).
    pub fn outcome(&self, lsn: Lsn) -> Option<Result<(), WriteError>> {
        if self.quorum_acked >= lsn {
            return Some(Ok(()));
        }
        // Committed here, not acknowledged: timed out, or fenced (the node
        // that fenced this one may hold it; only a write refused before it
        // began is `Fenced`).
        if self.fenced || self.timed_out >= lsn {
            return Some(Err(WriteError::OutcomeUnknown { lsn }));
        }
        None
    }

    /// Secondaries that acknowledged `lsn` or later.
    pub fn count_at_least(&self, lsn: Lsn) -> usize {
        self.secondaries.iter().filter(|&&(_, a)| a >= lsn).count()
    }

    /// The highest LSN `node` acknowledged on a streaming session.
    pub fn acked_by(&self, node: NodeId) -> Option<Lsn> {
        self.secondaries
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|&(_, a)| a)
            .max()
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

/// The commit hook a controller set (a closure: no `Debug` of its own).
struct OwnHook(hotblock_core::CommitHook);

impl std::fmt::Debug for OwnHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnHook")
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
    /// The commit hook this controller set, removed when it is dropped
    /// (only if still there: see `Engine::remove_commit_hook`).
    hook: OwnHook,
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
        let hook: hotblock_core::CommitHook =
            Arc::new(move |delta: &Delta| hook_shared.pipe.push(Handoff::Commit(delta.clone())));
        engine.set_commit_hook(HookPurpose::Replication, Some(hook.clone()));
        let wait = config.protocol.sync_quorum > 0;
        let primary = Primary::new(
            engine.clone(),
            config.history.clone(),
            config.protocol.clone(),
        );
        runtime.spawn(run(primary, rx, shared.clone(), wait));
        runtime.spawn(accept_loop(
            listener,
            config.secret.clone(),
            config.pending_handshakes_max.max(1),
            tx,
        ));
        tracing::info!(%local_addr, epoch = %config.history.current(), "replication listening");
        Ok(Replicator {
            shared,
            inputs,
            local_addr,
            sync_quorum: config.protocol.sync_quorum,
            sync_timeout: config.protocol.sync_timeout,
            engine,
            hook: OwnHook(hook),
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

    /// The highest LSN `node` has acknowledged, as of the last frame heard
    /// (fresher than `status`, which is refreshed at most every few ms).
    pub fn acked_by(&self, node: NodeId) -> Option<Lsn> {
        self.shared.progress.borrow().acked_by(node)
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

    /// `admit` for async callers: waits on the task, not the thread.
    pub async fn admit_async(&self) {
        self.shared.pipe.admit_async().await;
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

    /// The answer that needs no wait: no quorum to wait for (then a commit
    /// a fencing overtook has an unknown outcome: async, the promoted node
    /// may or may not have it), or one already known.
    fn no_wait(&self, lsn: Lsn) -> Option<Result<(), WriteError>> {
        if self.sync_quorum == 0 {
            return Some(match self.is_fenced() {
                true => Err(WriteError::OutcomeUnknown { lsn }),
                false => Ok(()),
            });
        }
        self.shared.progress.borrow().outcome(lsn)
    }

    /// The protocol times a sync wait out; this longer guard only protects
    /// a waiter from a controller that stopped.
    fn wait_guard(&self) -> Duration {
        self.sync_timeout * 2 + SYNC_WAIT_GUARD_EXTRA
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.engine
            .remove_commit_hook(HookPurpose::Replication, &self.hook.0);
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

async fn accept_loop(
    mut listener: Listener,
    secret: Secret,
    pending_max: usize,
    tx: mpsc::UnboundedSender<Input>,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(pending_max));
    let mut next_conn = 0u64;
    let mut retry = ACCEPT_RETRY_MIN;
    let mut warned: Option<Instant> = None;
    let mut quiet = (0u64, 0u64); // refused handshakes, failed accepts, since the last warning
    let may_warn = move |warned: &mut Option<Instant>| {
        let due = warned.is_none_or(|w| w.elapsed() >= ACCEPT_WARN_EVERY);
        if due {
            *warned = Some(Instant::now());
        }
        due
    };
    loop {
        let incoming = match listener.accept().await {
            Ok(incoming) => incoming,
            Err(e) => {
                quiet.1 += 1;
                if may_warn(&mut warned) {
                    tracing::warn!(error = %e, failed = quiet.1, retry_ms = retry.as_millis() as u64, "replication accept failed");
                    quiet.1 = 0;
                }
                // Out of descriptors, most likely: wait rather than spin.
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(ACCEPT_RETRY_MAX);
                continue;
            }
        };
        retry = ACCEPT_RETRY_MIN;
        // A peer that has not proven the secret holds a descriptor for up
        // to the handshake timeout: past the cap, close it at once.
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            quiet.0 += 1;
            if may_warn(&mut warned) {
                tracing::warn!(
                    refused = quiet.0,
                    pending_max,
                    "replication handshakes at their cap (--repl-max-pending-handshakes): closing new connections until some finish"
                );
                quiet.0 = 0;
            }
            drop(incoming);
            continue;
        };
        next_conn += 1;
        let conn = next_conn;
        let (tx, secret) = (tx.clone(), secret.clone());
        // Each handshake runs on its own: a silent peer holds up no other.
        tokio::spawn(async move {
            let finished = incoming.finish(&secret).await;
            drop(permit);
            match finished {
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

/// The controller task: owns the state machine. Each round waits for
/// inputs (or a deadline), feeds them to the state machine in order, writes
/// what it queued, handles its events, and publishes progress.
async fn run(
    primary: Primary,
    rx: mpsc::UnboundedReceiver<Input>,
    shared: Arc<Shared>,
    wait: bool,
) {
    let now = Instant::now();
    let quorum_acked = shared.progress.borrow().quorum_acked;
    let mut controller = Controller {
        quorum_acked,
        timed_out: Lsn::ZERO,
        primary,
        rx,
        shared,
        wait,
        writers: HashMap::new(),
        sessions: HashMap::new(),
        next_status: now,
        last_status: now,
        more: false,
        handoffs: Vec::new(),
    };
    while controller.round().await {}
}

/// The controller task's state between rounds.
struct Controller {
    primary: Primary,
    rx: mpsc::UnboundedReceiver<Input>,
    shared: Arc<Shared>,
    /// A sync quorum is configured: commits are waited for.
    wait: bool,
    writers: HashMap<SessionId, Writer>,
    sessions: HashMap<u64, SessionId>,
    next_status: Instant,
    last_status: Instant,
    /// Frames were left over from the last round (a snapshot streaming):
    /// look for inputs, but do not wait.
    more: bool,
    /// What the quorum acknowledged and what timed out: published each
    /// round in `AckProgress`, the only copy waiters read.
    quorum_acked: Lsn,
    timed_out: Lsn,
    /// Reused buffer for the commit pipe's handoffs.
    handoffs: Vec<Handoff>,
}

impl Controller {
    /// One round; false once the replicator is gone.
    async fn round(&mut self) -> bool {
        // Idle: nothing waits on a commit's delta (see `IDLE_DRAIN`).
        let idle = self.writers.is_empty() && !self.wait;
        let Some(inputs) = self.next_inputs(idle).await else {
            return false;
        };
        let now = Instant::now();
        // Commits (and a relay's news) first, in the order they happened.
        self.shared.pipe.drain(&mut self.handoffs);
        // Taken out for the loop (it calls `self.primary`), put back to
        // keep its allocation for the next round.
        let mut handoffs = std::mem::take(&mut self.handoffs);
        for handoff in handoffs.drain(..) {
            match handoff {
                Handoff::Commit(delta) => self.primary.on_commit(now, delta, self.wait),
                Handoff::History(history) => self.primary.set_history(history),
                Handoff::Reset => self.primary.reset(),
                Handoff::Available(available) => self.primary.set_available(available),
            }
        }
        self.handoffs = handoffs;
        // Acknowledgements arrived: INFO and ROLE should show them soon.
        let heard = inputs.iter().any(|i| matches!(i, Input::Frame(..)));
        for input in inputs {
            self.take(now, input);
        }
        if self.primary.poll_timeout().is_some_and(|t| t <= now) {
            self.primary.handle_timeout(now);
        }
        self.flush(now);
        while let Some(event) = self.primary.poll_event() {
            self.on_event(event);
        }
        self.publish(now, heard);
        true
    }

    /// Waits for the next input, a wake-up from the commit pipe, or the
    /// next deadline, then takes every input already queued (one flush
    /// serves them all). None: every sender is gone.
    async fn next_inputs(&mut self, idle: bool) -> Option<Vec<Input>> {
        self.shared.pipe.set_wake_per_push(!idle);
        // A push between the last drain and the flag above woke nobody.
        if !idle && !self.shared.pipe.is_empty() {
            self.more = true;
        }
        let timeout = match self.more {
            true => Instant::now(),
            false => {
                let next = self
                    .primary
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + CONTROLLER_TICK_MAX);
                match idle {
                    true => next.min(Instant::now() + IDLE_DRAIN),
                    false => next,
                }
            }
        };
        if self.more {
            tokio::task::yield_now().await;
        }
        let input = tokio::select! {
            input = self.rx.recv(), if !idle => Some(input?),
            _ = self.shared.pipe.woken(), if !idle => None,
            _ = tokio::time::sleep_until(timeout.into()) => None,
        };
        let mut inputs: Vec<Input> = input.into_iter().collect();
        loop {
            match self.rx.try_recv() {
                Ok(more) => inputs.push(more),
                Err(mpsc::error::TryRecvError::Empty) => break,
                // Every sender gone: the replicator was dropped.
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if idle && inputs.is_empty() {
                        return None;
                    }
                    break;
                }
            }
        }
        Some(inputs)
    }

    /// Feeds one input to the state machine.
    fn take(&mut self, now: Instant, input: Input) {
        match input {
            Input::Fence(epoch) => self.primary.fence(epoch),
            Input::Verify(reply) => {
                let _ = reply.send(self.primary.verify_now(now));
            }
            Input::Connected(conn, writer) => {
                let session = self.primary.connect(now);
                self.sessions.insert(conn, session);
                self.shared
                    .addresses
                    .lock()
                    .expect("address lock")
                    .insert(session, writer.peer.clone());
                self.writers.insert(session, writer);
            }
            Input::Drained(conn) => {
                if let Some(&session) = self.sessions.get(&conn) {
                    self.primary.set_paused(session, false);
                }
            }
            Input::Frame(conn, frame) => {
                if let Some(&session) = self.sessions.get(&conn) {
                    self.primary.handle_frame(now, session, frame);
                }
            }
            Input::Closed(conn) => {
                if let Some(session) = self.sessions.remove(&conn) {
                    self.forget(session);
                }
            }
        }
    }

    /// Drops a session's writer (which ends its writer task) and address.
    fn forget(&mut self, session: SessionId) {
        self.writers.remove(&session);
        self.shared
            .addresses
            .lock()
            .expect("address lock")
            .remove(&session);
        self.primary.disconnect(session);
    }

    /// Every session's queued frames, encoded into one buffer each, up to
    /// `FLUSH_BYTES_MAX` a round; a session whose writer is too far behind
    /// is paused.
    fn flush(&mut self, now: Instant) {
        let mut batches: HashMap<SessionId, Vec<u8>> = HashMap::new();
        let mut batched = 0;
        self.more = false;
        while let Some((session, frame)) = self.primary.poll_transmit(now) {
            let batch = batches.entry(session).or_default();
            let before = batch.len();
            frame.encode(batch);
            batched += batch.len() - before;
            if batched >= FLUSH_BYTES_MAX {
                self.more = true;
                break;
            }
        }
        for (session, bytes) in batches {
            if let Some(writer) = self.writers.get(&session) {
                let queued = writer.queued.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
                if queued > SESSION_QUEUE_BYTES_HIGH {
                    writer.paused.store(true, Ordering::Release);
                    self.primary.set_paused(session, true);
                }
                let _ = writer.tx.send(bytes);
            }
        }
    }

    fn on_event(&mut self, event: PrimaryEvent) {
        match event {
            PrimaryEvent::SyncAcked(lsn) => self.quorum_acked = self.quorum_acked.max(lsn),
            PrimaryEvent::SyncTimedOut(lsn) => {
                tracing::warn!(%lsn, "sync commits timed out: outcome unknown");
                self.timed_out = lsn;
            }
            PrimaryEvent::Close { session, reason } => {
                tracing::info!(?session, %reason, "closing secondary session");
                self.sessions.retain(|_, s| *s != session);
                self.forget(session);
            }
            PrimaryEvent::Fenced(epoch) => self.on_fenced(epoch),
            PrimaryEvent::Online(session) => tracing::info!(?session, "secondary online"),
            PrimaryEvent::Degraded { session, degraded } => {
                tracing::warn!(?session, degraded, "sync secondary degraded to async")
            }
        }
    }

    /// A newer epoch exists: refuse writes from now on, and keep the
    /// fencing in the data directory so that a restart does not lift it.
    fn on_fenced(&mut self, epoch: Epoch) {
        tracing::error!(%epoch, "a newer epoch exists: this primary is fenced; it refuses writes (restart it as hotblock-secondary --data-dir to rejoin)");
        self.shared
            .publish(|p| !std::mem::replace(&mut p.fenced, true));
        let kept_in = self
            .shared
            .fencing_kept_in
            .lock()
            .expect("fencing lock")
            .clone();
        if let Some(p) = kept_in {
            let state = PersistedState {
                history: self.primary.history().clone(),
                epoch_seen: epoch,
            };
            if let Err(e) = p.save_state(&state) {
                tracing::error!(error = %e, "cannot keep the fencing in the data directory: a restart would lift it");
            }
        }
    }

    /// What waiters and `INFO` read: acknowledgement progress (waking
    /// waiters only when it changed), writability, per-session status.
    fn publish(&mut self, now: Instant, heard: bool) {
        let shared = &self.shared;
        shared
            .writable
            .store(self.primary.accepts_writes(now), Ordering::Relaxed);
        let (quorum_acked, timed_out) = (self.quorum_acked, self.timed_out);
        let secondaries = self.primary.acked_lsns();
        shared.publish(|p| {
            let changed = (p.quorum_acked, p.timed_out, &p.secondaries)
                != (quorum_acked, timed_out, &secondaries);
            p.quorum_acked = quorum_acked;
            p.timed_out = timed_out;
            p.secondaries = secondaries;
            changed
        });
        if now >= self.next_status || (heard && now >= self.last_status + STATUS_FRESH) {
            self.last_status = now;
            *shared.status.lock().expect("status lock") = self.primary.status(now);
            self.next_status = now + STATUS_REFRESH_INTERVAL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit the quorum acknowledged stays committed when fencing comes
    /// after; one it did not acknowledge was still applied here and may be
    /// on the node that fenced this one: its outcome is unknown, never
    /// `-READONLY` (which says it did not happen, and invites a retry of a
    /// write that may exist).
    #[test]
    fn a_fenced_primary_never_says_a_committed_write_did_not_happen() {
        let progress = AckProgress {
            quorum_acked: Lsn(10),
            timed_out: Lsn(12),
            fenced: true,
            secondaries: vec![(NodeId(1), Lsn(10))],
        };
        assert!(matches!(progress.outcome(Lsn(9)), Some(Ok(()))));
        assert!(matches!(progress.outcome(Lsn(10)), Some(Ok(()))));
        for lsn in [11, 13] {
            assert!(matches!(
                progress.outcome(Lsn(lsn)),
                Some(Err(WriteError::OutcomeUnknown { .. }))
            ));
        }
        let unfenced = AckProgress {
            fenced: false,
            ..progress
        };
        assert!(matches!(
            unfenced.outcome(Lsn(12)),
            Some(Err(WriteError::OutcomeUnknown { .. }))
        ));
        assert!(unfenced.outcome(Lsn(13)).is_none());
    }
}
