//! Verification: a caught-up secondary is sent the digests of every block
//! at the LSN it has reached, compares them with its own and resyncs on a
//! difference (silent divergence: a byte changed in its memory).
//!
//! Apart from `Primary` because it is an independent duty with its own
//! timer (`verify_interval`) and its own precondition: the session must
//! have been sent exactly the engine's state at a consistent point.

use std::time::{Duration, Instant};

use crate::repl::frame::{Frame, Message, DIGESTS_PER_FRAME_MAX};
use crate::repl::primary::session::{subscribed, Phase};
use crate::repl::primary::Primary;

impl Primary {
    /// Sends every caught-up secondary the digests of its blocks now (the
    /// `VERIFY` command), whatever `verify_interval` says. Returns how many
    /// were sent them: a secondary with frames still queued is skipped, as
    /// its blocks are not yet at a point the digests describe.
    pub fn verify_now(&mut self, now: Instant) -> usize {
        let sent = self.send_verification(now, Duration::ZERO);
        self.check_invariants();
        sent
    }

    /// Sends every caught-up secondary due for it the digests of its blocks
    /// at the LSN it has reached; it compares them with its own and resyncs
    /// on a difference. Returns how many were sent them.
    pub(super) fn send_verification(&mut self, now: Instant, interval: Duration) -> usize {
        let mut sent = 0;
        let epoch = self.history.current();
        let engine = &self.engine;
        for s in self.sessions.values_mut() {
            if !matches!(s.phase, Phase::Streaming) || !s.queue.is_empty() || s.paused {
                continue;
            }
            if now.saturating_duration_since(s.last_verified) < interval {
                continue;
            }
            // Only a session sent everything up to the consistent point can
            // compare: its next frames follow exactly that state. (The
            // engine's LSN, not the head: the digests are the engine's.)
            let digests = engine.at_consistent_point(|at| {
                (at == s.sent).then(|| {
                    engine
                        .databases()
                        .iter()
                        .filter(|db| subscribed(&s.subscription, db.name()))
                        .map(|db| db.digest(|| at))
                        .collect::<Vec<_>>()
                })
            });
            let Some(digests) = digests else { continue };
            s.last_verified = now;
            sent += 1;
            for digest in digests {
                for chunk in digest.blocks.chunks(DIGESTS_PER_FRAME_MAX) {
                    s.queue.push_back(Frame::new(
                        epoch,
                        Message::BlockDigests {
                            db: digest.db,
                            entries: chunk.to_vec(),
                        },
                    ));
                }
                if digest.blocks.is_empty() {
                    s.queue.push_back(Frame::new(
                        epoch,
                        Message::BlockDigests {
                            db: digest.db,
                            entries: vec![],
                        },
                    ));
                }
            }
            s.queue.push_back(Frame::new(epoch, Message::DigestsEnd));
        }
        sent
    }
}
