//! Links: authenticated byte streams between a primary and a secondary,
//! whatever carries them.
//!
//! A `Listener` accepts and `connect` dials; both run the secret's
//! challenge–response before returning a `Link`, whose halves the
//! controllers read frames from (`FrameReader`) and write batches to. The
//! carriers:
//! - `Tcp`: a socket with `TCP_NODELAY`;
//! - `Tls`: the same socket under TLS 1.3 (`tls`: pinned or CA-signed
//!   certificate);
//! - `Quic`: one bidirectional QUIC stream, TLS 1.3, pinned certificate;
//! - `Memory`: an in-process pipe (`tokio::io::duplex`), for embedding a
//!   primary and secondaries in one process and for tests.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::auth::{prove_as_primary, prove_as_secondary, Secret, BINDING_LEN, EXPORTER_LABEL};
use crate::quic;
use crate::tcp::HANDSHAKE_TIMEOUT;
use crate::tls::{self, TlsIdentity, Trust};
use crate::TransportError;

pub type LinkRead = Box<dyn AsyncRead + Send + Unpin>;
pub type LinkWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// An authenticated connection, split into halves.
pub struct Link {
    pub read: LinkRead,
    pub write: LinkWrite,
    /// Who is at the other end, for logs.
    pub peer: String,
    /// What must live as long as the halves (a QUIC endpoint and connection).
    pub keep: Option<Box<dyn std::any::Any + Send>>,
}

impl Link {
    fn new(
        read: impl AsyncRead + Send + Unpin + 'static,
        write: impl AsyncWrite + Send + Unpin + 'static,
        peer: String,
    ) -> Self {
        Link {
            read: Box::new(read),
            write: Box::new(write),
            peer,
            keep: None,
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("peer", &self.peer).finish()
    }
}

/// Bytes buffered by an in-process pipe in each direction.
const MEMORY_PIPE_BYTES: usize = 1 << 20;

/// An in-process meeting point: a primary listens on it, secondaries in the
/// same process connect to it. Clones are the same hub.
#[derive(Clone)]
pub struct MemoryHub {
    tx: mpsc::UnboundedSender<DuplexStream>,
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<DuplexStream>>>>,
}

impl MemoryHub {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        MemoryHub {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryHub")
    }
}

/// Where a primary listens for secondaries.
#[derive(Clone, Debug)]
pub enum ListenOn {
    Tcp(SocketAddr),
    /// TCP under TLS 1.3, presenting `identity`'s certificate.
    Tls(SocketAddr, TlsIdentity),
    /// QUIC on UDP, presenting `identity`'s certificate.
    Quic(SocketAddr, TlsIdentity),
    Memory(MemoryHub),
}

impl ListenOn {
    /// The same listener at `addr` (in process: unchanged).
    pub fn at(self, addr: SocketAddr) -> ListenOn {
        match self {
            ListenOn::Tcp(_) => ListenOn::Tcp(addr),
            ListenOn::Tls(_, identity) => ListenOn::Tls(addr, identity),
            ListenOn::Quic(_, identity) => ListenOn::Quic(addr, identity),
            ListenOn::Memory(hub) => ListenOn::Memory(hub),
        }
    }
}

/// Where a secondary finds its primary.
#[derive(Clone, Debug)]
pub enum ConnectTo {
    Tcp(SocketAddr),
    /// TCP under TLS 1.3, accepting what `Trust` accepts (a pinned
    /// fingerprint, or a CA).
    Tls(SocketAddr, Trust),
    /// QUIC (always TLS 1.3), accepting what `Trust` accepts.
    Quic(SocketAddr, Trust),
    Memory(MemoryHub),
}

#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Tls(TcpListener, Arc<rustls::ServerConfig>),
    Quic(quinn::Endpoint),
    Memory(mpsc::UnboundedReceiver<DuplexStream>),
}

