//! Telling a former primary that a newer epoch exists.
//!
//! A primary learns it has been replaced only from a peer on a newer epoch.
//! In sync mode that does not matter for safety (its commits never gather
//! their acks), but in async mode a paused or partitioned old primary that
//! comes back would go on answering `OK` to writes nobody will keep. So a
//! promoted node dials its former upstream and says `Hello` with its new
//! epoch; the old primary's controller fences itself on seeing it and
//! refuses writes (`-READONLY`) from then on.
//!
//! The notice is retried with backoff, for up to `NOTICE_FOR`, until the
//! peer answers that it is fenced, because the old primary may be stopped,
//! unreachable or restarting for a long time. If the peer answers from an
//! epoch newer than ours (it restarted, started an epoch of its own and
//! outranks this one), this node is the stale one: it fences itself.

use std::time::Duration;

use hotblock_core::repl::{Epoch, EpochHistory, ErrorCode, Frame, Message, Mode, NodeId};
use hotblock_core::Lsn;
use hotblock_nic_transport::tcp::{write_frames, FrameReader};
use hotblock_nic_transport::{ConnectTo, Secret};

use hotblock_primary::Db;

/// Retry backoff for the notice: first wait, and the most it grows to.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long to wait for the peer to read the notice once delivered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep trying: past it, an old primary that comes back is
/// fenced only by meeting a node on the newer epoch.
const NOTICE_FOR: Duration = Duration::from_secs(3600);

/// What the promoted node tells its former upstream, and the promoted
/// node's `Db` (to fence it if the peer outranks it).
#[derive(Clone, Debug)]
pub struct FenceNotice {
    pub to: ConnectTo,
    pub secret: Secret,
    pub node: NodeId,
    pub lsn: Lsn,
    pub history: EpochHistory,
    pub db: Db,
}

/// What the former primary answered.
enum Answer {
    /// It fenced itself.
    Fenced(String),
    /// It serves our epoch (a relay of ours): nothing to fence.
    Ours,
    /// It runs a newer epoch than ours.
    Newer(Epoch),
}

/// Why one attempt to deliver the notice failed (it is retried).
#[derive(Debug, thiserror::Error)]
enum NoticeError {
    #[error(transparent)]
    Transport(#[from] hotblock_nic_transport::TransportError),
    #[error("sending the notice: {0}")]
    Send(#[from] std::io::Error),
    #[error("no answer")]
    NoAnswer,
    #[error("closed the connection without an answer")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("unexpected answer {0}")]
    Unexpected(String),
}

/// Starts delivering `notice` in the background.
pub fn announce(notice: FenceNotice) {
    let spawned = std::thread::Builder::new()
        .name("hotblock-fence".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the fence notice");
                    return;
                }
            };
            runtime.block_on(deliver(notice));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the fence notice");
    }
}

async fn deliver(notice: FenceNotice) {
    let ours = notice.history.current();
    let started = std::time::Instant::now();
    let mut backoff = RETRY_MIN;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match once(&notice).await {
            Ok(Answer::Fenced(answer)) => {
                tracing::info!(epoch = %ours, %answer, attempts, "former primary told of the new epoch: fenced");
                return;
            }
            Ok(Answer::Ours) => {
                tracing::info!(epoch = %ours, "the former primary's address serves this epoch already");
                return;
            }
            Ok(Answer::Newer(epoch)) => {
                tracing::error!(%epoch, ours = %ours, "the former primary runs a newer epoch than this node: this node is fenced");
                if let Some(r) = notice.db.replicator() {
                    r.fence(epoch);
                }
                return;
            }
            Err(e) => {
                // Expected while the old primary is down: say it once, then
                // quietly keep trying.
                if attempts == 1 {
                    tracing::warn!(error = %e, "cannot reach the former primary to fence it; retrying");
                } else {
                    tracing::debug!(error = %e, attempts, "fence notice not delivered yet");
                }
            }
        }
        if started.elapsed() > NOTICE_FOR {
            tracing::error!(
                "gave up telling the former primary of the new epoch: if it comes back, stop it or restart it as a secondary"
            );
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One attempt: connect, prove the secret, send `Hello`, read the answer.
async fn once(notice: &FenceNotice) -> Result<Answer, NoticeError> {
    let ours = notice.history.current();
    let link = hotblock_nic_transport::connect(&notice.to, &notice.secret).await?;
    let (read, mut write) = (link.read, link.write);
    let hello = Frame::new(
        ours,
        Message::Hello {
            node: notice.node,
            lsn: notice.lsn,
            mode: Mode::Async,
            history: notice.history.clone(),
            databases: Vec::new(),
        },
    );
    write_frames(&mut write, &[hello]).await?;
    let mut reader = FrameReader::new(read);
    let frame = match tokio::time::timeout(ANSWER_TIMEOUT, reader.next()).await {
        Err(_) => return Err(NoticeError::NoAnswer),
        Ok(Ok(None)) => return Err(NoticeError::Closed),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(Some(frame))) => frame,
    };
    if frame.epoch > ours {
        return Ok(Answer::Newer(frame.epoch));
    }
    match frame.message {
        Message::Error {
            code: ErrorCode::Fenced,
            message,
        } => Ok(Answer::Fenced(message)),
        Message::Welcome { .. } if frame.epoch == ours => Ok(Answer::Ours),
        Message::Error { message, .. } => Err(NoticeError::Refused(message)),
        other => Err(NoticeError::Unexpected(format!("{other:?}"))),
    }
}
