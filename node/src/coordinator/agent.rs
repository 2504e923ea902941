//! The coordinator's agent: the thread that makes a node follow what etcd
//! says, and take part in elections.
//!
//! Every `TICK` (50 ms; 5 ms while there is no primary or a switchover is
//! on), and at once when its watch on the cluster's keys sees a change, it
//! reads the cluster's `primary` and `term` keys (see
//! [`super::records`]) and acts by its role:
//!
//! - **Primary.** It holds the `primary` key under its lease. If the key
//!   names another node, or its lease is gone (it was paused, or cut off
//!   from etcd for longer than its lease), it **demotes itself in place**
//!   and follows whoever holds the key. Its writes stopped already: the
//!   write gate closes by time alone ([`super::lease`]).
//! - **Secondary.** It follows the node the `primary` key names,
//!   re-pointing when it changes. With no primary key, it is in an
//!   election.
//! - **Starting `hotblock-node`.** It writes nothing before it has read
//!   etcd: with no cluster yet (no `term` key), it creates it, as its first
//!   primary; otherwise it joins as a secondary (of the live primary, or
//!   as a candidate in the election).
//!
//! **Elections.** Each candidate publishes `(epoch of its last
//! transaction, LSN)` under its own lease. With a sync quorum W and N sync
//! secondaries registered (the old primary aside), a decision needs at
//! least N − W + 1 sync candidates: any W sync secondaries and any
//! N − W + 1 of them share one, so some candidate holds every
//! acknowledged write. Every candidate ranks them alike; only the best tries to take
//! the key, in one etcd transaction that also checks that nothing it
//! decided on has changed since it read it (no primary, the same term,
//! every candidate's record at the revision it read). So the winner is the
//! most up-to-date candidate seen, never the first to ask. The term comes
//! from etcd (one above every term and epoch known), so the new epoch is
//! unique in the cluster.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hotblock_core::repl::{Epoch, NodeId};

use super::etcd::{Compare, Etcd, EtcdError, KeyValue, Put};
use super::lease::LeaseKeeper;
use super::records::{self, CandidateRecord, Keys, MemberMode, MemberRecord, PrimaryRecord};
use super::Config;
use crate::Node;

/// How often the agent reads etcd: the detection delay after a lease
/// expires, and the pace of an election.
const TICK: Duration = Duration::from_millis(50);
/// The tick while the cluster has no primary or this node hands over:
/// an election or a switchover should not wait on polling.
const TICK_URGENT: Duration = Duration::from_millis(5);
/// How long an election waits for every registered sync secondary to
/// publish before deciding with the N − W + 1 it has.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the members are read outside elections.
const MEMBERS_EVERY: Duration = Duration::from_millis(500);
/// Terms fit an epoch's high 48 bits; one this large means damaged records.
const TERM_MAX: u64 = 1 << 47;

/// What the agent does with a node, seen from the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Primary,
    Secondary,
    /// Being promoted or demoted: nothing to do this tick.
    Changing,
}

/// A secondary's position, for its candidacy.
#[derive(Clone, Debug)]
pub struct Position {
    pub last_epoch: Epoch,
    pub lsn: u64,
    /// The highest epoch it has seen.
    pub epoch_seen: Epoch,
    pub consistent: bool,
    /// The replication address it follows now.
    pub upstream: String,
}

/// The agent's state between ticks.
struct Agent {
    node: Weak<Node>,
    etcd: Arc<Etcd>,
    keys: Keys,
    config: Config,
    me: NodeId,
    keeper: Arc<LeaseKeeper>,
    member: MemberRecord,
    member_published: bool,
    /// `hotblock-node` before its first look at etcd.
    booting: bool,
    /// Our candidacy as last published (with its lease).
    candidacy: Option<CandidateRecord>,
    /// When this node first saw the cluster without a primary.
    election_since: Option<Instant>,
    /// When the members were last read (for `SENTINEL replicas`,
    /// `FAILOVER TO`).
    members_read: Option<Instant>,
    /// The last tick found no primary, or a handover on: tick faster.
    urgent: bool,
    /// Woken by the watch on the cluster's keys: a change is read at once
    /// rather than at the next tick.
    wake: std::sync::mpsc::Receiver<()>,
}

