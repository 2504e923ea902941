//! Proof of the shared replication secret, by challenge and response.
//!
//! Both peers prove they hold the secret without sending it: each sends a
//! fresh random nonce and answers the other's with an HMAC-SHA256 over both
//! nonces, so a recorded exchange cannot be replayed and a peer without the
//! secret learns nothing it could use.
//!
//! ```text
//! primary   → secondary   "HBR1" nonce_p(32)
//! secondary → primary     nonce_s(32) HMAC(secret, "secondary" nonce_p nonce_s)(32)
//! primary   → secondary   HMAC(secret, "primary" nonce_s nonce_p)(32)
//! ```
//!
//! Each side closes the connection on a wrong proof; frames flow only after.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TransportError;

const MAGIC: &[u8; 4] = b"HBR1";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// The shared replication secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    fn mac(&self, role: &[u8], a: &[u8], b: &[u8]) -> [u8; MAC_LEN] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(a);
        mac.update(b);
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, role: &[u8], a: &[u8], b: &[u8], proof: &[u8]) -> bool {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(a);
        mac.update(b);
        // Constant-time comparison.
        mac.verify_slice(proof).is_ok()
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

/// The primary's side of the handshake, on a fresh connection.
pub async fn prove_as_primary<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
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
    if !secret.verify(b"secondary", &nonce_p, nonce_s, proof) {
        return Err(TransportError::Auth(
            "the secondary does not know the replication secret",
        ));
    }
    stream
        .write_all(&secret.mac(b"primary", nonce_s, &nonce_p))
        .await?;
    stream.flush().await?;
    Ok(())
}

/// The secondary's side of the handshake, on a fresh connection.
pub async fn prove_as_secondary<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
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
    answer.extend_from_slice(&secret.mac(b"secondary", nonce_p, &nonce_s));
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let mut proof = [0u8; MAC_LEN];
    stream.read_exact(&mut proof).await?;
    if !secret.verify(b"primary", &nonce_s, nonce_p, &proof) {
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
        let primary = tokio::spawn(async move { prove_as_primary(&mut a, &ps).await });
        let secondary = tokio::spawn(async move { prove_as_secondary(&mut b, &ss).await });
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
