//! The rules of an automatic failover, apart from the store that runs it:
//! when a primary's writes must stop, which election may decide, who wins
//! it, and which epoch the winner takes.
//!
//! **Why here.** `hotblock-node`'s coordinator runs these rules on etcd;
//! the simulator (`core/tests/simulator.rs`) runs them on its model of a
//! linearizable store with leases, under partitions, slow renewals and
//! drifting clocks. Both call the same functions, so what the simulator
//! checks is what the nodes do.
//!
//! **The write gate.** A lease renewal sent at `sent` and confirmed by the
//! store keeps the lease alive until at least `sent + ttl` on the store's
//! clock (the store restarts the TTL when it processes the renewal, which
//! is later). The primary stops writes at [`write_deadline`], `sent + ttl
//! − margin` on its own monotonic clock. The margin covers the two clocks
//! running at different rates (at most 1/[`CLOCK_RATE_DRIFT_MAX_DIVISOR`]
//! of the TTL apart) and the time between a write's last check of the gate
//! and its effect ([`GATE_SLACK`], far above the microseconds it takes).
//!
//! **The election.** With a sync quorum W and N sync secondaries (members,
//! the old primary aside), a decision waits for N − W + 1 sync candidates:
//! any W sync secondaries and any N − W + 1 of them share one, so some
//! candidate holds every acknowledged write. The old primary standing,
//! stepped down in place (not restarted), holds them all by itself. This counts only
//! candidates whose copy vouches for what they acknowledged: a node that
//! started from nothing (a wiped data directory, or none) does not stand
//! until it has synced from a primary, or it could be the one of the
//! N − W + 1 that "holds" a write it lost. Candidates rank by the epoch
//! of their last transaction, then LSN (Raft's last log term and index),
//! then node id; every node ranks alike, and only the best tries to take
//! the primary key (the store's compare-and-swap decides, never who asks
//! first). The new term is one above every term and epoch any of them has
//! seen, and the epoch is `term << 16 | node`: unique per promotion even
//! if two nodes shared an id, since a term is won once.

use std::time::{Duration, Instant};

use super::{Epoch, Mode, NodeId};

/// Time allowed between a write's check of the gate and its effect.
pub const GATE_SLACK: Duration = Duration::from_millis(200);
/// The most the store's clock and the primary's may drift apart, as a
/// fraction of the TTL (1/50: 2%; real clocks drift by parts per million,
/// so this also covers a VM's clock being slewed).
pub const CLOCK_RATE_DRIFT_MAX_DIVISOR: u32 = 50;
/// Terms fill an epoch's high 48 bits; one this large means damaged
/// records, not a long-lived cluster.
pub const TERM_MAX: u64 = 1 << 47;

/// How long before `sent + ttl` a primary's writes stop.
pub fn lease_margin(ttl: Duration) -> Duration {
    GATE_SLACK + ttl / CLOCK_RATE_DRIFT_MAX_DIVISOR
}

/// Until when a primary may take writes after a renewal sent at `sent`
/// was confirmed with `ttl`, on the primary's own clock.
pub fn write_deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.saturating_sub(lease_margin(ttl))
}

/// A node of the cluster, as far as elections care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub mode: Mode,
}

/// A candidate's position, as it published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub mode: Mode,
    /// The epoch of its last applied transaction.
    pub last_epoch: Epoch,
    pub lsn: u64,
    /// The highest epoch it has seen.
    pub epoch_seen: Epoch,
    /// It is the primary the election replaces, stepped down in place (the
    /// same process, its memory whole): it holds every write it
    /// acknowledged. After a restart it may not (`--fsync everysec` loses
    /// the last second to a power cut).
    pub stepped_down: bool,
}

impl Candidate {
    /// The order of candidates: most up to date first, then the higher
    /// node id (any fixed tie-break will do: every node applies the same).
    pub fn rank(&self) -> (Epoch, u64, NodeId) {
        (self.last_epoch, self.lsn, self.node)
    }
}

/// The primary whose lease lapsed: the election replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastPrimary {
    pub node: NodeId,
    pub term: u64,
    pub epoch: Epoch,
    pub sync_quorum: usize,
    /// A planned switchover's target: preferred when it is as up to date
    /// as the best candidate.
    pub handover_to: Option<NodeId>,
}

/// What an election can do with the candidates it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait(Wait),
    /// This node is to take over.
    Best(NodeId),
}