/// Starts the agent and its lease keeper for `node`, whose clients reach
/// it at `client` and secondaries at `repl`. They stop with the node.
pub fn start(
    node: &Arc<Node>,
    config: Config,
    me: NodeId,
    client: String,
    repl: String,
) -> std::io::Result<Arc<LeaseKeeper>> {
    let etcd = Arc::new(Etcd::new(
        config.url.clone(),
        call_timeout(config.failover_timeout),
    ));
    let keeper = LeaseKeeper::new(etcd.clone(), config.failover_timeout, node.write_lease());
    keeper.spawn()?;
    let booting = node.standing() == Standing::Primary;
    let wake = watch(&config, Arc::downgrade(node))?;
    let agent = Agent {
        node: Arc::downgrade(node),
        etcd,
        keys: Keys::new(&config.cluster),
        member: MemberRecord {
            node: me.0,
            client,
            repl,
            mode: config.mode,
            candidate: config.candidate,
        },
        config,
        me,
        keeper: keeper.clone(),
        member_published: false,
        booting,
        candidacy: None,
        election_since: None,
        members_read: None,
        urgent: false,
        wake,
    };
    tracing::info!(coordinator = %agent.config.url, cluster = %agent.config.cluster, node = me.0, client = %agent.member.client, repl = %agent.member.repl, "joining the cluster through the coordinator");
    std::thread::Builder::new()
        .name("hotblock-coordinator".into())
        .spawn(move || {
            let keeper = agent.keeper.clone();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.run()));
            if ran.is_err() {
                // A node whose agent died would renew its lease and never
                // step down: it goes, and its lease with it.
                tracing::error!("the coordinator's thread panicked: exiting");
                keeper.resign();
                std::process::exit(70);
            }
        })?;
    Ok(keeper)
}

/// Watches the cluster's keys on a thread of its own; every change sends a
/// wake-up (coalesced: one pending at most). Best effort: the agent polls
/// anyway, so a broken watch only makes it slower; it is opened again.
fn watch(config: &Config, node: Weak<Node>) -> std::io::Result<std::sync::mpsc::Receiver<()>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let etcd = Etcd::new(config.url.clone(), call_timeout(config.failover_timeout));
    let prefix = Keys::new(&config.cluster).all();
    std::thread::Builder::new()
        .name("hotblock-watch".into())
        .spawn(move || {
            while node.strong_count() > 0 {
                let watched = etcd.watch_prefix(&prefix, || {
                    let _ = tx.try_send(());
                });
                if let Err(e) = watched {
                    tracing::debug!(error = %e, "the watch on the cluster's keys broke; opening it again");
                }
                std::thread::sleep(WATCH_RETRY);
            }
        })?;
    Ok(rx)
}

/// How soon a broken watch is opened again.
const WATCH_RETRY: Duration = Duration::from_millis(200);

/// One etcd call's limit: a quarter of the lease, so that a renewal that
/// hangs leaves time for three more before the lease runs out.
fn call_timeout(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

/// Why a tick did not finish: said in `INFO` and the log, and retried.
#[derive(Debug, thiserror::Error)]
enum TickError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    Record(String),
    #[error("{0}")]
    Node(String),
}

