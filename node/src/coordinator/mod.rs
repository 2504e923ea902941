//! The coordinator: the consensus service the nodes of a cluster agree
//! through (who is primary, under which epoch). It is never our own code:
//! hotblock uses etcd (v3), through [`etcd::Etcd`].
//!
//! Without `--coordinator`, failover is manual (`REPLICAOF NO ONE`).

pub mod etcd;

pub use etcd::{CoordinatorUrl, CoordinatorUrlError, Etcd, EtcdError, KeyValue, LeaseId};