impl Listener {
    pub async fn bind(on: &ListenOn) -> Result<Listener, TransportError> {
        Ok(match on {
            ListenOn::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr).await?),
            ListenOn::Tls(addr, identity) => Listener::Tls(
                TcpListener::bind(addr).await?,
                Arc::new(tls::server_config(identity)?),
            ),
            ListenOn::Quic(addr, identity) => {
                Listener::Quic(quic::server_endpoint(*addr, identity)?)
            }
            ListenOn::Memory(hub) => {
                Listener::Memory(hub.rx.lock().expect("hub lock").take().ok_or(
                    TransportError::Auth("this memory hub already has a listener"),
                )?)
            }
        })
    }

    /// `host:port` for TCP and QUIC, `memory` in process.
    pub fn local_addr(&self) -> Result<String, TransportError> {
        Ok(match self {
            Listener::Tcp(l) | Listener::Tls(l, _) => l.local_addr()?.to_string(),
            Listener::Quic(e) => e.local_addr()?.to_string(),
            Listener::Memory(_) => "memory".into(),
        })
    }

    /// The next peer to connect. Its handshake runs in `Incoming::finish`,
    /// so that a slow or silent peer does not hold up the next.
    pub async fn accept(&mut self) -> Result<Incoming, TransportError> {
        Ok(match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Incoming::Tcp(stream, peer)
            }
            Listener::Tls(listener, config) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Incoming::Tls(stream, peer, config.clone())
            }
            Listener::Quic(endpoint) => Incoming::Quic(Box::new(
                endpoint
                    .accept()
                    .await
                    .ok_or(TransportError::Auth("QUIC endpoint closed"))?,
            )),
            Listener::Memory(rx) => Incoming::Memory(
                rx.recv()
                    .await
                    .ok_or(TransportError::Auth("memory hub closed"))?,
            ),
        })
    }
}

/// A peer that connected and has yet to prove the secret.
#[derive(Debug)]
pub enum Incoming {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Tls(tokio::net::TcpStream, SocketAddr, Arc<rustls::ServerConfig>),
    Quic(Box<quinn::Incoming>),
    Memory(DuplexStream),
}

impl Incoming {
    /// Runs the handshake (TLS first for TLS and QUIC, then the secret's
    /// proof).
    pub async fn finish(self, secret: &Secret) -> Result<Link, TransportError> {
        match self {
            Incoming::Tcp(mut stream, peer) => {
                handshake(prove_as_primary(&mut stream, secret, b"")).await?;
                let (read, write) = stream.into_split();
                Ok(Link::new(read, write, peer.to_string()))
            }
            Incoming::Tls(stream, peer, config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let mut stream =
                    handshake(async { acceptor.accept(stream).await.map_err(tls::tls_error) })
                        .await?;
                let binding = tls_binding(stream.get_ref().1)?;
                handshake(prove_as_primary(&mut stream, secret, &binding)).await?;
                let (read, write) = tokio::io::split(stream);
                Ok(Link::new(read, write, peer.to_string()))
            }
            Incoming::Quic(incoming) => {
                let (connection, mut send, mut recv) = handshake(async {
                    let connection = (*incoming)
                        .await
                        .map_err(|e| TransportError::Tls(e.to_string()))?;
                    let (send, mut recv) = connection
                        .accept_bi()
                        .await
                        .map_err(|e| TransportError::Tls(e.to_string()))?;
                    // The secondary's opening byte is what makes the stream exist.
                    let mut open = [0u8; 1];
                    recv.read_exact(&mut open)
                        .await
                        .map_err(|e| TransportError::Tls(e.to_string()))?;
                    Ok((connection, send, recv))
                })
                .await?;
                let peer = connection.remote_address().to_string();
                let binding = quic_binding(&connection)?;
                handshake(prove_as_primary(
                    &mut tokio::io::join(&mut recv, &mut send),
                    secret,
                    &binding,
                ))
                .await?;
                let mut link = Link::new(recv, send, peer);
                link.keep = Some(Box::new(connection));
                Ok(link)
            }
            Incoming::Memory(mut pipe) => {
                handshake(prove_as_primary(&mut pipe, secret, b"")).await?;
                let (read, write) = tokio::io::split(pipe);
                Ok(Link::new(read, write, "memory".into()))
            }
        }
    }
}

