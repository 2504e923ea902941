//! Epochs and the history of where each began.
//!
//! Every promotion starts a new epoch. A node's history lists, for each
//! epoch it has seen, the LSN after which that epoch's transactions start.
//! Two nodes' logs agree up to the LSN where their histories part; a node
//! whose log runs past that point holds a divergent tail (transactions a
//! failed primary never replicated) and must resync.

use bytes::{Buf, BufMut, Bytes};

use crate::ids::Lsn;
use crate::repl::frame::FrameError;
use crate::repl::NodeId;

/// A term of one primary. Frames and acks carry it; a node that has seen
/// epoch e refuses anything from a lower one.
///
/// An epoch packs a term (high 48 bits) and the id of the node promoted in
/// it (low 16 bits). Two nodes promoted in the same term, each unaware of
/// the other, so still get different epochs: one outranks the other, and
/// their histories never look alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of a new cluster: term 1.
    pub const FIRST: Epoch = Epoch(1 << 16);

    pub fn term(self) -> u64 {
        self.0 >> 16
    }

    /// The epoch `node` starts when promoted after this one.
    pub fn next_for(self, node: NodeId) -> Epoch {
        Epoch(((self.term() + 1) << 16) | (node.0 & 0xffff))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.term(), self.0 & 0xffff)
    }
}

// Most epochs a history keeps (defined in `limits.rs`).
pub use crate::repl::limits::HISTORY_LEN_MAX;

/// `(epoch, start)`: epoch `e`'s first transaction has LSN `start + 1`.
/// Epochs strictly rise and starts never fall.
///
/// The `lineage` names the history itself (Redis's replication id): made
/// at random when a primary starts a log from nothing, kept through every
/// promotion, adopted by every secondary. Two logs of different lineages
/// share nothing, whatever their epochs and LSNs look like: a primary that
/// lost its data directory and started again is not the continuation of
/// the log its old secondaries hold. 0 is "unnamed" (a history from
/// before lineages, or an embedder's default) and matches any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochHistory {
    lineage: u64,
    entries: Vec<(Epoch, Lsn)>,
}

impl Default for EpochHistory {
    /// A new cluster: epoch 1 from the empty log, lineage unnamed.
    fn default() -> Self {
        EpochHistory {
            lineage: 0,
            entries: vec![(Epoch::FIRST, Lsn::ZERO)],
        }
    }
}

impl EpochHistory {
    /// This history's lineage (0: unnamed).
    pub fn lineage(&self) -> u64 {
        self.lineage
    }

    /// The same history under `lineage`.
    pub fn with_lineage(mut self, lineage: u64) -> Self {
        self.lineage = lineage;
        self
    }

    pub fn current(&self) -> Epoch {
        self.entries.last().map_or(Epoch(0), |e| e.0)
    }

    pub fn entries(&self) -> &[(Epoch, Lsn)] {
        &self.entries
    }

    /// Starts the next epoch, `node`'s, after `lsn` (promotion), above both
    /// this history's and `at_least` — the highest epoch whoever decides
    /// promotions has seen, so that epochs rise with every promotion even
    /// when the promoted node had not heard of the last one. Returns it.
    /// Epochs known to have started past `lsn` are about a log this node
    /// does not hold (it was reset, say): they leave the history, though
    /// the new epoch still outranks them.
    pub fn promote(&mut self, lsn: Lsn, node: NodeId, at_least: Epoch) -> Epoch {
        let next = self.current().max(at_least).next_for(node);
        self.entries.retain(|e| e.1 <= lsn);
        self.entries.push((next, lsn));
        if self.entries.len() > HISTORY_LEN_MAX {
            self.entries.remove(0);
        }
        next
    }

    /// The epoch in which the transaction at `lsn` was written, on this
    /// history: with `lsn`, the (epoch, LSN) that ranks nodes for promotion,
    /// like Raft's (last log term, last log index). `Epoch(0)` for the
    /// empty log.
    pub fn epoch_of(&self, lsn: Lsn) -> Epoch {
        self.entries
            .iter()
            .rev()
            .find(|e| e.1 < lsn)
            .map_or(Epoch(0), |e| e.0)
    }

    /// The last LSN of `epoch` in this history, if a later epoch followed it.
    fn end_of(&self, epoch: Epoch) -> Option<Lsn> {
        let i = self.entries.iter().position(|e| e.0 == epoch)?;
        self.entries.get(i + 1).map(|e| e.1)
    }

    /// How much of a peer's log, which runs to `peer_lsn` under
    /// `peer`'s history, this node's log shares: the LSN up to which both
    /// hold the same transactions. `None` if they share no epoch this
    /// history still knows.
    pub fn common_prefix(&self, peer: &EpochHistory, peer_lsn: Lsn) -> Option<Lsn> {
        let named = self.lineage != 0 && peer.lineage != 0;
        if named && self.lineage != peer.lineage && peer_lsn > Lsn::ZERO {
            // Another log altogether: nothing of the peer's is ours.
            return None;
        }
        // The latest epoch both histories know, with the same start.
        let (epoch, _) = *peer
            .entries
            .iter()
            .rev()
            .find(|p| self.entries.contains(p))?;
        let mut common = peer_lsn;
        if let Some(end) = self.end_of(epoch) {
            common = common.min(end);
        }
        if let Some(end) = peer.end_of(epoch) {
            common = common.min(end);
        }
        Some(common)
    }

