//! Replication over QUIC (`quinn`), always under TLS 1.3.
//!
//! The primary presents a certificate — self-signed by default
//! (`QuicIdentity::self_signed`) — and secondaries pin its SHA-256
//! fingerprint instead of trusting a CA, so no certificate authority is
//! needed for a private cluster; a wrong certificate ends the handshake.
//! The replication secret is then proven inside the encrypted stream, as on
//! TCP. 0-RTT is never used: nothing is accepted from early data.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::TransportError;

/// The name the certificate carries and clients ask for; pinning, not the
/// name, is what authenticates the primary.
const SERVER_NAME: &str = "hotblock";

/// A primary's certificate and key (DER).
#[derive(Clone)]
pub struct QuicIdentity {
    cert: CertificateDer<'static>,
    key: Arc<Vec<u8>>,
}

impl std::fmt::Debug for QuicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuicIdentity({})", hex(&self.fingerprint()))
    }
}

impl QuicIdentity {
    /// A fresh self-signed certificate.
    pub fn self_signed() -> Result<Self, TransportError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        Ok(QuicIdentity {
            cert: certified.cert.der().clone(),
            key: Arc::new(certified.key_pair.serialize_der()),
        })
    }

    /// A certificate (signed by a CA the secondaries trust) and its PKCS#8
    /// key, both DER.
    pub fn from_der(cert: Vec<u8>, key_pkcs8: Vec<u8>) -> Self {
        QuicIdentity {
            cert: CertificateDer::from(cert),
            key: Arc::new(key_pkcs8),
        }
    }

    /// SHA-256 of the certificate: what secondaries pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.cert.as_ref()).into()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn server_endpoint(
    addr: SocketAddr,
    identity: &QuicIdentity,
) -> Result<quinn::Endpoint, TransportError> {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.as_ref().clone())),
        )
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    Ok(quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        addr,
    )?)
}

/// How a secondary recognises its primary's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned([u8; 32]),
    /// A certificate for `server_name` signed by this CA (DER).
    Ca { ca: Vec<u8>, server_name: String },
}

/// Connects to `addr`, accepting only a certificate `trust` accepts.
pub(crate) async fn connect(
    addr: SocketAddr,
    trust: &Trust,
) -> Result<(quinn::Endpoint, quinn::Connection), TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let (tls, server_name) = match trust {
        Trust::Pinned(fingerprint) => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: *fingerprint,
                    provider: provider(),
                }))
                .with_no_client_auth(),
            SERVER_NAME.to_string(),
        ),
        Trust::Ca { ca, server_name } => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(ca.clone()))
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            (
                builder.with_root_certificates(roots).with_no_client_auth(),
                server_name.clone(),
            )
        }
    };
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("an address");
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = endpoint
        .connect(addr, &server_name)
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .await
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    Ok((endpoint, connection))
}

/// Accepts the primary's certificate if and only if its SHA-256 is the
/// pinned one; handshake signatures are still checked.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} is not the pinned {}",
                hex(&seen),
                hex(&self.fingerprint)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
