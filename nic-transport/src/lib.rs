//! hotblock-nic-transport: moving bytes between machines.
//!
//! This crate will hold the `Link` abstraction that carries replication frames
//! (encoded by `hotblock-core`) over in-process `crossbeam` channels, TCP and
//! QUIC, the challenge–response proof of the shared replication secret, TLS,
//! and the RESP codec spoken by client connections.
//!
//! It is empty until the replication issue lands: the protocol logic itself
//! lives, sans-IO, in `hotblock-core`, and this crate only moves its bytes.
#![forbid(unsafe_code)]
