//! The coordinator, modelled: etcd as a linearizable store with leases,
//! and on each node the agent `hotblock-node` runs on it (a lease keeper
//! that opens the write gate, stepping down, following, elections), over
//! the very rules the nodes use (`hotblock_core::repl::election`).
//!
//! What the model keeps of etcd, because safety rests on it:
//! - a renewal restarts the TTL when the store *processes* it, not when it
//!   was sent; an expired lease cannot be renewed;
//! - expired leases are revoked (and their keys deleted) only at the
//!   lessor's periodic check, every 500 ms;
//! - a transaction compares and writes atomically; a put under a dead
//!   lease fails.
//!
//! Faults: each node's link to the store can be cut; renewals can be slow
//! (up to 1.5 TTL each way); each node's clock runs at its own rate within
//! the drift bound; a node can be paused (SIGSTOP) for up to 3 s. The
//! checker adds, to the simulator's own checks:
//! - **one writer**: the real-time intervals in which nodes' write gates
//!   are open never overlap between nodes;
//! - **no acknowledged write lost**: every elected node holds every
//!   acknowledged group whose holders at acknowledgement all kept their
//!   blocks since;
//! - after healing, the cluster elects a primary and converges by itself.

use super::*;
use hotblock_core::repl::election::{self, Candidate, Decision, LastPrimary, Member};

/// How often etcd's lessor revokes expired leases (etcd's own interval).
const EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// How long an election waits for every sync secondary (the agent's).
const SETTLE: Duration = Duration::from_millis(300);
/// How soon a lost or failed renewal is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// The most a node's clock rate differs from real time, in parts per
/// thousand: within `election::CLOCK_RATE_DRIFT_MAX_DIVISOR` (2%).
const CLOCK_DRIFT_PERMILLE: u64 = 20;

/// A `primary` or `term` record.
#[derive(Clone, Copy, Debug)]
pub struct PrimaryRec {
    pub node: usize,
    pub term: u64,
    pub epoch: Epoch,
    pub sync_quorum: usize,
}

