//! TLS for replication links: the primary's identity, how a secondary
//! trusts it, and the rustls configurations QUIC and TCP share.
//!
//! The primary presents a certificate — self-signed by default
//! (`TlsIdentity::self_signed`) — and secondaries pin its SHA-256
//! fingerprint instead of trusting a CA, so no certificate authority is
//! needed for a private cluster; a CA-signed certificate works too
//! (`Trust::Ca`). A wrong certificate ends the handshake. Only TLS 1.3 is
//! offered, and 0-RTT is never enabled: nothing is accepted from early data.

use std::sync::Arc;

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
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key: Arc<Vec<u8>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity({})", hex(&self.fingerprint()))
    }
}

impl TlsIdentity {
    /// A fresh self-signed certificate.
    pub fn self_signed() -> Result<Self, TransportError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        Ok(TlsIdentity {
            cert: certified.cert.der().clone(),
            key: Arc::new(certified.key_pair.serialize_der()),
        })
    }

    /// A certificate (signed by a CA the secondaries trust) and its PKCS#8
    /// key, both DER.
    pub fn from_der(cert: Vec<u8>, key_pkcs8: Vec<u8>) -> Self {
        TlsIdentity {
            cert: CertificateDer::from(cert),
            key: Arc::new(key_pkcs8),
        }
    }

    /// The certificate and its PKCS#8 key, DER, to keep them.
    pub fn to_der(&self) -> (Vec<u8>, Vec<u8>) {
        (self.cert.to_vec(), self.key.as_ref().clone())
    }

    /// Whether the certificate and key make a usable server identity (a
    /// kept pair that was damaged does not).
    pub fn check(&self) -> Result<(), TransportError> {
        server_config(self).map(|_| ())
    }

    /// SHA-256 of the certificate: what secondaries pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.cert.as_ref()).into()
    }
}

/// The server side: TLS 1.3 presenting `identity`, no client certificate
/// (secondaries prove the replication secret inside the stream).
pub(crate) fn server_config(
    identity: &TlsIdentity,
) -> Result<rustls::ServerConfig, TransportError> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.as_ref().clone())),
        )
        .map_err(tls_error)
}

/// How a secondary recognises its primary's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned([u8; 32]),
    /// A certificate for `server_name` signed by this CA (DER).
    Ca { ca: Vec<u8>, server_name: String },
}

/// The client side: TLS 1.3, accepting only what `trust` accepts, and the
/// server name to ask for.
pub(crate) fn client_config(
    trust: &Trust,
) -> Result<(rustls::ClientConfig, String), TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?;
    Ok(match trust {
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
                .map_err(tls_error)?;
            (
                builder.with_root_certificates(roots).with_no_client_auth(),
                server_name.clone(),
            )
        }
    })
}

pub(crate) fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