/// Dials a primary and proves the secret.
pub async fn connect(to: &ConnectTo, secret: &Secret) -> Result<Link, TransportError> {
    match to {
        ConnectTo::Tcp(addr) => {
            let stream = crate::tcp::connect(*addr, secret).await?;
            let (read, write) = stream.into_split();
            Ok(Link::new(read, write, addr.to_string()))
        }
        ConnectTo::Tls(addr, trust) => {
            let (config, server_name) = tls::client_config(trust)?;
            let server_name =
                rustls::pki_types::ServerName::try_from(server_name).map_err(tls::tls_error)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let mut stream = handshake(async {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(tls::tls_error)
            })
            .await?;
            let binding = tls_binding(stream.get_ref().1)?;
            handshake(prove_as_secondary(&mut stream, secret, &binding)).await?;
            let (read, write) = tokio::io::split(stream);
            Ok(Link::new(read, write, addr.to_string()))
        }
        ConnectTo::Quic(addr, trust) => {
            let (endpoint, connection) = handshake(quic::connect(*addr, trust)).await?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            send.write_all(&[1])
                .await
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            let binding = quic_binding(&connection)?;
            handshake(prove_as_secondary(
                &mut tokio::io::join(&mut recv, &mut send),
                secret,
                &binding,
            ))
            .await?;
            let mut link = Link::new(recv, send, addr.to_string());
            link.keep = Some(Box::new((endpoint, connection)));
            Ok(link)
        }
        ConnectTo::Memory(hub) => {
            let (mut ours, theirs) = tokio::io::duplex(MEMORY_PIPE_BYTES);
            hub.tx
                .send(theirs)
                .map_err(|_| TransportError::Auth("no primary listens on this memory hub"))?;
            handshake(prove_as_secondary(&mut ours, secret, b"")).await?;
            let (read, write) = tokio::io::split(ours);
            Ok(Link::new(read, write, "memory".into()))
        }
    }
}

/// The proof's channel binding for a TLS session (see `auth`).
fn tls_binding<D>(
    connection: &rustls::ConnectionCommon<D>,
) -> Result<[u8; BINDING_LEN], TransportError> {
    connection
        .export_keying_material([0u8; BINDING_LEN], EXPORTER_LABEL, None)
        .map_err(tls::tls_error)
}

/// The proof's channel binding for a QUIC connection (see `auth`).
fn quic_binding(connection: &quinn::Connection) -> Result<[u8; BINDING_LEN], TransportError> {
    let mut out = [0u8; BINDING_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|e| TransportError::Tls(format!("{e:?}")))?;
    Ok(out)
}

async fn handshake<T>(
    proof: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, proof)
        .await
        .map_err(|_| TransportError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay attack a review found: whoever can point a secondary at
    /// itself (`REPLICAOF host port fingerprint`) sits between two TLS
    /// sessions, the secondary's and its own to the primary, and passes
    /// the proof's bytes along. Bound to each TLS session, the proof made
    /// for one does not pass on the other.
    #[tokio::test]
    async fn a_proof_relayed_between_two_tls_sessions_is_refused() {
        let secret = Secret::new("hunter2");
        let primary_id = TlsIdentity::self_signed().unwrap();
        let relay_id = TlsIdentity::self_signed().unwrap();
        let mut primary = Listener::bind(&ListenOn::Tls(
            "127.0.0.1:0".parse().unwrap(),
            primary_id.clone(),
        ))
        .await
        .unwrap();
        let primary_addr: SocketAddr = primary.local_addr().unwrap().parse().unwrap();
        let mut relay = Listener::bind(&ListenOn::Tls(
            "127.0.0.1:0".parse().unwrap(),
            relay_id.clone(),
        ))
        .await
        .unwrap();
        let relay_addr: SocketAddr = relay.local_addr().unwrap().parse().unwrap();
        let primary_side = tokio::spawn(async move {
            let secret = Secret::new("hunter2");
            primary.accept().await.unwrap().finish(&secret).await
        });
        // The relay: TLS with the secondary under its own certificate, TLS
        // with the primary as a client, and the bytes in between passed on.
        let relay_side = tokio::spawn(async move {
            let Incoming::Tls(tcp, _, config) = relay.accept().await.unwrap() else {
                unreachable!("a TLS listener")
            };
            let mut from_secondary = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .unwrap();
            let (config, name) =
                tls::client_config(&Trust::Pinned(primary_id.fingerprint())).unwrap();
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let tcp = tokio::net::TcpStream::connect(primary_addr).await.unwrap();
            let mut to_primary = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut from_secondary, &mut to_primary).await;
        });
        let secondary = connect(
            &ConnectTo::Tls(relay_addr, Trust::Pinned(relay_id.fingerprint())),
            &secret,
        )
        .await;
        let primary_result = primary_side.await.unwrap();
        assert!(
            matches!(primary_result, Err(TransportError::Auth(_))),
            "the primary took a relayed proof: {:?}",
            primary_result.map(|_| ())
        );
        assert!(secondary.is_err(), "the secondary thinks it is in");
        relay_side.abort();
    }
}
