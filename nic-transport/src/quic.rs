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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsIdentity;
    use rustls::client::{
        ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
        Tls13ClientSessionValue,
    };
    use rustls::pki_types::ServerName;
    use rustls::NamedGroup;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The client's session cache, counting the TLS 1.3 tickets it is given:
    /// without one, no resumption (and no 0-RTT) is even attempted.
    #[derive(Debug)]
    struct CountingStore {
        inner: ClientSessionMemoryCache,
        tickets: AtomicUsize,
    }

    impl ClientSessionStore for CountingStore {
        fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
            self.inner.set_kx_hint(name, group)
        }
        fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
            self.inner.kx_hint(name)
        }
        fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
            self.inner.set_tls12_session(name, value)
        }
        fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
            self.inner.tls12_session(name)
        }
        fn remove_tls12_session(&self, name: &ServerName<'static>) {
            self.inner.remove_tls12_session(name)
        }
        fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
            self.tickets.fetch_add(1, Ordering::Relaxed);
            self.inner.insert_tls13_ticket(name, value)
        }
        fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
            self.inner.take_tls13_ticket(name)
        }
    }

    /// a fault of docs/reliability.md: QUIC 0-RTT is refused. A client that enables
    /// early data and holds a ticket from a first connection still gets no
    /// 0-RTT keys, because the server's tickets allow no early data:
    /// nothing can be sent (and so accepted) before the handshake.
    #[tokio::test]
    async fn zero_rtt_is_never_offered() {
        let identity = TlsIdentity::self_signed().unwrap();
        assert_eq!(server_config(&identity).unwrap().max_early_data_size, 0);
        let server = server_endpoint("127.0.0.1:0".parse().unwrap(), &identity).unwrap();
        let addr = server.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(connection) = incoming.await {
                    // Keep it open until the client closes it.
                    let _ = connection.closed().await;
                }
            }
        });
        let (mut tls, name) = client_config(&Trust::Pinned(identity.fingerprint())).unwrap();
        tls.enable_early_data = true;
        let store = Arc::new(CountingStore {
            inner: ClientSessionMemoryCache::new(8),
            tickets: AtomicUsize::new(0),
        });
        tls.resumption = Resumption::store(store.clone());
        let quic = QuicClientConfig::try_from(tls).unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        // A full handshake first: the server may hand out a ticket.
        let first = client.connect(addr, &name).unwrap().await.unwrap();
        // The ticket comes after the handshake: wait for it, so that the
        // next connection does try to resume.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.tickets.load(Ordering::Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no session ticket");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        first.close(0u32.into(), b"done");
        let resumed = client.connect(addr, &name).unwrap();
        match resumed.into_0rtt() {
            Ok(_) => panic!("the client got 0-RTT keys: early data would be accepted"),
            Err(connecting) => {
                // The ordinary handshake still works.
                let second = connecting.await.unwrap();
                second.close(0u32.into(), b"done");
            }
        }
        accepting.abort();
    }
}
