//! The client port: accepts connections, reads pipelined requests, runs
//! them in order and writes their replies in one write per batch.
//!
//! Memory per client is bounded: a request by the parser's limits, replies
//! by `output_buffer_max` (past it they are written out before more
//! requests run, so a client that never reads stalls only itself, and is
//! dropped after `output_stall`). A protocol error gets its reply and a
//! closed connection; nothing after it runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::resp::{Reply, RequestParser};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::commands::{execute_pipeline, Session};
use crate::error::StartupError;
use crate::Node;

use crate::limits::{
    ACCEPT_RETRY_INTERVAL, PIPELINE_BATCH_MAX, READ_CHUNK_BYTES, SHUTDOWN_WAIT_MAX,
};

/// A running client port.
#[derive(Debug)]
pub struct ServerHandle {
    pub local_addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting; connected clients end with the runtime.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Serves `node` on `listener` until the task is aborted.
pub fn serve(node: Arc<Node>, listener: TcpListener) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let _ = node.client_port.set(local_addr);
    tokio::spawn(crate::info::sample_ops(Arc::downgrade(&node)));
    tokio::spawn(crate::commands::run_expiry_cycle(Arc::downgrade(&node)));
    let task = tokio::spawn(accept_loop(node, listener));
    Ok(ServerHandle { local_addr, task })
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY_INTERVAL).await;
                continue;
            }
        };
        let stats = node.stats();
        Node::count(&stats.connections_received);
        let connected = stats.connected_clients.fetch_add(1, Ordering::AcqRel);
        if connected as usize >= node.max_clients() {
            stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
            Node::count(&stats.rejected_connections);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let node = node.clone();
        tokio::spawn(async move {
            tracing::debug!(client = id, %peer, "client connected");
            if let Err(e) = client(&node, stream, id, peer).await {
                tracing::debug!(client = id, %peer, error = %e, "client connection ended");
            }
            node.stats()
                .connected_clients
                .fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn client(
    node: &Arc<Node>,
    mut stream: TcpStream,
    id: u64,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let limits = node.options().limits;
    let mut session = Session::new(id, node.options().requirepass.is_none());
    let local = stream.local_addr()?;
    let registration = node.clients().register(id, peer, local);
    let entry = &registration.entry;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut parser = RequestParser::default();
    let mut output = BytesMut::new();
    let mut shutdown = Box::pin(node.shutdown_requested());
    // Requests parsed but not yet run (a batch stopped at the output
    // budget), and a protocol error to report once they have run.
    let mut pending = std::collections::VecDeque::new();
    let mut broken = None;
    loop {
        // Run every whole request already received, in batches whose
        // replies are written out before the next batch runs.
        loop {
            let mut drained = false;
            let requests: Vec<_> = if pending.is_empty() && broken.is_none() {
                let mut requests = Vec::new();
                while requests.len() < PIPELINE_BATCH_MAX {
                    match parser.parse(&mut input, &limits.resp, session.authenticated) {
                        Ok(Some(args)) if args.is_empty() => continue,
                        Ok(Some(args)) => {
                            // `AUTH` changes what the parser accepts next.
                            let auth = args[0].eq_ignore_ascii_case(b"AUTH")
                                || args[0].eq_ignore_ascii_case(b"HELLO");
                            requests.push(args);
                            if auth && !session.authenticated {
                                break;
                            }
                        }
                        Ok(None) => {
                            drained = true;
                            break;
                        }
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    }
                }
                requests
            } else {
                pending.drain(..).collect()
            };
            pending = execute_pipeline(
                node,
                &mut session,
                requests,
                &mut output,
                limits.output_buffer_max,
            )
            .await;
            session.publish(entry);
            if entry.is_killed() {
                return Ok(());
            }
            if output.len() >= limits.output_buffer_max {
                flush(node, &mut stream, &mut output).await?;
            }
            if session.close {
                return flush(node, &mut stream, &mut output).await;
            }
            if !pending.is_empty() {
                continue;
            }
            if let Some(e) = broken.take() {
                tracing::info!(client = id, error = %e, "closing a client that broke the protocol");
                Reply::from(e).encode(&mut output, session.protocol);
                return flush(node, &mut stream, &mut output).await;
            }
            if drained {
                break;
            }
        }
        flush(node, &mut stream, &mut output).await?;
        input.reserve(READ_CHUNK_BYTES);
        let read = tokio::select! {
            read = stream.read_buf(&mut input) => read?,
            _ = &mut shutdown => return Ok(()),
            _ = entry.killed() => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        node.stats()
            .net_input_bytes
            .fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Writes the pending replies, dropping a client that takes none of them
/// for `output_stall`.
async fn flush(node: &Node, stream: &mut TcpStream, output: &mut BytesMut) -> std::io::Result<()> {
    let limits = &node.options().limits;
    if output.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(limits.output_stall, stream.write_all(output)).await {
        Ok(written) => {
            node.stats()
                .net_output_bytes
                .fetch_add(output.len() as u64, Ordering::Relaxed);
            output.clear();
            written
        }
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client reads no replies: dropped",
        )),
    }
}

/// Runs the client port on a runtime of its own until `SHUTDOWN`, SIGTERM
/// or SIGINT, then flushes what must reach the disk (`Node::close`). Call
/// it outside any async runtime.
pub fn serve_until_shutdown(node: Arc<Node>, listen: SocketAddr) -> Result<(), StartupError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("hotblock-client")
        .enable_all()
        .build()
        .map_err(|source| StartupError::Io {
            what: "the client runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartupError::Io {
                what: format!("cannot listen for clients on {listen}"),
                source,
            })?;
        let server = serve(node.clone(), listener).map_err(|source| StartupError::Io {
            what: format!("serving clients on {listen}"),
            source,
        })?;
        tracing::info!(addr = %server.local_addr, lsn = %node.lsn(), "ready for clients");
        node.start_coordinator(server.local_addr)
            .map_err(|source| StartupError::Io {
                what: "starting the coordinator's threads".into(),
                source,
            })?;
        wait_for_stop(&node).await;
        if node.options().coordinator.is_some() && node.db().is_some() {
            // A primary hands over before it goes, rather than leave the
            // others to wait for its lease; clients keep being served
            // (their writes held) meanwhile.
            let handing = node.clone();
            let _ = tokio::task::spawn_blocking(move || {
                crate::coordinator::handover::before_shutdown(&handing)
            })
            .await;
        }
        server.abort();
        Ok::<(), StartupError>(())
    })?;
    runtime.shutdown_timeout(SHUTDOWN_WAIT_MAX);
    if let Some(keeper) = node.lease_keeper() {
        // Gives up the lease (and the primary key with it) now, so the
        // others elect without waiting for it to expire.
        keeper.resign();
    }
    node.close();
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop(node: &Node) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = node.shutdown_requested() => tracing::info!("shutting down (SHUTDOWN)"),
        _ = term.recv() => tracing::info!("shutting down (SIGTERM)"),
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down (SIGINT)"),
    }
}
