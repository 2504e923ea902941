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

/// A term of one primary. Frames and acks carry it; a node that has seen
/// epoch e refuses anything from a lower one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// Most epochs a history keeps; older ones are dropped (a node that far
/// behind resyncs in full).
pub const HISTORY_LEN_MAX: usize = 256;

/// `(epoch, start)`: epoch `e`'s first transaction has LSN `start + 1`.
/// Epochs strictly rise and starts never fall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(Epoch, Lsn)>,
}

impl Default for EpochHistory {
    /// A new cluster: epoch 1 from the empty log.
    fn default() -> Self {
        EpochHistory { entries: vec![(Epoch(1), Lsn::ZERO)] }
    }
}

impl EpochHistory {
    pub fn current(&self) -> Epoch {
        self.entries.last().map_or(Epoch(0), |e| e.0)
    }

    pub fn entries(&self) -> &[(Epoch, Lsn)] {
        &self.entries
    }

    /// Starts the next epoch after `lsn` (promotion). Returns it.
    pub fn promote(&mut self, lsn: Lsn) -> Epoch {
        let next = Epoch(self.current().0 + 1);
        self.entries.push((next, lsn));
        if self.entries.len() > HISTORY_LEN_MAX {
            self.entries.remove(0);
        }
        next
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
        // The latest epoch both histories know, with the same start.
        let (epoch, _) = *peer.entries.iter().rev().find(|p| self.entries.contains(p))?;
        let mut common = peer_lsn;
        if let Some(end) = self.end_of(epoch) {
            common = common.min(end);
        }
        if let Some(end) = peer.end_of(epoch) {
            common = common.min(end);
        }
        Some(common)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16_le(self.entries.len() as u16);
        for (epoch, start) in &self.entries {
            out.put_u64_le(epoch.0);
            out.put_u64_le(start.0);
        }
    }

    pub(crate) fn decode(p: &mut Bytes) -> Result<Self, FrameError> {
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
            if entries.last().is_some_and(|last| entry.0 <= last.0 || entry.1 < last.1) {
                return Err(bad);
            }
            entries.push(entry);
        }
        Ok(EpochHistory { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergent_tail_is_found_by_epoch_and_lsn() {
        // Epoch 1 ran to LSN 10 on the new primary's history, when epoch 2
        // began; the old primary went on to LSN 12 in epoch 1.
        let old = EpochHistory::default();
        let mut new = EpochHistory::default();
        new.promote(Lsn(10));
        assert_eq!(new.common_prefix(&old, Lsn(12)), Some(Lsn(10)));
        assert_eq!(new.common_prefix(&old, Lsn(8)), Some(Lsn(8)));
        // A node that knows epoch 2 and is at LSN 15 shares everything.
        assert_eq!(new.common_prefix(&new, Lsn(15)), Some(Lsn(15)));
        // The old primary, asked about a node on epoch 2, sees the fork too.
        assert_eq!(old.common_prefix(&new, Lsn(15)), Some(Lsn(10)));
    }

    #[test]
    fn encoding_round_trips_and_rejects_disorder() {
        let mut h = EpochHistory::default();
        h.promote(Lsn(5));
        h.promote(Lsn(9));
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(EpochHistory::decode(&mut Bytes::from(out.clone())).unwrap(), h);
        out[2] = 9; // first epoch now above the second
        assert!(EpochHistory::decode(&mut Bytes::from(out)).is_err());
    }
}