/// Why an election cannot decide yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fewer than N − W + 1 sync candidates: one missing may hold an
    /// acknowledged write nobody else has.
    TooFewSync {
        have: usize,
        needed: usize,
        n: usize,
        w: usize,
    },
    NoCandidate,
    /// Enough to decide, but not every sync secondary yet, and the wait
    /// for the rest is not over.
    Settling {
        have: usize,
        n: usize,
    },
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::TooFewSync { have, needed, n, w } => write!(
                f,
                "{have} of the {needed} sync candidates needed (N = {n} sync secondaries, quorum W = {w}: N - W + 1) have stood"
            ),
            Wait::NoCandidate => f.write_str("no candidate yet"),
            Wait::Settling { have, n } => write!(
                f,
                "{have} of {n} sync candidates have stood: waiting briefly for the rest"
            ),
        }
    }
}

/// Decides the election after `last` from the registered `members` and
/// the `candidates` standing in it. `settled`: the wait for every sync
/// secondary is over.
pub fn decide(
    members: &[Member],
    candidates: &[Candidate],
    last: &LastPrimary,
    settled: bool,
) -> Decision {
    let sync_members: Vec<NodeId> = members
        .iter()
        .filter(|m| m.mode == Mode::Sync && m.node != last.node)
        .map(|m| m.node)
        .collect();
    let n = sync_members.len();
    let w = last.sync_quorum.min(n);
    let have = candidates
        .iter()
        .filter(|c| c.mode == Mode::Sync && sync_members.contains(&c.node))
        .count();
    // With no sync quorum, no write waits for any secondary: any candidate
    // will do (an async failover loses the async window). The old primary
    // standing, stepped down in place, holds every write it acknowledged:
    // it alone is enough.
    let last_stands = candidates
        .iter()
        .any(|c| c.node == last.node && c.stepped_down);
    let needed = if w == 0 || last_stands { 0 } else { n - w + 1 };
    if have < needed {
        return Decision::Wait(Wait::TooFewSync { have, needed, n, w });
    }
    let Some(best) = candidates.iter().max_by_key(|c| c.rank()) else {
        return Decision::Wait(Wait::NoCandidate);
    };
    if have < n && !settled {
        return Decision::Wait(Wait::Settling { have, n });
    }
    let position = |c: &Candidate| (c.last_epoch, c.lsn);
    let named = candidates
        .iter()
        .find(|c| Some(c.node) == last.handover_to && position(c) == position(best));
    Decision::Best(named.unwrap_or(best).node)
}

/// The term an election after `last` gives its winner: one above every
/// term and epoch that `last`, the `candidates` and the winner (`seen`)
/// know of. `None` past [`TERM_MAX`] (damaged records).
pub fn next_term(last: &LastPrimary, candidates: &[Candidate], seen: Epoch) -> Option<u64> {
    let term = candidates
        .iter()
        .flat_map(|c| [c.last_epoch.term(), c.epoch_seen.term()])
        .chain([last.term, last.epoch.term(), seen.term()])
        .max()
        .unwrap_or(0)
        .checked_add(1)?;
    (term < TERM_MAX).then_some(term)
}

/// The epoch of `node` elected in `term`.
pub fn epoch_for(term: u64, node: NodeId) -> Epoch {
    Epoch((term << 16) | (node.0 & 0xffff))
}

