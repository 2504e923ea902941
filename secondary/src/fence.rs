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
//! The notice is retried with backoff until the peer has read it (it answers
//! or closes the connection after the handshake), because the old primary
//! may be stopped, unreachable or restarting for a long time. The thread
//! lives as long as the process.

use std::time::Duration;

use hotblock_core::repl::{EpochHistory, Frame, Message, Mode, NodeId};
use hotblock_core::Lsn;
use hotblock_nic_transport::tcp::{write_frames, FrameReader};
use hotblock_nic_transport::{ConnectTo, Secret};

/// Retry backoff for the notice: first wait, and the most it grows to.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long to wait for the peer to read the notice once delivered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the promoted node tells its former upstream.
#[derive(Clone, Debug)]
pub struct FenceNotice {
    pub to: ConnectTo,
    pub secret: Secret,
    pub node: NodeId,
    pub lsn: Lsn,
    pub history: EpochHistory,
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
    let mut backoff = RETRY_MIN;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match once(&notice).await {
            Ok(answer) => {
                tracing::info!(
                    epoch = %notice.history.current(),
                    %answer,
                    attempts,
                    "former primary told of the new epoch"
                );
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One attempt: connect, prove the secret, send `Hello`, wait for the peer
/// to react. Returns what it answered.
async fn once(notice: &FenceNotice) -> Result<String, String> {
    let link = hotblock_nic_transport::connect(&notice.to, &notice.secret)
        .await
        .map_err(|e| e.to_string())?;
    let (read, mut write) = (link.read, link.write);
    let hello = Frame::new(
        notice.history.current(),
        Message::Hello {
            node: notice.node,
            lsn: notice.lsn,
            mode: Mode::Async,
            history: notice.history.clone(),
            databases: Vec::new(),
        },
    );
    write_frames(&mut write, &[hello])
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(read);
    match tokio::time::timeout(ANSWER_TIMEOUT, reader.next()).await {
        Err(_) => Err("no answer".into()),
        Ok(Ok(None)) => Ok("closed the connection".into()),
        Ok(Ok(Some(frame))) => Ok(match frame.message {
            Message::Error { message, .. } => message,
            // A node already on our epoch or later (a former primary that
            // rejoined as a secondary and relays): nothing to fence.
            Message::Welcome { .. } => "already on this epoch or later".into(),
            _ => format!("frame from epoch {}", frame.epoch),
        }),
        // Not known to have been read: try again (a fenced peer answers
        // the next one at once).
        Ok(Err(e)) => Err(e.to_string()),
    }
}
