//! Acknowledgements and what hangs on them: the sync quorum's watermark,
//! sync commits waiting on it and their timeout policy (`SyncPolicy`),
//! degraded sync secondaries, and the gating of writes on current
//! secondaries (`min_secondaries`).
//!
//! Apart from `Primary` because these rules decide what a client is told
//! about its commit; they read sessions but never produce frames.

use std::time::Instant;

use crate::ids::Lsn;
use crate::repl::frame::{ErrorCode, Mode};
use crate::repl::primary::session::{Phase, Session, SessionId};
use crate::repl::primary::{Primary, PrimaryEvent, SyncPolicy};

impl Primary {
    /// Highest LSN acknowledged by the sync quorum.
    pub fn sync_acked(&self) -> Lsn {
        self.sync_acked
    }

    /// The sync side of `on_commit`: a sync commit waits for the quorum; any
    /// other is acknowledged at once while commits need no acknowledgement.
    pub(super) fn sync_commit(&mut self, now: Instant, lsn: Lsn, sync: bool) {
        if sync && self.config.sync_quorum > 0 {
            self.sync_waits
                .push_back((lsn, now + self.config.sync_timeout));
            self.update_sync(Some(now));
        } else if self.sync_waits.is_empty() && self.sync_acked < lsn && self.sync_exempt() {
            self.sync_acked = lsn;
        }
    }

    /// An `Ack` from `session`: it counts towards the quorum, and a degraded
    /// session that has caught up with its `degraded_at` counts again.
    pub(super) fn ack(&mut self, now: Instant, session: SessionId, lsn: Lsn) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if lsn > s.sent || matches!(s.phase, Phase::AwaitHello) {
            self.refuse(session, ErrorCode::Protocol, "ack for an LSN never sent");
            return;
        }
        s.acked = s.acked.max(lsn);
        if s.degraded && matches!(s.phase, Phase::Streaming) && s.acked >= s.degraded_at {
            s.degraded = false;
            self.events.push_back(PrimaryEvent::Degraded {
                session,
                degraded: false,
            });
        }
        self.update_sync(Some(now));
    }

    /// Whether writes may go ahead: false while fewer than
    /// `min_secondaries` secondaries are current (see `PrimaryConfig`), or
    /// once fenced.
    pub fn accepts_writes(&self, now: Instant) -> bool {
        if self.fenced {
            return false;
        }
        if self.config.min_secondaries == 0 {
            return true;
        }
        let current = self
            .sessions
            .values()
            .filter(|s| matches!(s.phase, Phase::Streaming))
            .filter(|s| {
                self.oldest_unacked(s.acked)
                    .is_none_or(|t| now.saturating_duration_since(t) <= self.config.max_lag)
            })
            .count();
        current >= self.config.min_secondaries
    }

    /// When the oldest commit after `acked` was made, as far as the backlog
    /// tells: if it no longer holds that commit, its oldest entry (a lower
    /// bound on the lag); if that commit has not reached this controller
    /// yet (the engine runs ahead of it), `None`: it is younger than
    /// anything here.
    pub(super) fn oldest_unacked(&self, acked: Lsn) -> Option<Instant> {
        let next = acked.next();
        let entry = match self.backlog.first() {
            Some(first) if next < first => self.backlog.get(first),
            _ => self.backlog.get(next),
        };
        entry.map(|e| e.committed_at)
    }

    /// Whether commits need no sync acknowledgement right now: the policy
    /// is `Degrade` and too few sync secondaries are online and current.
    pub(super) fn sync_exempt(&self) -> bool {
        self.config.on_sync_timeout == SyncPolicy::Degrade
            && self.sync_voters().count() < self.config.sync_quorum
    }

    /// The sessions whose acknowledgements count toward the sync quorum.
    /// A secondary replicating some databases only is not one: it gets the
    /// others' transactions empty and acknowledges them, holding nothing of
    /// theirs (and the quorum is one watermark over every commit).
    pub(super) fn sync_voters(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().filter(|s| {
            s.mode == Mode::Sync
                && !s.degraded
                && s.subscription.is_none()
                && matches!(s.phase, Phase::Streaming)
        })
    }

    /// Recomputes the quorum watermark and settles waiting commits; with
    /// `now`, also applies the timeout policy.
    pub(super) fn update_sync(&mut self, now: Option<Instant>) {
        let quorum = self.config.sync_quorum.max(1);
        let mut acks: Vec<Lsn> = self.sync_voters().map(|s| s.acked).collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let mut watermark = acks.get(quorum - 1).copied().unwrap_or(Lsn::ZERO);
        if self.sync_exempt() {
            watermark = self.head;
        }
        // Only commits handed to this controller are acknowledged: a
        // secondary whose snapshot was read ahead of the head may have
        // acknowledged more, which its commits' hand-off will settle.
        let watermark = watermark.min(self.head);
        // A fenced primary's commits are not to be acknowledged any more,
        // whoever still answers it.
        if watermark > self.sync_acked && !self.fenced {
            self.sync_acked = watermark;
            self.events.push_back(PrimaryEvent::SyncAcked(watermark));
        }
        while self
            .sync_waits
            .front()
            .is_some_and(|w| w.0 <= self.sync_acked)
        {
            self.sync_waits.pop_front();
        }
        if let Some(now) = now {
            self.sync_timeout(now);
        }
    }

    /// Applies the timeout policy to the sync commits waiting past their
    /// deadline at `now`.
    fn sync_timeout(&mut self, now: Instant) {
        let Some(&(lsn, deadline)) = self.sync_waits.front() else {
            return;
        };
        if deadline > now {
            return;
        }
        match self.config.on_sync_timeout {
            SyncPolicy::Block => {
                let mut last = lsn;
                while let Some(&(l, d)) = self.sync_waits.front() {
                    if d > now {
                        break;
                    }
                    last = l;
                    self.sync_waits.pop_front();
                }
                self.events.push_back(PrimaryEvent::SyncTimedOut(last));
            }
            SyncPolicy::Degrade => {
                let late: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.mode == Mode::Sync && !s.degraded && s.acked < lsn)
                    .map(|(id, _)| *id)
                    .collect();
                for session in late {
                    let s = self.sessions.get_mut(&session).expect("listed");
                    s.degraded = true;
                    // It counts again once it has what this controller has.
                    s.degraded_at = self.head;
                    self.events.push_back(PrimaryEvent::Degraded {
                        session,
                        degraded: true,
                    });
                }
                self.update_sync(None);
            }
        }
    }
}
