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
//! transaction, LSN)` under its own lease, reads the members and the other
//! candidates, and applies [`election::decide`] (which waits for N − W + 1
//! sync candidates, so one of them holds every acknowledged write). Only
//! the best tries to take the key, in one etcd transaction that also
//! checks that nothing it decided on has changed since it read it (no
//! primary, the same term, every candidate's record at the revision it
//! read). So the winner is the most up-to-date candidate seen, never the
//! first to ask. The term is one above every term and epoch known
//! ([`election::next_term`]), won once, so the new epoch is unique in the
//! cluster.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hotblock_core::repl::election::{self, Decision};
use hotblock_core::repl::{Epoch, NodeId};

use super::etcd::{Compare, Etcd, EtcdError, KeyValue, Put};
use super::lease::LeaseKeeper;
use super::records::{self, CandidateRecord, Keys, MemberRecord, PrimaryRecord};
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
    /// It holds every write it acknowledged: not a copy started from
    /// nothing (or dropped for damage) that has yet to catch up with a
    /// primary. Only such a copy stands.
    pub vouches: bool,
    /// The replication address it follows now.
    pub upstream: String,
    /// The epoch this node was primary of before it stepped down in place
    /// (this process): it holds every write it acknowledged then.
    pub stepped_down_from: Option<Epoch>,
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
            // A member at our replication address under another id is
            // likely this slot's previous life, whose data directory is
            // gone: it will never stand again, and an election waits for
            // it. Only an operator can know (an address may be reused by
            // another machine while that member is down holding writes),
            // so it is said, not done.
            for old in self.members()? {
                if old.node != self.me.0 && !old.repl.is_empty() && old.repl == self.member.repl {
                    tracing::warn!(
                        old = old.node,
                        repl = %old.repl,
                        "member {} was registered at this node's replication address: if its data directory is gone for good, remove it (etcdctl del {}), or elections wait for it",
                        old.node,
                        String::from_utf8_lossy(&self.keys.member(old.node))
                    );
                }
            }
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
        if !position.consistent || !position.vouches {
            // Forgotten only once deleted: a record left behind would count
            // toward N - W + 1 for a copy that may lack acknowledged writes.
            if let Some(c) = &self.candidacy {
                self.etcd.delete(&self.keys.candidate(c.node))?;
                self.candidacy = None;
            }
            return self.waiting(
                node,
                match position.consistent {
                    false => "not a candidate while loading a snapshot",
                    true => "not a candidate: this copy started from nothing and has not yet caught up with a primary, so it may lack writes it acknowledged before",
                },
            );
        }
        let mine = CandidateRecord {
            node: self.me.0,
            term: last.term,
            last_epoch: position.last_epoch.0,
            lsn: position.lsn,
            epoch_seen: position.epoch_seen.0,
            mode: self.config.mode,
            stepped_down: position.stepped_down_from == Some(Epoch(last.epoch)),
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
        let (last, standing) = (
            last.as_last(),
            candidates
                .iter()
                .map(|(_, c)| c.as_candidate())
                .collect::<Vec<_>>(),
        );
        let decision = election::decide(
            &members
                .iter()
                .map(MemberRecord::as_member)
                .collect::<Vec<_>>(),
            &standing,
            &last,
            since.elapsed() >= SETTLE,
        );
        let best = match decision {
            Decision::Wait(why) => return self.waiting(node, &why.to_string()),
            Decision::Best(best) => best,
        };
        if best != self.me {
            return self.waiting(
                node,
                &format!(
                    "node {} is the most up to date candidate: waiting for it to take over",
                    best.0
                ),
            );
        }
        let new_term = election::next_term(&last, &standing, position.epoch_seen).ok_or_else(|| {
            TickError::Record(
                "the next term is past the most an epoch holds: the cluster's records in etcd are damaged"
                    .into(),
            )
        })?;
        self.take_over(node, lease, &term_kv, new_term, &candidates, &position)
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

    /// The etcd transaction that makes this node the primary in
    /// `new_term`, then the promotion.
    fn take_over(
        &mut self,
        node: &Arc<Node>,
        lease: super::LeaseId,
        term_kv: &KeyValue,
        new_term: u64,
        candidates: &[(KeyValue, CandidateRecord)],
        position: &Position,
    ) -> Result<(), TickError> {
        let epoch = election::epoch_for(new_term, self.me);
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
        let at_least = election::epoch_before_term(epoch.term());
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
