//! The primary's limits and intervals, in one place: units last, `*_max`
//! for maxima, each with the reason for its value.

use std::time::Duration;

use hotblock_core::constants::BLOCK_SIZE_MAX;

/// Handoffs queued in the commit pipe past which new transactions wait at
/// `Db::begin`. At a million commits a second this is 65 ms of commits:
/// far more than the controller's idle drain interval, so a healthy
/// controller never makes a committer wait.
pub const COMMIT_PIPE_DELTAS_MAX: usize = 65_536;

/// The longest `Db::begin` waits for room in the pipe before letting the
/// transaction in anyway: the pipe bounds how far the controller falls
/// behind (in handoffs, not bytes), and must not turn a
/// stalled controller into a node that hangs every writer forever.
pub const COMMIT_PIPE_ADMIT_WAIT_MAX: Duration = Duration::from_secs(1);

/// With no secondary connected and no sync quorum, nothing waits on a
/// commit's delta: the controller stops waking per commit and takes the
/// queued deltas (and any connecting secondary) this often instead. A
/// wake-up per commit cost about 12% of a standalone node's CPU under
/// pipelined writes.
pub const IDLE_DRAIN: Duration = Duration::from_millis(20);

/// The longest the controller sleeps when the state machine names no
/// deadline: it still refreshes status and notices a stop this often.
pub const CONTROLLER_TICK_MAX: Duration = Duration::from_millis(100);

/// Bytes of frames encoded per round of the controller loop. A snapshot
/// streams in rounds of this size instead of being encoded whole, so memory
/// stays bounded and commits keep being served in between.
pub const FLUSH_BYTES_MAX: usize = 4 << 20;

/// Bytes queued for one secondary past which its session is paused, and
/// below which it resumes: a slow secondary costs at most this much memory
/// here (the backlog aside).
pub const SESSION_QUEUE_BYTES_HIGH: usize = 16 << 20;
pub const SESSION_QUEUE_BYTES_LOW: usize = 4 << 20;

/// How stale the per-secondary status behind `INFO replication` may be
/// after acknowledgements (refreshed at most this often then), and how
/// often it is refreshed regardless.
pub const STATUS_FRESH: Duration = Duration::from_millis(1);
pub const STATUS_REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// A sync waiter gives up after twice the sync timeout plus this: the
/// protocol times the wait out; this only guards against a controller that
/// stopped.
pub const SYNC_WAIT_GUARD_EXTRA: Duration = Duration::from_secs(1);

/// Replication handshakes in progress at once (`--repl-max-pending-handshakes`).
/// Each may last the handshake timeout (5 s) while a peer stays silent: a
/// flood of connections that never prove the secret holds this many
/// descriptors at most; the next are closed at once. Real secondaries
/// connect a few at a time.
pub const REPL_PENDING_HANDSHAKES_DEFAULT: usize = 64;

/// After a failed `accept` (out of descriptors, most likely), the wait
/// before the next, doubling up to the max: a retry at once would spin a
/// core and flood the log.
pub const ACCEPT_RETRY_MIN: Duration = Duration::from_millis(10);
pub const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// At most one warning this often about refused handshakes or failed
/// accepts: a flood must not flood the log too.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(1);

/// Blocks evacuated by one automatic compaction step, bounding the pause a
/// commit that triggers it adds.
pub const AUTO_COMPACT_BLOCKS_MAX: usize = 4;

// Pausing below resuming would flap; a round's frames must fit under the
// pause mark so a paused session is one round over it at most.
const _: () = assert!(SESSION_QUEUE_BYTES_LOW < SESSION_QUEUE_BYTES_HIGH);
const _: () = assert!(FLUSH_BYTES_MAX <= SESSION_QUEUE_BYTES_HIGH);
// A snapshot round carries at least one whole block.
const _: () = assert!(BLOCK_SIZE_MAX <= FLUSH_BYTES_MAX);
