//! The connected clients, as `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL`
//! see them: one entry per connection, registered by the server for the
//! connection's life. Its own file because the server writes it, the
//! commands read it, and neither owns the other.
//!
//! An entry holds only what a connection publishes about itself (address,
//! name, database, last command); the connection's state proper stays in
//! its `Session`, untouched by other tasks. `CLIENT KILL` sets the entry's
//! flag and wakes the connection, which closes itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one connection publishes about itself.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) connected: Instant,
    pub(crate) state: Mutex<Published>,
    killed: AtomicBool,
    kill: tokio::sync::Notify,
}

/// The parts of a connection's state others may read, refreshed by the
/// connection after each batch of requests.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub(crate) name: Option<String>,
    pub(crate) db: String,
    pub(crate) last_command: String,
    pub(crate) last_active: Instant,
    pub(crate) protocol: u8,
    pub(crate) in_multi: bool,
}

impl ClientEntry {
    /// Closes the connection after the batch it is running, if any.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_one();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is killed.
    pub(crate) async fn killed(&self) {
        self.kill.notified().await
    }

    /// One `CLIENT LIST` line, in Redis's field order for the fields
    /// hotblock has.
    pub(crate) fn line(&self) -> String {
        let state = self.state.lock().expect("client entry lock").clone();
        let now = Instant::now();
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 tot-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 events=r cmd={} user=default redir=-1 resp={}",
            self.id,
            self.peer,
            self.local,
            state.name.as_deref().unwrap_or(""),
            now.duration_since(self.connected).as_secs(),
            now.duration_since(state.last_active).as_secs(),
            if state.in_multi { "x" } else { "N" },
            state.db,
            if state.in_multi { 0 } else { -1 },
            if state.last_command.is_empty() {
                "NULL"
            } else {
                &state.last_command
            },
            state.protocol,
        )
    }
}

/// Every connected client, by id.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    entries: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
}

impl Clients {
    /// Registers a connection; it is removed when the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Registration {
        let now = Instant::now();
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            local,
            connected: now,
            state: Mutex::new(Published {
                name: None,
                db: crate::DEFAULT_DATABASE.to_string(),
                last_command: String::new(),
                last_active: now,
                protocol: 2,
                in_multi: false,
            }),
            killed: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
        });
        self.entries
            .lock()
            .expect("clients lock")
            .insert(id, entry.clone());
        Registration {
            clients: self.clone(),
            entry,
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.entries.lock().expect("clients lock").get(&id).cloned()
    }

    /// Every entry, in id order.
    pub(crate) fn all(&self) -> Vec<Arc<ClientEntry>> {
        self.entries
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect()
    }
}

/// A connection's entry, removed from the registry on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    clients: Arc<Clients>,
    pub(crate) entry: Arc<ClientEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients
            .entries
            .lock()
            .expect("clients lock")
            .remove(&self.entry.id);
    }
}