impl Agent {
    fn run(mut self) {
        let mut last_error: Option<String> = None;
        loop {
            let Some(node) = self.node.upgrade() else {
                break;
            };
            if node.is_shutting_down() {
                break;
            }
            let outcome = self.tick(&node);
            let error = outcome.err().map(|e| e.to_string());
            if error != last_error {
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "coordinator");
                }
            }
            node.update_cluster(|c| {
                let (link_up, lease_error) = self.keeper.link();
                c.link_up = link_up && error.is_none();
                c.last_error = error.clone().or(lease_error);
            });
            last_error = error;
            drop(node);
            let tick = if self.urgent { TICK_URGENT } else { TICK };
            let _ = self.wake.recv_timeout(tick);
        }
        self.keeper.stop();
    }

    fn tick(&mut self, node: &Arc<Node>) -> Result<(), TickError> {
        // None between a lease lost (or given up) and the next, which the
        // keeper's thread grants shortly.
        let lease = self.keeper.lease();
        if lease.is_none() && self.keeper.take_lost() {
            self.candidacy = None;
        }
        if !self.member_published {
            self.etcd.put(
                &self.keys.member(self.me.0),
                &records::encode(&self.member),
                None,
            )?;
            self.member_published = true;
        }
        let primary = self.read::<PrimaryRecord>(&self.keys.primary())?;
        let term = self.read::<PrimaryRecord>(&self.keys.term())?;
        node.update_cluster(|c| {
            c.primary = primary.as_ref().map(|p| p.1.clone());
            c.term = term.as_ref().map(|t| t.1.clone());
        });
        self.urgent = primary.is_none()
            || node.handover().state() != super::handover::HandoverState::NoFailover;
        if self
            .members_read
            .is_none_or(|at| at.elapsed() >= MEMBERS_EVERY)
        {
            let members = self.members()?;
            node.update_cluster(|c| c.members = members);
            self.members_read = Some(Instant::now());
        }
        match (node.standing(), lease) {
            (Standing::Changing, _) => Ok(()),
            (Standing::Primary, Some(lease)) if self.booting => {
                self.boot(node, lease, primary, term)
            }
            (Standing::Primary, Some(lease)) => self.as_primary(node, lease, primary, term),
            (Standing::Secondary, Some(lease)) => self.as_secondary(node, lease, primary, term),
            // Without a lease, a primary still steps down for the one etcd
            // names (a switchover gave its lease up a moment ago).
            (Standing::Primary, None) if !self.booting => match primary {
                Some((_, p)) if p.node != self.me.0 => {
                    tracing::warn!(primary = p.node, epoch = %Epoch(p.epoch), "another node is the primary: stepping down");
                    self.demote(node, &p)
                }
                _ => Ok(()),
            },
            (_, None) => Ok(()),
        }
    }

    /// A record and its key's revisions, if the key exists.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<(KeyValue, T)>, TickError> {
        match self.etcd.get(key)? {
            None => Ok(None),
            Some(kv) => {
                let record = records::parse(key, &kv.value).map_err(TickError::Record)?;
                Ok(Some((kv, record)))
            }
        }
    }

    /// `hotblock-node`'s first look: create the cluster, or join it.
    fn boot(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        primary: Option<(KeyValue, PrimaryRecord)>,
        term: Option<(KeyValue, PrimaryRecord)>,
    ) -> Result<(), TickError> {
        if term.is_none() {
            let epoch = node.epoch();
            let record = self.primary_record(epoch);
            let value = records::encode(&record);
            let created = self.etcd.txn(
                &[
                    Compare::Absent(&self.keys.term()),
                    Compare::Absent(&self.keys.primary()),
                ],
                &[
                    Put {
                        key: &self.keys.term(),
                        value: &value,
                        lease: None,
                    },
                    Put {
                        key: &self.keys.primary(),
                        value: &value,
                        lease: Some(lease),
                    },
                ],
            )?;
            if created {
                self.booting = false;
                self.keeper.set_primary(Some(lease));
                tracing::info!(cluster = %self.config.cluster, %epoch, "created the cluster in etcd: this node is its primary");
            }
            return Ok(());
        }
        if let Some((kv, p)) = &primary {
            if p.node == self.me.0 && kv.lease == Some(lease) {
                // Our own creation, whose answer was lost.
                self.booting = false;
                self.keeper.set_primary(Some(lease));
                return Ok(());
            }
        }
        // A cluster exists: whoever is primary, it is decided there, not
        // by this node having been one before it stopped.
        self.booting = false;
        let to = match &primary {
            Some((_, p)) if p.node != self.me.0 => p.clone(),
            _ => term.expect("checked").1,
        };
        tracing::info!(primary = to.node, repl = %to.repl, "the cluster exists: joining it as a secondary");
        self.demote(node, &to)
    }

    fn as_primary(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        primary: Option<(KeyValue, PrimaryRecord)>,
        term: Option<(KeyValue, PrimaryRecord)>,
    ) -> Result<(), TickError> {
        match primary {
            Some((kv, p)) if p.node == self.me.0 && kv.lease == Some(lease) => Ok(()),
            Some((_, p)) if p.node != self.me.0 => {
                tracing::warn!(primary = p.node, epoch = %Epoch(p.epoch), "another node is the primary: stepping down");
                self.demote(node, &p)
            }
            _ if node.handover().state() != super::handover::HandoverState::NoFailover => {
                // Handing over: it gave the key up on purpose, and waits
                // (taking no writes) for the target to take it.
                Ok(())
            }
            _ => {
                // The key is gone (or is a previous life's): this node's
                // lease lapsed. It takes part in the election as any
                // secondary; being the most up to date, it may well win.
                tracing::warn!("this node no longer holds the primary key (its lease lapsed): stepping down to stand in the election");
                let last = term
                    .map(|t| t.1)
                    .unwrap_or_else(|| self.primary_record(node.epoch()));
                self.demote(node, &last)
            }
        }
    }

    fn demote(&mut self, node: &Arc<Node>, to: &PrimaryRecord) -> Result<(), TickError> {
        self.keeper.set_primary(None);
        self.candidacy = None;
        node.demote(&to.repl, Epoch(to.epoch))
            .map_err(|e| TickError::Node(format!("cannot step down: {e}")))?;
        node.update_cluster(|c| c.demotions += 1);
        Ok(())
    }

    fn as_secondary(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        primary: Option<(KeyValue, PrimaryRecord)>,
        term: Option<(KeyValue, PrimaryRecord)>,
    ) -> Result<(), TickError> {
        match primary {
            Some((_, p)) if p.node != self.me.0 => {
                self.election_since = None;
                node.update_cluster(|c| c.election = None);
                if let Some(c) = self.candidacy.take() {
                    // Stale from now on anyway (the term moved on).
                    let _ = self.etcd.delete(&self.keys.candidate(c.node));
                }
                let position = node
                    .position()
                    .ok_or_else(|| TickError::Node("not a secondary".into()))?;
                if !same_address(&position.upstream, &p.repl) {
                    tracing::info!(primary = p.node, repl = %p.repl, "following the cluster's primary");
                    node.repoint_to(&p.repl)
                        .map_err(|e| TickError::Node(format!("cannot follow {}: {e}", p.repl)))?;
                }
                Ok(())
            }
            // We won, but the answer to the transaction was lost: finish.
            Some((kv, p)) if kv.lease == Some(lease) => {
                tracing::warn!(epoch = %Epoch(p.epoch), "etcd names this node the primary: promoting");
                self.promote(node, lease, Epoch(p.epoch))
            }
            // A previous life's key (this node restarted within its old
            // lease): it goes when that lease expires.
            Some(_) => Ok(()),
            None => self.elect(node, lease, term),
        }
    }

    /// One step of an election: publish our position, and take the key if
    /// we are the best of enough candidates.
    fn elect(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        term: Option<(KeyValue, PrimaryRecord)>,
    ) -> Result<(), TickError> {
        let Some((term_kv, last)) = term else {
            node.update_cluster(|c| {
                c.election =
                    Some("no primary yet: waiting for hotblock-node to create the cluster".into())
            });
            return Ok(());
        };
        let since = *self.election_since.get_or_insert_with(Instant::now);
        if !self.config.candidate {
            return self.waiting(
                node,
                "not a candidate (async without --failover-async): waiting for the election",
            );
        }
        let Some(position) = node.position() else {
            return Ok(());
        };
        if !position.consistent {
            if let Some(c) = self.candidacy.take() {
                self.etcd.delete(&self.keys.candidate(c.node))?;
            }
            return self.waiting(node, "not a candidate while loading a snapshot");
        }
        let mine = CandidateRecord {
            node: self.me.0,
            term: last.term,
            last_epoch: position.last_epoch.0,
            lsn: position.lsn,
            epoch_seen: position.epoch_seen.0,
            mode: self.config.mode,
        };
        if self.candidacy.as_ref() != Some(&mine) {
            self.etcd.put(
                &self.keys.candidate(self.me.0),
                &records::encode(&mine),
                Some(lease),
            )?;
            tracing::info!(term = last.term, lsn = mine.lsn, last_epoch = %position.last_epoch, "standing in the election");
            self.candidacy = Some(mine);
            // Decided with what is there now: the others may have stood
            // already, and the rules below wait for those who have not.
        }
        let members = self.members()?;
        let candidates: Vec<(KeyValue, CandidateRecord)> = self
            .etcd
            .get_prefix(&self.keys.candidates())?
            .into_iter()
            .filter_map(|kv| {
                let c: CandidateRecord = records::parse(&kv.key, &kv.value).ok()?;
                (c.term == last.term).then_some((kv, c))
            })
            .collect();
        node.update_cluster(|c| c.members = members.clone());
        let decision = decide(&members, &candidates, &last, since.elapsed() >= SETTLE);
        let best = match decision {
            Decision::Wait(why) => return self.waiting(node, &why),
            Decision::Best(best) => best,
        };
        if best != self.me.0 {
            return self.waiting(
                node,
                &format!(
                    "node {best} is the most up to date candidate: waiting for it to take over"
                ),
            );
        }
        self.take_over(node, lease, &term_kv, &last, &candidates, &position)
    }

    /// Every member. One that cannot be read is an error, not left out: an
    /// election that went on without it could miss the holder of a write.
    fn members(&self) -> Result<Vec<MemberRecord>, TickError> {
        self.etcd
            .get_prefix(&self.keys.members())?
            .iter()
            .map(|kv| records::parse(&kv.key, &kv.value))
            .collect::<Result<_, _>>()
            .map_err(TickError::Record)
    }

    fn waiting(&self, node: &Arc<Node>, why: &str) -> Result<(), TickError> {
        node.update_cluster(|c| c.election = Some(why.to_string()));
        Ok(())
    }

    /// The etcd transaction that makes this node the primary, then the
    /// promotion.
    fn take_over(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        term_kv: &KeyValue,
        last: &PrimaryRecord,
        candidates: &[(KeyValue, CandidateRecord)],
        position: &Position,
    ) -> Result<(), TickError> {
        let new_term = candidates
            .iter()
            .flat_map(|(_, c)| [Epoch(c.last_epoch).term(), Epoch(c.epoch_seen).term()])
            .chain([
                last.term,
                Epoch(last.epoch).term(),
                position.epoch_seen.term(),
            ])
            .max()
            .unwrap_or(0)
            + 1;
        if new_term >= TERM_MAX {
            return Err(TickError::Record(format!(
                "term {new_term} is past the most an epoch holds: the cluster's records in etcd are damaged"
            )));
        }
        let epoch = Epoch(new_term << 16 | (self.me.0 & 0xffff));
        let record = PrimaryRecord {
            term: new_term,
            ..self.primary_record(epoch)
        };
        let value = records::encode(&record);
        let (primary_key, term_key) = (self.keys.primary(), self.keys.term());
        let candidate_keys: Vec<(Vec<u8>, i64)> = candidates
            .iter()
            .map(|(kv, _)| (kv.key.clone(), kv.mod_revision))
            .collect();
        let mut compares = vec![
            Compare::Absent(&primary_key),
            Compare::ModRevision(&term_key, term_kv.mod_revision),
        ];
        compares.extend(
            candidate_keys
                .iter()
                .map(|(k, rev)| Compare::ModRevision(k, *rev)),
        );
        let won = self.etcd.txn(
            &compares,
            &[
                Put {
                    key: &term_key,
                    value: &value,
                    lease: None,
                },
                Put {
                    key: &primary_key,
                    value: &value,
                    lease: Some(lease),
                },
            ],
        )?;
        if !won {
            // Something changed since we read it: decide again next tick.
            return Ok(());
        }
        tracing::warn!(term = new_term, %epoch, lsn = position.lsn, "won the election: promoting this node");
        let _ = self.etcd.delete(&self.keys.candidate(self.me.0));
        self.candidacy = None;
        self.promote(node, lease, epoch)
    }

    /// Promotes this node to exactly `epoch` (the one etcd holds), and
    /// opens its writes. A node that cannot serve what it won gives up its
    /// lease (and the key with it) and exits: another candidate takes
    /// over, and a restart recovers it from its data directory.
    fn promote(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        epoch: Epoch,
    ) -> Result<(), TickError> {
        self.election_since = None;
        // One above everything this node has seen, in the term etcd gave.
        let at_least = Epoch(((epoch.term().saturating_sub(1)) << 16) | 0xffff);
        let got = match node.promote_at(at_least) {
            Ok((_, got)) | Err(crate::error::PromoteError::Incomplete { epoch: got, .. }) => got,
            Err(e) => self.give_up(&format!("promotion failed: {e}")),
        };
        if got != epoch {
            self.give_up(&format!(
                "promoted to epoch {got}, not the {epoch} etcd holds"
            ));
        }
        self.keeper.set_primary(Some(lease));
        node.update_cluster(|c| {
            c.promotions += 1;
            c.election = None;
        });
        Ok(())
    }

    /// Gives up everything held in etcd and stops the process: this node
    /// cannot be what etcd says it is.
    fn give_up(&self, why: &str) -> ! {
        tracing::error!(
            why,
            "giving up the coordinator lease and exiting: restart this node to rejoin"
        );
        self.keeper.resign();
        std::process::exit(1);
    }

    fn primary_record(&self, epoch: Epoch) -> PrimaryRecord {
        PrimaryRecord {
            node: self.me.0,
            term: epoch.term(),
            epoch: epoch.0,
            client: self.member.client.clone(),
            repl: self.member.repl.clone(),
            sync_quorum: self.config.sync_quorum,
            handover_to: None,
        }
    }
}

