//! Proof of the shared replication secret, by challenge and response.
//!
//! Both peers prove they hold the secret without sending it: each sends a
//! fresh random nonce and answers the other's with an HMAC-SHA256 over both
//! nonces, so a recorded exchange cannot be replayed and a peer without the
//! secret learns nothing it could use.
//!
//! ```text
//! primary   → secondary   "HBR1" nonce_p(32)
//! secondary → primary     nonce_s(32) HMAC(secret, "secondary" nonce_p nonce_s binding)(32)
//! primary   → secondary   HMAC(secret, "primary" nonce_s nonce_p binding)(32)
//! ```
//!
//! Each side closes the connection on a wrong proof; frames flow only after.
//!
//! `binding` ties the proof to one connection. Under TLS and QUIC it is
//! keying material exported from the TLS session (RFC 5705/8446, label
//! [`EXPORTER_LABEL`]), which both ends of one session share and no other
//! session has: a man in the middle who can make a secondary connect to it
//! (an operator's `REPLICAOF` pointed at it) holds two sessions, so a proof
//! it relays from one fails on the other. Plain TCP has nothing to bind to
//! (empty binding): there the nonces and roles stop replays and reflection,
//! not a relay — use `tls` or `quic` where the network is not trusted.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TransportError;

const MAGIC: &[u8; 4] = b"HBR1";

/// The TLS exporter label of the proof's channel binding.
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-hotblock-replication-proof";

/// Bytes of exported keying material in the binding.
pub(crate) const BINDING_LEN: usize = 32;
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// The shared replication secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    fn mac(&self, role: &[u8], a: &[u8], b: &[u8], binding: &[u8]) -> [u8; MAC_LEN] {
        self.hmac(role, a, b, binding)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verify(&self, role: &[u8], a: &[u8], b: &[u8], binding: &[u8], proof: &[u8]) -> bool {
        // Constant-time comparison.
        self.hmac(role, a, b, binding).verify_slice(proof).is_ok()
    }

    fn hmac(&self, role: &[u8], a: &[u8], b: &[u8], binding: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(a);
        mac.update(b);
        // Fixed lengths before it: no field can pass for another.
        mac.update(binding);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn nonce() -> Result<[u8; NONCE_LEN], TransportError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n)
        .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    Ok(n)
}

/// The primary's side of the handshake, on a fresh connection whose TLS
/// session exported `binding` (empty without TLS).
pub async fn prove_as_primary<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    binding: &[u8],
) -> Result<(), TransportError> {
    let nonce_p = nonce()?;
    let mut hello = Vec::with_capacity(4 + NONCE_LEN);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&nonce_p);
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let mut answer = [0u8; NONCE_LEN + MAC_LEN];
    stream.read_exact(&mut answer).await?;
    let (nonce_s, proof) = answer.split_at(NONCE_LEN);
    if !secret.verify(b"secondary", &nonce_p, nonce_s, binding, proof) {
        return Err(TransportError::Auth(
            "the secondary does not know the replication secret",
        ));
    }
    stream
        .write_all(&secret.mac(b"primary", nonce_s, &nonce_p, binding))
        .await?;
    stream.flush().await?;
    Ok(())
}

/// The secondary's side of the handshake, on a fresh connection whose TLS
/// session exported `binding` (empty without TLS).
pub async fn prove_as_secondary<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    binding: &[u8],
) -> Result<(), TransportError> {
    let mut hello = [0u8; 4 + NONCE_LEN];
    stream.read_exact(&mut hello).await?;
    if &hello[..4] != MAGIC {
        return Err(TransportError::Auth("not a hotblock replication port"));
    }
    let nonce_p = &hello[4..];
    let nonce_s = nonce()?;
    let mut answer = Vec::with_capacity(NONCE_LEN + MAC_LEN);
    answer.extend_from_slice(&nonce_s);
    answer.extend_from_slice(&secret.mac(b"secondary", nonce_p, &nonce_s, binding));
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let mut proof = [0u8; MAC_LEN];
    stream.read_exact(&mut proof).await?;
    if !secret.verify(b"primary", &nonce_s, nonce_p, binding, &proof) {
        return Err(TransportError::Auth(
            "the primary does not know the replication secret",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn handshake(
        p: &[u8],
        s: &[u8],
    ) -> (Result<(), TransportError>, Result<(), TransportError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (ps, ss) = (Secret::new(p), Secret::new(s));
        // Each side owns its end and drops it when done, as a connection would.
        let primary = tokio::spawn(async move { prove_as_primary(&mut a, &ps, b"").await });
        let secondary = tokio::spawn(async move { prove_as_secondary(&mut b, &ss, b"").await });
        (primary.await.unwrap(), secondary.await.unwrap())
    }

    #[tokio::test]
    async fn same_secret_passes_and_a_wrong_one_is_refused() {
        let (p, s) = handshake(b"hunter2", b"hunter2").await;
        assert!(p.is_ok() && s.is_ok());
        let (p, s) = handshake(b"hunter2", b"guess").await;
        assert!(matches!(p, Err(TransportError::Auth(_))));
        assert!(s.is_err(), "the secondary must not think it is in");
    }
}
