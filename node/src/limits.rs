//! The node's limits and intervals, named as Redis names its own where it
//! has the same setting; units last, `*_max` for maxima. The defaults of
//! [`crate::ServerLimits`] and [`crate::resp::RespLimits`] come from here.

use std::time::Duration;

use hotblock_core::constants::BLOCK_SIZE_MAX;

/// Connected clients at most (Redis's `maxclients` default).
pub const CLIENTS_MAX: usize = 10_000;

/// Longest bulk string in a request (Redis's `proto-max-bulk-len`). A
/// value stored in one record is bounded far lower by the block size; this
/// bounds what the parser accepts before a command looks at it.
pub const BULK_LEN_MAX: usize = 512 << 20;

/// Most bytes held for requests not yet whole (Redis's
/// `client-query-buffer-limit` and its default).
pub const QUERY_BUFFER_BYTES_MAX: usize = 1 << 30;

/// Most arguments in one request (Redis's inline limit is the same order).
pub const ARGS_MAX: usize = 1024 * 1024;

/// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_LEN_MAX: usize = 64 * 1024;

/// Before `AUTH`: most arguments, and longest argument, as Redis bounds an
/// unauthenticated client.
pub const UNAUTHENTICATED_ARGS_MAX: usize = 10;
pub const UNAUTHENTICATED_BULK_LEN_MAX: usize = 16 * 1024;

/// Reply bytes held for one client before they are written out (and more
/// requests run): at most this plus one reply, which the block size bounds.
pub const OUTPUT_BUFFER_BYTES_MAX: usize = 64 << 20;

/// A client whose replies make no progress for this long is dropped (it
/// pipelines and never reads).
pub const OUTPUT_STALL_MAX: Duration = Duration::from_secs(30);

/// Bytes read from a client socket per read.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Requests parsed from one read and run as one batch at most: bounds the
/// work (and replies) one client's burst holds a worker for.
pub const PIPELINE_BATCH_MAX: usize = 1024;

/// How long the accept loop waits after a failed accept (out of file
/// descriptors, say) before it tries again, instead of spinning.
pub const ACCEPT_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// How long a shutdown waits for client tasks to finish.
pub const SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(2);

// A record (the largest thing a reply carries whole) fits in the output
// buffer, so a batch always makes progress within its budget.
const _: () = assert!(BLOCK_SIZE_MAX <= OUTPUT_BUFFER_BYTES_MAX);
// A bulk string that can hold a whole block can be read, whatever records
// a client writes.
const _: () = assert!(BLOCK_SIZE_MAX <= BULK_LEN_MAX);
// Before authentication, less is accepted than after.
const _: () = assert!(UNAUTHENTICATED_ARGS_MAX <= ARGS_MAX);
const _: () = assert!(UNAUTHENTICATED_BULK_LEN_MAX <= BULK_LEN_MAX);
const _: () = assert!(INLINE_LEN_MAX <= BULK_LEN_MAX);