    /// Asserts what `EpochHistory` promises (see the type's doc): one to
    /// `HISTORY_LEN_MAX` entries, epochs strictly rising, starts never
    /// falling. Part of the state machines' `check_invariants`, which
    /// decide whether checks run at all (debug builds).
    pub(crate) fn check_invariants(&self) {
        assert!(
            (1..=HISTORY_LEN_MAX).contains(&self.entries.len()),
            "history of {} epochs",
            self.entries.len()
        );
        for pair in self.entries.windows(2) {
            let ((e0, s0), (e1, s1)) = (pair[0], pair[1]);
            assert!(e1 > e0, "history epochs not rising: {e0} then {e1}");
            assert!(s1 >= s0, "history starts falling: {s0} then {s1}");
        }
    }

    /// The wire (and `state.hb`) form: entry count u16, then (epoch u64,
    /// start lsn u64) per entry, little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16_le(self.entries.len() as u16);
        for (epoch, start) in &self.entries {
            out.put_u64_le(epoch.0);
            out.put_u64_le(start.0);
        }
    }

    /// Reads what [`EpochHistory::encode`] wrote, checking that epochs rise
    /// and starts never fall.
    pub fn decode(p: &mut Bytes) -> Result<Self, FrameError> {
        let bad = FrameError::Malformed("epoch history");
        if p.remaining() < 2 {
            return Err(bad);
        }
        let count = p.get_u16_le() as usize;
        if count == 0 || count > HISTORY_LEN_MAX || p.remaining() < count * 16 {
            return Err(bad);
        }
        let mut entries: Vec<(Epoch, Lsn)> = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = (Epoch(p.get_u64_le()), Lsn(p.get_u64_le()));
            if entries
                .last()
                .is_some_and(|last| entry.0 <= last.0 || entry.1 < last.1)
            {
                return Err(bad);
            }
            entries.push(entry);
        }
        Ok(EpochHistory {
            lineage: 0,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_lineage_shares_nothing_but_the_empty_log() {
        let old = EpochHistory::default().with_lineage(7);
        let new = EpochHistory::default().with_lineage(8);
        // Same epochs, same LSN range: still unrelated logs.
        assert_eq!(new.common_prefix(&old, Lsn(12)), None);
        assert_eq!(new.common_prefix(&old, Lsn::ZERO), Some(Lsn::ZERO));
        assert_eq!(old.common_prefix(&old, Lsn(12)), Some(Lsn(12)));
        // Unnamed (from before lineages) matches any.
        assert_eq!(
            new.common_prefix(&EpochHistory::default(), Lsn(5)),
            Some(Lsn(5))
        );
        // A promotion keeps the lineage.
        let mut promoted = old.clone();
        promoted.promote(Lsn(12), NodeId(3), Epoch(0));
        assert_eq!(promoted.lineage(), 7);
        assert_eq!(promoted.common_prefix(&old, Lsn(12)), Some(Lsn(12)));
    }

    #[test]
    fn divergent_tail_is_found_by_epoch_and_lsn() {
        // Epoch 1 ran to LSN 10 on the new primary's history, when epoch 2
        // began; the old primary went on to LSN 12 in epoch 1.
        let old = EpochHistory::default();
        let mut new = EpochHistory::default();
        new.promote(Lsn(10), NodeId(2), Epoch(0));
        assert_eq!(new.common_prefix(&old, Lsn(12)), Some(Lsn(10)));
        assert_eq!(new.common_prefix(&old, Lsn(8)), Some(Lsn(8)));
        // A node that knows epoch 2 and is at LSN 15 shares everything.
        assert_eq!(new.common_prefix(&new, Lsn(15)), Some(Lsn(15)));
        // The old primary, asked about a node on epoch 2, sees the fork too.
        assert_eq!(old.common_prefix(&new, Lsn(15)), Some(Lsn(10)));
    }

    #[test]
    fn epoch_of_names_the_epoch_that_wrote_a_transaction() {
        let mut h = EpochHistory::default();
        let e2 = h.promote(Lsn(10), NodeId(4), Epoch(0));
        assert_eq!(h.epoch_of(Lsn(0)), Epoch(0));
        assert_eq!(h.epoch_of(Lsn(10)), Epoch::FIRST);
        assert_eq!(h.epoch_of(Lsn(11)), e2);
    }

    #[test]
    fn same_term_promotions_never_collide() {
        let mut a = EpochHistory::default();
        let mut b = EpochHistory::default();
        let (ea, eb) = (
            a.promote(Lsn(50), NodeId(1), Epoch(0)),
            b.promote(Lsn(50), NodeId(2), Epoch(0)),
        );
        assert_ne!(ea, eb);
        assert_eq!(ea.term(), eb.term());
        // Both ran to LSN 60 on their own: each sees the other's tail past 50.
        assert_eq!(a.common_prefix(&b, Lsn(60)), Some(Lsn(50)));
        assert_eq!(b.common_prefix(&a, Lsn(60)), Some(Lsn(50)));
    }

    #[test]
    fn promotion_outranks_epochs_past_the_log() {
        let mut h = EpochHistory::default();
        h.promote(Lsn(80), NodeId(1), Epoch(0));
        let known = h.current();
        // The node's log was reset to empty; it is promoted at LSN 0.
        let next = h.promote(Lsn(0), NodeId(2), Epoch(0));
        assert!(next > known);
        assert_eq!(h.entries(), &[(Epoch::FIRST, Lsn(0)), (next, Lsn(0))]);
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(EpochHistory::decode(&mut Bytes::from(out)).unwrap(), h);
    }

    #[test]
    fn encoding_round_trips_and_rejects_disorder() {
        let mut h = EpochHistory::default();
        h.promote(Lsn(5), NodeId(1), Epoch(0));
        h.promote(Lsn(9), NodeId(2), Epoch(0));
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(
            EpochHistory::decode(&mut Bytes::from(out.clone())).unwrap(),
            h
        );
        out[2..10].copy_from_slice(&u64::MAX.to_le_bytes()); // first epoch above the second
        assert!(EpochHistory::decode(&mut Bytes::from(out)).is_err());
    }
}