impl PrimaryRec {
    fn last(&self) -> LastPrimary {
        LastPrimary {
            node: NodeId(self.node as u64),
            term: self.term,
            epoch: self.epoch,
            sync_quorum: self.sync_quorum,
            handover_to: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    value: T,
    mod_revision: u64,
    lease: Option<u64>,
}

/// etcd, as far as the cluster uses it.
pub struct Store {
    revision: u64,
    primary: Option<Entry<PrimaryRec>>,
    term: Option<Entry<PrimaryRec>>,
    /// Each node's candidacy, with the term it stands after.
    candidates: BTreeMap<usize, Entry<(u64, Candidate)>>,
    members: Vec<Member>,
    /// Live leases: id → expiry (real time).
    leases: BTreeMap<u64, Duration>,
    next_lease: u64,
    next_check: Duration,
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn grant(&mut self, now: Duration, ttl: Duration) -> u64 {
        self.next_lease += 1;
        self.leases.insert(self.next_lease, now + ttl);
        self.next_lease
    }

    /// A renewal processed at `now`: false when the lease is gone or has
    /// expired (etcd does not bring an expired lease back).
    fn renew(&mut self, now: Duration, lease: u64, ttl: Duration) -> bool {
        match self.leases.get_mut(&lease) {
            Some(expiry) if *expiry > now => {
                *expiry = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// Whether a put may attach to `lease`: etcd accepts any lease not
    /// revoked yet, expired or not (the revocation deletes the key soon).
    fn exists(&self, lease: u64) -> bool {
        self.leases.contains_key(&lease)
    }

    fn revoke(&mut self, lease: u64) {
        if self.leases.remove(&lease).is_none() {
            return;
        }
        if self.primary.is_some_and(|e| e.lease == Some(lease)) {
            self.primary = None;
            self.bump();
        }
        let gone: Vec<usize> = self
            .candidates
            .iter()
            .filter(|(_, e)| e.lease == Some(lease))
            .map(|(&n, _)| n)
            .collect();
        for n in gone {
            self.candidates.remove(&n);
            self.bump();
        }
    }

    /// The lessor's periodic checks up to `now`.
    fn expire(&mut self, now: Duration) {
        while self.next_check <= now {
            let at = self.next_check;
            let expired: Vec<u64> = self
                .leases
                .iter()
                .filter(|(_, &e)| e <= at)
                .map(|(&l, _)| l)
                .collect();
            for l in expired {
                self.revoke(l);
            }
            self.next_check += EXPIRY_CHECK;
        }
    }
}

/// A renewal on its way to the store or back.
struct Renewal {
    node: usize,
    incarnation: u64,
    lease: u64,
    sent_local: Duration,
    /// When the store processes it, then when its answer arrives (real).
    at_store: Duration,
    answer_at: Duration,
    /// The store's answer, once processed: `None` if the link dropped it.
    answer: Option<Option<bool>>,
}

/// What an election read, to act on later (the agent's reads and its
/// transaction are separate calls: others act in between).
#[derive(Clone, Debug)]
struct TakeOver {
    term: u64,
    term_revision: u64,
    candidates: Vec<(usize, u64)>,
}

/// A node's agent and lease keeper.
pub struct Agent {
    /// A restarted node is a new process: answers to the old one's calls
    /// are dropped.
    incarnation: u64,
    /// This node's clock: local = offset + real × rate / 1000.
    rate_permille: u64,
    offset: Duration,
    lease: Option<u64>,
    /// When the last renewal the store confirmed was sent (local).
    renewed: Option<Duration>,
    renewal_in_flight: Option<Duration>,
    next_renewal: Duration,
    primary_under: Option<u64>,
    /// The write gate's deadline (local).
    gate_until: Option<Duration>,
    link_up: bool,
    /// Renewals take long now (a slow etcd, a congested link).
    slow: bool,
    paused_until: Duration,
    /// The epoch this node was primary of when it stepped down in place
    /// (this process).
    stepped_down_from: Option<Epoch>,
    candidacy: Option<(u64, Candidate)>,
    election_since: Option<Duration>,
    take_over: Option<TakeOver>,
    /// The node the store names primary, as last read.
    pub following: Option<usize>,
    /// The real-time interval in which this node's gate is open now.
    window: Option<(Duration, Duration)>,
}

impl Agent {
    fn local(&self, real: Duration) -> Duration {
        self.offset + real * self.rate_permille as u32 / 1000
    }

    fn real(&self, local: Duration) -> Duration {
        local.saturating_sub(self.offset) * 1000 / self.rate_permille as u32
    }
}

/// The coordinator's whole state in a run.
pub struct Coordination {
    pub store: Store,
    pub agents: Vec<Agent>,
    renewals: Vec<Renewal>,
    ttl: Duration,
    /// Renewals are slow now and then in this run.
    slow_runs: bool,
    failover_async: bool,
    /// Closed write windows: (node, from, until), real time.
    windows: Vec<(usize, Duration, Duration)>,
    /// Acknowledged groups and the sync secondaries that held them then.
    pub holders: BTreeMap<u64, BTreeSet<usize>>,
    /// Acknowledged groups one of whose holders lost its blocks since:
    /// no longer promised.
    pub unpromised: BTreeSet<u64>,
}

/// What the coordinator model did in a run.
#[derive(Default, Debug, Clone, Copy)]
pub struct CoordStats {
    pub elections: u64,
    pub step_downs: u64,
    pub refused_writes: u64,
    pub unknown_outcomes: u64,
    pub pauses: u64,
    pub lease_losses: u64,
    /// Runs left with too few copies that vouch for their writes to elect
    /// anyone (the data loss exceeded what the quorum covers): the cluster
    /// waits for an operator, by design.
    pub stuck: u64,
}

impl std::ops::AddAssign for CoordStats {
    fn add_assign(&mut self, o: CoordStats) {
        self.elections += o.elections;
        self.step_downs += o.step_downs;
        self.refused_writes += o.refused_writes;
        self.unknown_outcomes += o.unknown_outcomes;
        self.pauses += o.pauses;
        self.lease_losses += o.lease_losses;
        self.stuck += o.stuck;
    }
}

impl Coordination {
    /// A cluster created by node 0 at time zero, every node registered.
    pub fn new(rng: &mut Rng, base: Instant, modes: &[Mode], quorum: usize) -> Coordination {
        let ttl = Duration::from_millis([1000, 2000][rng.below(2) as usize]);
        let store = Store {
            revision: 0,
            primary: None,
            term: None,
            candidates: BTreeMap::new(),
            members: modes
                .iter()
                .enumerate()
                .map(|(i, &mode)| Member {
                    node: NodeId(i as u64),
                    mode,
                })
                .collect(),
            leases: BTreeMap::new(),
            next_lease: 0,
            next_check: EXPIRY_CHECK,
        };
        let agents: Vec<Agent> = (0..modes.len())
            .map(|_| {
                let drift = rng.below(2 * CLOCK_DRIFT_PERMILLE + 1);
                Agent {
                    incarnation: 0,
                    rate_permille: 1000 - CLOCK_DRIFT_PERMILLE + drift,
                    offset: Duration::from_millis(rng.below(10_000)),
                    lease: None,
                    renewed: None,
                    renewal_in_flight: None,
                    next_renewal: Duration::ZERO,
                    primary_under: None,
                    gate_until: None,
                    link_up: true,
                    slow: false,
                    paused_until: Duration::ZERO,
                    stepped_down_from: None,
                    candidacy: None,
                    election_since: None,
                    take_over: None,
                    following: Some(0),
                    window: None,
                }
            })
            .collect();
        let record = PrimaryRec {
            node: 0,
            term: 1,
            epoch: Epoch::FIRST,
            sync_quorum: quorum,
        };
        let mut c = Coordination {
            store,
            agents,
            renewals: Vec::new(),
            ttl,
            slow_runs: rng.chance(50),
            failover_async: rng.chance(30),
            windows: Vec::new(),
            holders: BTreeMap::new(),
            unpromised: BTreeSet::new(),
        };
        for i in 0..modes.len() {
            let lease = c.store.grant(Duration::ZERO, ttl);
            let a = &mut c.agents[i];
            a.lease = Some(lease);
            a.renewed = Some(a.local(Duration::ZERO));
            a.next_renewal = a.local(Duration::ZERO) + ttl / 4;
        }
        let lease0 = c.agents[0].lease;
        let rev = c.store.bump();
        c.store.term = Some(Entry {
            value: record,
            mod_revision: rev,
            lease: None,
        });
        let rev = c.store.bump();
        c.store.primary = Some(Entry {
            value: record,
            mod_revision: rev,
            lease: lease0,
        });
        let a = &mut c.agents[0];
        a.primary_under = lease0;
        a.gate_until = a
            .renewed
            .map(|sent| election::write_deadline(base + sent, ttl) - base);
        c
    }

    pub fn describe(&self) -> String {
        format!(
            "lease {} ms, slow renewals {}, failover-async {}",
            self.ttl.as_millis(),
            self.slow_runs,
            self.failover_async
        )
    }

    /// Each agent's state, for a failure's message.
    pub fn agents_state(&self) -> String {
        let agents: Vec<String> = self
            .agents
            .iter()
            .map(|a| {
                format!(
                    "lease {:?} candidacy {:?} link {} following {:?}",
                    a.lease,
                    a.candidacy.map(|c| (c.0, c.1.lsn)),
                    a.link_up,
                    a.following
                )
            })
            .collect();
        format!(
            "{agents:?}; candidates {:?}",
            self.store.candidates.keys().collect::<Vec<_>>()
        )
    }

    /// Whether enough nodes vouch for their copies (`vouches`) to elect a
    /// primary under the election's rule: the old primary, or N − W + 1
    /// sync members.
    pub fn electable(&self, quorum: usize, vouches: impl Fn(usize) -> bool) -> bool {
        let term = self.store.term.expect("created").value;
        let last = term.node;
        let stands_alone = vouches(last) && self.agents[last].stepped_down_from == Some(term.epoch);
        let sync: Vec<usize> = self
            .store
            .members
            .iter()
            .filter(|m| m.mode == Mode::Sync && m.node.0 as usize != last)
            .map(|m| m.node.0 as usize)
            .collect();
        let w = quorum.min(sync.len());
        stands_alone || sync.iter().filter(|&&i| vouches(i)).count() > sync.len() - w
    }

    /// The node the store's `primary` key names.
    pub fn store_primary(&self) -> Option<usize> {
        self.store.primary.map(|e| e.value.node)
    }

    pub fn paused(&self, i: usize, now: Duration) -> bool {
        self.agents[i].paused_until > now
    }

    pub fn gate_open(&self, i: usize, now: Duration) -> bool {
        let a = &self.agents[i];
        a.primary_under.is_some() && a.gate_until.is_some_and(|u| a.local(now) < u)
    }
}

impl Sim {
    fn coord(&mut self) -> &mut Coordination {
        self.coordinator.as_mut().expect("a coordinated run")
    }

    /// Node 0 created the cluster: its gate is open from the start.
    pub(crate) fn open_gate_at_start(&mut self) {
        self.extend_window(0);
    }

    /// Node `i`'s agent as a new process (after a restart).
    pub(crate) fn agent_restarted(&mut self, i: usize) {
        self.close_window(i);
        let a = &mut self.coord().agents[i];
        a.incarnation += 1;
        a.stepped_down_from = None;
        a.lease = None;
        a.renewed = None;
        a.renewal_in_flight = None;
        a.primary_under = None;
        a.gate_until = None;
        a.candidacy = None;
        a.election_since = None;
        a.take_over = None;
        a.following = None;
    }

    /// Closes node `i`'s write gate (it steps down or stops).
    pub(crate) fn close_gate(&mut self, i: usize) {
        self.close_window(i);
        let a = &mut self.coord().agents[i];
        a.primary_under = None;
        a.gate_until = None;
    }

    fn close_window(&mut self, i: usize) {
        let now = self.now;
        let c = self.coord();
        if let Some((from, until)) = c.agents[i].window.take() {
            c.windows.push((i, from, until.min(now)));
        }
    }

    /// Opens or extends node `i`'s write window up to its gate's deadline,
    /// and checks it against every other node's.
    fn extend_window(&mut self, i: usize) {
        let now = self.now;
        let c = self.coordinator.as_mut().expect("coordinated");
        let a = &c.agents[i];
        let Some(until_local) = a.gate_until.filter(|_| a.primary_under.is_some()) else {
            return;
        };
        let until = a.real(until_local);
        if until <= now {
            return;
        }
        let a = &mut c.agents[i];
        match &mut a.window {
            Some((_, u)) if *u >= now => *u = (*u).max(until),
            other => {
                if let Some((from, u)) = other.take() {
                    c.windows.push((i, from, u));
                }
                c.agents[i].window = Some((now, until));
            }
        }
        let (from, until) = c.agents[i].window.expect("just set");
        let others = c
            .windows
            .iter()
            .copied()
            .chain(
                c.agents
                    .iter()
                    .enumerate()
                    .filter_map(|(j, a)| a.window.map(|(f, u)| (j, f, u))),
            )
            .filter(|&(j, _, _)| j != i)
            .find(|&(_, f, u)| f < until && from < u);
        if let Some((j, f, u)) = others {
            self.fail(&format!(
                "two writers: node {i} may take writes from {from:?} to {until:?}, node {j} from {f:?} to {u:?}"
            ));
        }
    }

    /// Whether node `p` may take (and acknowledge) a write now.
    pub(crate) fn may_write(&mut self, p: usize) -> bool {
        let now = self.now;
        let open = self.coord().gate_open(p, now) && !self.coord().paused(p, now);
        if !open {
            self.coord_stats.refused_writes += 1;
        }
        open
    }

    /// Notes an acknowledgement's holders; false if the gate closed before
    /// it (the client hears "outcome unknown").
    pub(crate) fn acknowledge(&mut self, p: usize, group: u64) -> bool {
        let now = self.now;
        if !self.coord().gate_open(p, now) {
            self.coord_stats.unknown_outcomes += 1;
            self.note(format!(
                "node {p}: group {group} replicated after its gate closed: outcome unknown"
            ));
            return false;
        }
        let holders: BTreeSet<usize> = (0..NODES)
            .filter(|&i| i != p && self.nodes[i].mode == Mode::Sync)
            .filter(|&i| matches!(self.nodes[i].state, State::Secondary { .. }))
            .filter(|&i| self.applied(i, group))
            .collect();
        self.coord().holders.insert(group, holders);
        true
    }

    /// Node `i` lost its blocks: a write whose every holder at its
    /// acknowledgement has lost them is no longer promised. (One holder
    /// left is enough: the others, blank, do not stand until they are level
    /// with a primary that holds it.)
    pub(crate) fn blocks_lost(&mut self, i: usize) {
        let c = self.coord();
        for (g, holders) in c.holders.iter_mut() {
            if holders.remove(&i) && holders.is_empty() {
                c.unpromised.insert(*g);
            }
        }
    }

    /// Faults on the coordinator: a cut link, slow renewals, a pause.
    pub(crate) fn coordinator_fault(&mut self) {
        let i = self.rng.below(NODES as u64) as usize;
        let roll = self.rng.below(100);
        let now = self.now;
        let ttl = self.coord().ttl;
        match roll {
            0..=39 => {
                let a = &mut self.coord().agents[i];
                a.link_up = !a.link_up;
                let up = a.link_up;
                self.note(format!(
                    "node {i}: link to the coordinator {}",
                    if up { "restored" } else { "cut" }
                ));
            }
            40..=69 => {
                if self.coord().slow_runs {
                    let a = &mut self.coord().agents[i];
                    a.slow = !a.slow;
                    let slow = a.slow;
                    self.note(format!(
                        "node {i}: renewals {}",
                        if slow { "slow" } else { "fast again" }
                    ));
                }
            }
            _ => {
                let pause = Duration::from_millis(200 + self.rng.below(2800));
                if !self.coord().paused(i, now) {
                    self.coord().agents[i].paused_until = now + pause;
                    self.coord_stats.pauses += 1;
                    self.note(format!(
                        "node {i} paused (SIGSTOP) for {pause:?} (lease {ttl:?})"
                    ));
                }
            }
        }
    }

    /// Heals every coordinator fault.
    pub(crate) fn coordinator_heal(&mut self) {
        let now = self.now;
        for a in &mut self.coord().agents {
            a.link_up = true;
            a.slow = false;
            a.paused_until = a.paused_until.min(now);
        }
    }

    /// The store's side up to now: renewals processed and answered in time
    /// order, expired leases revoked at the lessor's checks.
    pub(crate) fn coordinator_run(&mut self) {
        let now = self.now;
        loop {
            let c = self.coord();
            // The next event: a renewal reaching the store, or a check.
            let next_renewal = c
                .renewals
                .iter()
                .enumerate()
                .filter(|(_, r)| r.answer.is_none() && r.at_store <= now)
                .min_by_key(|(_, r)| r.at_store)
                .map(|(k, r)| (k, r.at_store));
            let check = c.store.next_check;
            match next_renewal {
                Some((k, at)) if at < check || check > now => {
                    let c = self.coord();
                    c.store.expire(at);
                    let (node, lease) = (c.renewals[k].node, c.renewals[k].lease);
                    let answer = match c.agents[node].link_up {
                        true => Some(c.store.renew(at, lease, c.ttl)),
                        false => None,
                    };
                    c.renewals[k].answer = Some(answer);
                }
                _ if check <= now => self.coord().store.expire(check),
                _ => break,
            }
        }
        // Answers that arrived.
        let arrived: Vec<Renewal> = {
            let c = self.coord();
            let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut c.renewals)
                .into_iter()
                .partition(|r| r.answer.is_some() && r.answer_at <= now);
            c.renewals = rest;
            done
        };
        for r in arrived {
            self.renewal_answered(r);
        }
    }

    fn renewal_answered(&mut self, r: Renewal) {
        let i = r.node;
        let now = self.now;
        let ttl = self.coord().ttl;
        let base = self.base;
        let a = &mut self.coord().agents[i];
        if a.incarnation != r.incarnation || a.lease != Some(r.lease) {
            return;
        }
        if a.renewal_in_flight == Some(r.sent_local) {
            a.renewal_in_flight = None;
        }
        match r.answer.flatten() {
            // Lost on a cut link: the keeper's call timed out; retry.
            None => {
                a.next_renewal = a.local(now) + RETRY_AFTER;
            }
            Some(true) => {
                a.renewed = Some(a.renewed.map_or(r.sent_local, |s| s.max(r.sent_local)));
                if a.primary_under == Some(r.lease) {
                    let deadline = election::write_deadline(base + r.sent_local, ttl) - base;
                    a.gate_until = Some(a.gate_until.map_or(deadline, |u| u.max(deadline)));
                    self.extend_window(i);
                }
            }
            Some(false) => {
                // The lease is gone: nothing this node held in the store
                // is there any more.
                self.coord_stats.lease_losses += 1;
                self.note(format!("node {i}: its coordinator lease expired"));
                self.close_gate(i);
                let a = &mut self.coord().agents[i];
                a.lease = None;
                a.renewed = None;
                a.candidacy = None;
            }
        }
    }

    /// The lease keeper's turn on node `i`: grant or renew.
    fn keeper_tick(&mut self, i: usize) {
        let now = self.now;
        let ttl = self.coord().ttl;
        let slow = self.coord().slow_runs && self.coord().agents[i].slow;
        let one_way = |rng: &mut Rng| {
            if slow {
                Duration::from_millis(rng.below(ttl.as_millis() as u64 * 3 / 2))
            } else {
                Duration::from_micros(500 + rng.below(4_500))
            }
        };
        let (to_store, back) = (one_way(&mut self.rng), one_way(&mut self.rng));
        let c = self.coord();
        let a = &mut c.agents[i];
        let local = a.local(now);
        // A call not answered within half the TTL is given up on (its
        // request may still reach the store).
        if a.renewal_in_flight.is_some_and(|s| local >= s + ttl / 2) {
            a.renewal_in_flight = None;
        }
        if a.renewal_in_flight.is_some() || local < a.next_renewal {
            return;
        }
        match a.lease {
            None => {
                if a.link_up {
                    let lease = c.store.grant(now, ttl);
                    let a = &mut c.agents[i];
                    a.lease = Some(lease);
                    a.renewed = Some(local);
                    a.next_renewal = local + ttl / 4;
                }
            }
            Some(lease) => {
                a.renewal_in_flight = Some(local);
                a.next_renewal = local + ttl / 4;
                let r = Renewal {
                    node: i,
                    incarnation: a.incarnation,
                    lease,
                    sent_local: local,
                    at_store: now + to_store,
                    answer_at: now + to_store + back,
                    answer: None,
                };
                c.renewals.push(r);
            }
        }
    }

    /// The agent's turn on node `i` (what `hotblock-node`'s agent does each
    /// tick).
    pub(crate) fn agent_tick(&mut self, i: usize) {
        let now = self.now;
        if matches!(self.nodes[i].state, State::Down { .. }) || self.coord().paused(i, now) {
            return;
        }
        self.keeper_tick(i);
        if !self.coord().agents[i].link_up {
            return;
        }
        let (primary, term) = {
            let s = &self.coord().store;
            (s.primary, s.term.expect("created at the start"))
        };
        let lease = self.coord().agents[i].lease;
        if let Some(p) = primary {
            self.coord().agents[i].following = Some(p.value.node);
        }
        match &self.nodes[i].state {
            State::Down { .. } => {}
            State::Primary(_) => match primary {
                Some(p) if p.value.node == i && p.lease == lease && lease.is_some() => {}
                _ => {
                    // Another holds the key, or ours lapsed with our lease.
                    self.coord_stats.step_downs += 1;
                    self.note(format!(
                        "node {i}: no longer holds the primary key: steps down in place"
                    ));
                    self.close_gate(i);
                    let was = match &self.nodes[i].state {
                        State::Primary(p) => Some(p.epoch()),
                        _ => None,
                    };
                    self.coord().agents[i].stepped_down_from = was;
                    self.demote_now(i);
                }
            },
            State::Secondary { .. } => match primary {
                Some(p) if p.value.node != i => {
                    let c = self.coord();
                    c.agents[i].election_since = None;
                    c.agents[i].take_over = None;
                    if c.agents[i].candidacy.take().is_some()
                        && c.store.candidates.remove(&i).is_some()
                    {
                        c.store.bump();
                    }
                    // Re-point: a connection to anyone else goes.
                    let conn = match &self.nodes[i].state {
                        State::Secondary { conn: Some(id), .. } => Some(*id),
                        _ => None,
                    };
                    if let Some(id) = conn {
                        if self
                            .conns
                            .get(&id)
                            .is_some_and(|c| c.primary != p.value.node)
                        {
                            self.close_conn(id, "re-pointing to the cluster's primary");
                        }
                    }
                }
                // A previous life's key: it goes with its lease.
                Some(_) => {}
                None => self.elect(i, term),
            },
        }
    }

    /// One step of an election on node `i`.
    fn elect(&mut self, i: usize, term: Entry<PrimaryRec>) {
        let now = self.now;
        let mode = self.nodes[i].mode;
        let failover_async = self.coord().failover_async;
        let a = &mut self.coord().agents[i];
        let local = a.local(now);
        let since = *a.election_since.get_or_insert(local);
        if mode == Mode::Async && !failover_async {
            return;
        }
        let Some(lease) = a.lease else {
            return;
        };
        // A transaction decided on at an earlier tick.
        if let Some(t) = a.take_over.take() {
            if t.term == term.value.term {
                self.take_over(i, lease, t);
                return;
            }
        }
        let State::Secondary { sec, .. } = &self.nodes[i].state else {
            return;
        };
        // A copy started from nothing stands once it has been level with
        // a primary (`Secondary::vouches`).
        if !sec.vouches() {
            let c = self.coord();
            if c.agents[i].candidacy.take().is_some() && c.store.candidates.remove(&i).is_some() {
                c.store.bump();
            }
            return;
        }
        let (last_epoch, lsn) = sec.log_position();
        let mine = Candidate {
            node: NodeId(i as u64),
            mode,
            last_epoch,
            lsn: lsn.0,
            epoch_seen: sec.epoch(),
            stepped_down: self.coordinator.as_ref().expect("coordinated").agents[i]
                .stepped_down_from
                == Some(term.value.epoch),
        };
        let c = self.coord();
        if c.agents[i].candidacy != Some((term.value.term, mine)) {
            if !c.store.exists(lease) {
                return;
            }
            let rev = c.store.bump();
            c.store.candidates.insert(
                i,
                Entry {
                    value: (term.value.term, mine),
                    mod_revision: rev,
                    lease: Some(lease),
                },
            );
            c.agents[i].candidacy = Some((term.value.term, mine));
            self.note(format!(
                "node {i}: stands in the election after term {} at {last_epoch} / {lsn:?}",
                term.value.term
            ));
            // Decides at a later tick, on what is there then.
            return;
        }
        let members = c.store.members.clone();
        // Records of an older term are stale: the agent reads past them.
        let standing: Vec<(usize, Entry<(u64, Candidate)>)> = c
            .store
            .candidates
            .iter()
            .filter(|(_, e)| e.value.0 == term.value.term)
            .map(|(&n, e)| (n, *e))
            .collect();
        let candidates: Vec<Candidate> = standing.iter().map(|(_, e)| e.value.1).collect();
        let settled = local.saturating_sub(since) >= SETTLE;
        match election::decide(&members, &candidates, &term.value.last(), settled) {
            Decision::Best(best) if best == NodeId(i as u64) => {
                c.agents[i].take_over = Some(TakeOver {
                    term: term.value.term,
                    term_revision: term.mod_revision,
                    candidates: standing.iter().map(|(n, e)| (*n, e.mod_revision)).collect(),
                });
            }
            _ => {}
        }
    }

    /// The election's transaction, on what node `i` read before: then the
    /// promotion.
    fn take_over(&mut self, i: usize, lease: u64, t: TakeOver) {
        let quorum = self.quorum;
        let State::Secondary { sec, .. } = &self.nodes[i].state else {
            return;
        };
        if !sec.is_consistent() {
            return;
        }
        let seen = sec.epoch();
        let c = self.coord();
        let s = &c.store;
        // The agent's transaction: no primary, the term and every
        // candidate it read as it read them (a candidate that stood since
        // is not compared: the decision already included N - W + 1).
        let unchanged = s.primary.is_none()
            && s.term.is_some_and(|e| e.mod_revision == t.term_revision)
            && t.candidates
                .iter()
                .all(|(n, rev)| s.candidates.get(n).is_some_and(|e| e.mod_revision == *rev))
            && s.exists(lease);
        if !unchanged {
            return;
        }
        let standing: Vec<Candidate> = t
            .candidates
            .iter()
            .map(|(n, _)| s.candidates[n].value.1)
            .collect();
        let last = s.term.expect("created").value.last();
        let Some(new_term) = election::next_term(&last, &standing, seen) else {
            self.fail("the term ran out");
        };
        let epoch = election::epoch_for(new_term, NodeId(i as u64));
        let record = PrimaryRec {
            node: i,
            term: new_term,
            epoch,
            sync_quorum: quorum,
        };
        let c = self.coord();
        let rev = c.store.bump();
        c.store.term = Some(Entry {
            value: record,
            mod_revision: rev,
            lease: None,
        });
        c.store.primary = Some(Entry {
            value: record,
            mod_revision: rev,
            lease: Some(lease),
        });
        c.store.candidates.remove(&i);
        c.agents[i].candidacy = None;
        c.agents[i].election_since = None;
        c.agents[i].following = Some(i);
        self.coord_stats.elections += 1;
        self.note(format!(
            "node {i}: won the election: term {new_term}, epoch {epoch}"
        ));
        self.promote_elected(i, epoch);
    }

    /// Promotes node `i` to exactly `epoch`, opens its gate, and checks
    /// that it holds every acknowledged write still promised.
    fn promote_elected(&mut self, i: usize, epoch: Epoch) {
        let got = self.promote_node(i, election::epoch_before_term(epoch.term()));
        if got != epoch {
            // The agent gives its lease up and exits.
            self.note(format!(
                "node {i}: promoted to {got}, not {epoch}: gives up"
            ));
            let lease = self.coord().agents[i].lease;
            if let Some(l) = lease {
                self.coord().store.revoke(l);
            }
            self.crash(i);
            return;
        }
        let base = self.base;
        let c = self.coord();
        let ttl = c.ttl;
        let a = &mut c.agents[i];
        a.primary_under = a.lease;
        if let Some(sent) = a.renewed {
            a.gate_until = Some(election::write_deadline(base + sent, ttl) - base);
        }
        self.extend_window(i);
        let promised: Vec<u64> = self
            .acked
            .iter()
            .copied()
            .filter(|g| {
                !self
                    .coordinator
                    .as_ref()
                    .expect("coordinated")
                    .unpromised
                    .contains(g)
            })
            .collect();
        for g in promised {
            if !self.holds(i, g) {
                self.fail(&format!(
                    "acknowledged group {g} (held by {:?} then) lost by electing node {i}",
                    self.coordinator
                        .as_ref()
                        .expect("coordinated")
                        .holders
                        .get(&g)
                ));
            }
        }
        self.forget_acked_not_on(i, "with every holder's blocks");
    }
}
