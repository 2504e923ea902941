//! hotblock-nic-transport: moving replication frames between machines.
//!
//! Frames are encoded by `hotblock_core::repl::Frame`; this crate carries
//! them over TCP (`TCP_NODELAY`, every batch of frames in one write) or an
//! in-process pipe (`link`), after both peers proved the shared replication
//! secret by challenge–response (`auth`). It has no protocol logic: the state machines in
//! `hotblock_core::repl` decide what to send.
//!
//! QUIC links (`quic`) always run under TLS 1.3 (`tls`); TCP links may
//! (`ListenOn::Tls`/`ConnectTo::Tls`), with the same pinned or CA-signed
//! certificate.
//!
//! **Not here**: the client protocol (RESP), which is `hotblock-node`'s.
#![forbid(unsafe_code)]

pub mod auth;
pub mod link;
pub mod quic;
pub mod tcp;
pub mod tls;

pub use auth::Secret;
pub use link::{connect, ConnectTo, Incoming, Link, ListenOn, Listener, MemoryHub};
pub use tls::{hex, TlsIdentity, Trust};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer failed the challenge, or is not a hotblock replication peer.
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    /// The peer sent bytes that are not a valid frame; the connection is closed.
    #[error("bad frame: {0}")]
    Frame(#[from] hotblock_core::repl::FrameError),
    #[error("handshake timed out")]
    Timeout,
    /// TLS or QUIC refused the connection (a certificate that is not the
    /// pinned one, say).
    #[error("TLS: {0}")]
    Tls(String),
}
