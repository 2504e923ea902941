//! Replication over QUIC (`quinn`), always under TLS 1.3 (`tls`): a
//! pinned or CA-signed certificate, then the replication secret proven
//! inside the encrypted stream, as on TCP. 0-RTT is never used: nothing is
//! accepted from early data.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::tls::{client_config, server_config, tls_error, TlsIdentity, Trust};
use crate::TransportError;

pub(crate) fn server_endpoint(
    addr: SocketAddr,
    identity: &TlsIdentity,
) -> Result<quinn::Endpoint, TransportError> {
    let quic = QuicServerConfig::try_from(server_config(identity)?).map_err(tls_error)?;
    Ok(quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        addr,
    )?)
}

/// Connects to `addr`, accepting only a certificate `trust` accepts.
pub(crate) async fn connect(
    addr: SocketAddr,
    trust: &Trust,
) -> Result<(quinn::Endpoint, quinn::Connection), TransportError> {
    let (tls, server_name) = client_config(trust)?;
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
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
        .map_err(tls_error)?
        .await
        .map_err(tls_error)?;
    Ok((endpoint, connection))
}
