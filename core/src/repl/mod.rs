//! Replication, without I/O: the messages primary and secondaries exchange,
//! their frame codec, and the protocol logic of both roles as state machines
//! (in the style of quinn-proto) that take frames, timer expiries and
//! commits, and hand back frames to send and events to act on. Sockets
//! (`hotblock-nic-transport`) and the deterministic simulator
//! (`core/tests/simulator.rs`) drive the same code.

mod backlog;
pub mod election;
pub mod frame;
pub mod history;
mod limits;
pub mod primary;
pub mod secondary;

pub use frame::{CatchUp, ErrorCode, Frame, FrameError, Message, Mode};
pub use history::{Epoch, EpochHistory};
pub use primary::{Primary, PrimaryConfig, PrimaryEvent, SessionId, SessionStatus, SyncPolicy};
pub use secondary::{Secondary, SecondaryConfig, SecondaryEvent};

/// A node's identity in a cluster, chosen by the node (random or configured).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);