/// Whether two `host:port` strings name the same socket address.
fn same_address(a: &str, b: &str) -> bool {
    use std::net::ToSocketAddrs;
    let resolve = |s: &str| s.to_socket_addrs().ok().and_then(|mut i| i.next());
    a == b || resolve(a).is_some_and(|x| resolve(b) == Some(x))
}

/// What the candidates seen allow.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Wait(String),
    /// The node to take over.
    Best(u64),
}

/// Decides an election from the registered `members` and the
/// `candidates` of this term, after `last` (the gone primary). `settled`:
/// the wait for every sync secondary is over.
fn decide(
    members: &[MemberRecord],
    candidates: &[(KeyValue, CandidateRecord)],
    last: &PrimaryRecord,
    settled: bool,
) -> Decision {
    let sync_members: Vec<u64> = members
        .iter()
        .filter(|m| m.mode == MemberMode::Sync && m.node != last.node)
        .map(|m| m.node)
        .collect();
    let n = sync_members.len();
    let w = last.sync_quorum.min(n);
    let sync_in = candidates
        .iter()
        .filter(|(_, c)| c.mode == MemberMode::Sync && sync_members.contains(&c.node))
        .count();
    // With no sync quorum, no write is acknowledged by any secondary:
    // any candidate will do (async failover loses the async window).
    let needed = if w == 0 { 0 } else { n - w + 1 };
    if sync_in < needed {
        return Decision::Wait(format!(
            "{sync_in} of the {needed} sync candidates needed (N = {n} sync secondaries, quorum W = {w}: N - W + 1) have stood"
        ));
    }
    if candidates.is_empty() {
        return Decision::Wait("no candidate yet".into());
    }
    if sync_in < n && !settled {
        return Decision::Wait(format!(
            "{sync_in} of {n} sync candidates have stood: waiting briefly for the rest"
        ));
    }
    let best = candidates
        .iter()
        .max_by_key(|(_, c)| c.rank())
        .expect("not empty");
    // A planned switchover's target, if it is as up to date as the best.
    let position = |c: &CandidateRecord| (c.last_epoch, c.lsn);
    let named = candidates
        .iter()
        .find(|(_, c)| Some(c.node) == last.handover_to && position(c) == position(&best.1));
    Decision::Best(named.unwrap_or(best).1.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: u64, mode: MemberMode) -> MemberRecord {
        MemberRecord {
            node,
            client: String::new(),
            repl: String::new(),
            mode,
            candidate: true,
        }
    }

    fn candidate(node: u64, lsn: u64) -> (KeyValue, CandidateRecord) {
        let kv = KeyValue {
            key: Vec::new(),
            value: Vec::new(),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        };
        let c = CandidateRecord {
            node,
            term: 1,
            last_epoch: 1 << 16,
            epoch_seen: 1 << 16,
            lsn,
            mode: MemberMode::Sync,
        };
        (kv, c)
    }

    fn last(quorum: usize) -> PrimaryRecord {
        PrimaryRecord {
            node: 1,
            term: 1,
            epoch: 1 << 16 | 1,
            client: String::new(),
            repl: String::new(),
            sync_quorum: quorum,
            handover_to: None,
        }
    }

    #[test]
    fn an_election_waits_for_n_minus_w_plus_one_sync_candidates() {
        // Node 1 was the primary; 2, 3 and 4 are sync secondaries.
        let members: Vec<MemberRecord> = (1..=4).map(|n| member(n, MemberMode::Sync)).collect();
        // W = 1: a write may be on one secondary only; all three must stand.
        let two = [candidate(2, 10), candidate(3, 12)];
        assert!(matches!(
            decide(&members, &two, &last(1), true),
            Decision::Wait(_)
        ));
        let three = [candidate(2, 10), candidate(3, 12), candidate(4, 11)];
        assert_eq!(decide(&members, &three, &last(1), false), Decision::Best(3));
        // W = 2: any two of three share a holder of every acknowledged write.
        assert_eq!(decide(&members, &two, &last(2), true), Decision::Best(3));
        // ... but before the settle time, the third may still come.
        assert!(matches!(
            decide(&members, &two, &last(2), false),
            Decision::Wait(_)
        ));
        // W larger than N counts as N.
        assert_eq!(
            decide(&members, &[candidate(4, 1)], &last(9), true),
            Decision::Best(4)
        );
        // No sync quorum: any candidate, once settled.
        let async_only = [member(1, MemberMode::Async), member(5, MemberMode::Async)];
        let mut c = candidate(5, 3);
        c.1.mode = MemberMode::Async;
        assert_eq!(decide(&async_only, &[c], &last(0), true), Decision::Best(5));
        assert!(matches!(
            decide(&async_only, &[], &last(0), true),
            Decision::Wait(_)
        ));
    }
}
