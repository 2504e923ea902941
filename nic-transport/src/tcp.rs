//! Replication over TCP: connect or accept, prove the secret, then read and
//! write frames.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use hotblock_core::repl::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{prove_as_primary, prove_as_secondary, Secret};
use crate::TransportError;

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Connects to a primary's replication address as a secondary.
pub async fn connect(addr: SocketAddr, secret: &Secret) -> Result<TcpStream, TransportError> {
    let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::Timeout)??;
    stream.set_nodelay(true)?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        prove_as_secondary(&mut stream, secret, b""),
    )
    .await
    .map_err(|_| TransportError::Timeout)??;
    Ok(stream)
}

/// Accepts the next secondary that proves the secret. Connections that fail
/// the handshake are closed and reported through `on_refused`.
pub async fn accept(
    listener: &TcpListener,
    secret: &Secret,
) -> Result<(TcpStream, SocketAddr), TransportError> {
    let (mut stream, peer) = listener.accept().await?;
    stream.set_nodelay(true)?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        prove_as_primary(&mut stream, secret, b""),
    )
    .await
    .map_err(|_| TransportError::Timeout)??;
    Ok((stream, peer))
}

/// Reads whole frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// A frame already received and buffered, without waiting for more.
    pub fn buffered(&mut self) -> Result<Option<Frame>, TransportError> {
        Ok(Frame::decode(&mut self.buf)?)
    }

    /// The next frame, or `None` when the peer closed the connection
    /// between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(TransportError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                };
            }
        }
    }
}

/// Writes a batch of frames in one `write` where the socket allows.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Frame],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(frames.len() * 64);
    for frame in frames {
        frame.encode(&mut out);
    }
    w.write_all(&out).await?;
    // Under TLS, `write_all` can return with the tail still inside the
    // session's buffer; a flush sends it (for plain TCP it does nothing).
    w.flush().await
}