/// The highest epoch below every epoch of `term`: promoting "above" it
/// lands on the term's epochs (`Secondary::promote` goes one term above
/// what it is given).
pub fn epoch_before_term(term: u64) -> Epoch {
    Epoch((term.saturating_sub(1) << 16) | 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: u64, mode: Mode) -> Member {
        Member {
            node: NodeId(node),
            mode,
        }
    }

    fn candidate(node: u64, lsn: u64) -> Candidate {
        Candidate {
            node: NodeId(node),
            mode: Mode::Sync,
            last_epoch: Epoch::FIRST,
            lsn,
            epoch_seen: Epoch::FIRST,
            stepped_down: false,
        }
    }

    fn last(quorum: usize) -> LastPrimary {
        LastPrimary {
            node: NodeId(1),
            term: 1,
            epoch: Epoch(1 << 16 | 1),
            sync_quorum: quorum,
            handover_to: None,
        }
    }

    #[test]
    fn an_election_waits_for_n_minus_w_plus_one_sync_candidates() {
        // Node 1 was the primary; 2, 3 and 4 are sync secondaries.
        let members: Vec<Member> = (1..=4).map(|n| member(n, Mode::Sync)).collect();
        // W = 1: a write may be on one secondary only; all three must stand.
        let two = [candidate(2, 10), candidate(3, 12)];
        assert!(matches!(
            decide(&members, &two, &last(1), true),
            Decision::Wait(Wait::TooFewSync { needed: 3, .. })
        ));
        let three = [candidate(2, 10), candidate(3, 12), candidate(4, 11)];
        assert_eq!(
            decide(&members, &three, &last(1), false),
            Decision::Best(NodeId(3))
        );
        // W = 2: any two of three share a holder of every acknowledged write.
        assert_eq!(
            decide(&members, &two, &last(2), true),
            Decision::Best(NodeId(3))
        );
        // ... but before the settle time, the third may still come.
        assert!(matches!(
            decide(&members, &two, &last(2), false),
            Decision::Wait(Wait::Settling { have: 2, n: 3 })
        ));
        // W larger than N counts as N.
        assert_eq!(
            decide(&members, &[candidate(4, 1)], &last(9), true),
            Decision::Best(NodeId(4))
        );
        // The old primary standing, stepped down in place, holds every
        // acknowledged write; restarted, it may have lost its last second.
        let mut back = Candidate {
            lsn: 13,
            ..candidate(1, 0)
        };
        assert!(matches!(
            decide(&members, &[back], &last(1), true),
            Decision::Wait(Wait::TooFewSync { .. })
        ));
        back.stepped_down = true;
        assert_eq!(
            decide(&members, &[back], &last(1), true),
            Decision::Best(NodeId(1))
        );
        // A candidate that is no sync member counts for nothing.
        let mut stranger = candidate(9, 99);
        stranger.mode = Mode::Async;
        assert!(matches!(
            decide(&members, &[stranger, candidate(2, 1)], &last(2), true),
            Decision::Wait(Wait::TooFewSync { have: 1, .. })
        ));
        // No sync quorum: any candidate, once settled.
        let async_only = [member(1, Mode::Async), member(5, Mode::Async)];
        let mut c = candidate(5, 3);
        c.mode = Mode::Async;
        assert_eq!(
            decide(&async_only, &[c], &last(0), true),
            Decision::Best(NodeId(5))
        );
        assert_eq!(
            decide(&async_only, &[], &last(0), true),
            Decision::Wait(Wait::NoCandidate)
        );
    }

    #[test]
    fn candidates_rank_by_last_epoch_then_lsn_and_a_handover_target_wins_ties() {
        let at = |node, epoch, lsn| Candidate {
            last_epoch: Epoch(epoch),
            ..candidate(node, lsn)
        };
        // A longer log of an older epoch loses to a newer epoch's.
        assert!(at(1, 2 << 16, 5).rank() > at(2, 1 << 16, 9).rank());
        assert!(at(1, 1 << 16, 9).rank() > at(2, 1 << 16, 8).rank());
        assert!(at(2, 1 << 16, 9).rank() > at(1, 1 << 16, 9).rank());
        let members: Vec<Member> = (1..=3).map(|n| member(n, Mode::Sync)).collect();
        let mut l = last(1);
        l.handover_to = Some(NodeId(2));
        let tied = [candidate(2, 7), candidate(3, 7)];
        assert_eq!(decide(&members, &tied, &l, true), Decision::Best(NodeId(2)));
        // Behind the best, the target is not preferred: it lacks writes.
        let behind = [candidate(2, 6), candidate(3, 7)];
        assert_eq!(
            decide(&members, &behind, &l, true),
            Decision::Best(NodeId(3))
        );
    }

    #[test]
    fn the_new_term_rises_above_every_epoch_seen() {
        let mut c = candidate(2, 1);
        c.epoch_seen = Epoch(7 << 16 | 3);
        assert_eq!(next_term(&last(1), &[c], Epoch::FIRST), Some(8));
        assert_eq!(next_term(&last(1), &[], Epoch(9 << 16)), Some(10));
        assert_eq!(next_term(&last(1), &[], Epoch(TERM_MAX << 16)), None);
        let damaged = LastPrimary {
            term: u64::MAX,
            ..last(1)
        };
        assert_eq!(next_term(&damaged, &[], Epoch::FIRST), None);
        let e = epoch_for(8, NodeId(0x1_0002));
        assert_eq!((e.term(), e.0 & 0xffff), (8, 2));
        assert!(epoch_before_term(8) < epoch_for(8, NodeId(0)));
        assert_eq!(epoch_before_term(8).term(), 7);
    }

    #[test]
    fn the_gate_closes_before_the_lease_can_expire() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(2);
        let deadline = write_deadline(sent, ttl);
        assert_eq!(deadline - sent, ttl - Duration::from_millis(240));
        // A store clock faster by the most allowed still sees the lease
        // alive at the deadline.
        let store_elapsed = (deadline - sent).mul_f64(1.0 + 1.0 / 50.0);
        assert!(store_elapsed < ttl);
    }
}
