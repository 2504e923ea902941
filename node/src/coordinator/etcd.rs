//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/...`).
//!
//! **Why the gateway, not gRPC.** The gRPC clients for Rust generate their
//! code at build time with `protoc`, which a fresh machine with only a Rust
//! toolchain does not have. The gateway is part of every etcd v3 server
//! (3.4 and later serve it at `/v3/`), speaks plain HTTP/1.1 with JSON
//! bodies (keys and values in base64, 64-bit integers as strings), and
//! carries the same requests: leases, ranges, puts, deletes and
//! transactions (compare-and-swap). `ureq` does the HTTP.
//!
//! **Blocking.** Every call blocks its thread for at most the timeout given
//! to [`Etcd::new`]: call it from a thread of the coordinator's own, never
//! from an async worker.
//!
//! **Several endpoints.** A call tries the endpoint that last answered,
//! then the others in turn, all within one timeout (each endpoint left
//! gets an equal share of the time left): an endpoint that
//! cannot be reached, or answers "unavailable" (a member cut off from the
//! majority), gives way to the next. A write that may have reached an
//! endpoint is not sent again elsewhere: its outcome is unknown
//! ([`EtcdError::OutcomeUnknown`]) and the caller reads the key back. An
//! etcd error (a lease not found) is an answer, not a reason to try
//! another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Bytes of an etcd reply read at most: our values are small (an address
/// and an epoch); a prefix read over a cluster's members stays far below.
pub const REPLY_BYTES_MAX: u64 = 4 << 20;

/// `--coordinator etcd://HOST:PORT[,HOST:PORT...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorUrl {
    /// `http://HOST:PORT`, one per etcd member given.
    pub endpoints: Vec<String>,
}

/// Why a `--coordinator` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorUrlError {
    #[error("'{0}': a coordinator is etcd://HOST:PORT[,HOST:PORT...]")]
    NotEtcd(String),
    #[error("'{member}' in '{url}': each etcd member is HOST:PORT")]
    BadMember { url: String, member: String },
}

impl std::str::FromStr for CoordinatorUrl {
    type Err = CoordinatorUrlError;

    fn from_str(s: &str) -> Result<Self, CoordinatorUrlError> {
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| CoordinatorUrlError::NotEtcd(s.to_string()))?;
        let mut endpoints = Vec::new();
        for member in rest.split(',') {
            let member = member.trim().trim_end_matches('/');
            let ok = member
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(CoordinatorUrlError::BadMember {
                    url: s.to_string(),
                    member: member.to_string(),
                });
            }
            endpoints.push(format!("http://{member}"));
        }
        Ok(CoordinatorUrl { endpoints })
    }
}

impl std::fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}", members.join(","))
    }
}

/// An etcd lease's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// One key as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key (its age: lower is older).
    pub create_revision: i64,
    /// The revision of its last change (what a compare-and-swap names).
    pub mod_revision: i64,
    /// The lease it lives under, if any.
    pub lease: Option<LeaseId>,
}

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No endpoint answered within the timeout.
    #[error("etcd unreachable ({endpoints}): {last}")]
    Unreachable { endpoints: String, last: String },
    /// A write may or may not have been applied: it was sent and no answer
    /// came (a timeout), or the member said it could not finish it. Read
    /// the key back to learn the outcome.
    #[error("outcome of {path} unknown: {why}")]
    OutcomeUnknown { path: &'static str, why: String },
    /// etcd answered with an error (`code` is its gRPC status code).
    #[error("etcd refused {path}: {message} (code {code})")]
    Refused {
        path: &'static str,
        code: i64,
        message: String,
    },
    /// An answer that does not parse as etcd's.
    #[error("etcd's answer to {path} does not parse: {why}")]
    BadReply { path: &'static str, why: String },
}

/// A handle on an etcd cluster; cheap to share across threads.
#[derive(Debug)]
pub struct Etcd {
    url: CoordinatorUrl,
    agent: ureq::Agent,
    /// The most one call takes, across every endpoint it tries.
    timeout: Duration,
    /// The endpoint that answered last: tried first.
    current: AtomicUsize,
}

impl Etcd {
    /// A client whose every call gives up after `timeout`, however many
    /// endpoints it tries.
    pub fn new(url: CoordinatorUrl, timeout: Duration) -> Etcd {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Etcd {
            url,
            agent,
            timeout,
            current: AtomicUsize::new(0),
        }
    }

    pub fn url(&self) -> &CoordinatorUrl {
        &self.url
    }

    /// A lease that expires `ttl` after its last renewal (etcd rounds up to
    /// whole seconds, and may grant more than asked; the answer says).
    /// Returns the lease and the TTL granted, in seconds.
    pub fn grant(&self, ttl: Duration) -> Result<(LeaseId, i64), EtcdError> {
        let ttl_s = ttl.as_millis().div_ceil(1000).max(1) as i64;
        // An extra lease from a retried grant is harmless: it expires.
        let r: LeaseReply = self.call("/v3/lease/grant", json!({ "TTL": ttl_s }), Retry::Safe)?;
        let id = r.id.ok_or_else(|| bad("/v3/lease/grant", "no ID"))?;
        Ok((LeaseId(id.0), r.ttl.map_or(ttl_s, |t| t.0)))
    }

    /// Renews `lease`. Returns its TTL in seconds, or 0 if it has expired
    /// (or was revoked): then every key under it is gone.
    pub fn keep_alive(&self, lease: LeaseId) -> Result<i64, EtcdError> {
        let r: StreamReply<LeaseReply> = self.call(
            "/v3/lease/keepalive",
            json!({ "ID": lease.0.to_string() }),
            Retry::Safe,
        )?;
        // An expired lease's answer has its ID but no TTL.
        let result = r
            .result
            .ok_or_else(|| bad("/v3/lease/keepalive", "no result"))?;
        Ok(result.ttl.map_or(0, |t| t.0))
    }

    /// Ends `lease` now, deleting its keys.
    pub fn revoke(&self, lease: LeaseId) -> Result<(), EtcdError> {
        let body = json!({ "ID": lease.0.to_string() });
        match self.call::<Value>("/v3/lease/revoke", body, Retry::Safe) {
            // Revoking a lease that expired already is done.
            Err(EtcdError::Refused { code: 5, .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The key, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        let r: RangeReply = self.call(
            "/v3/kv/range",
            json!({ "key": B64.encode(key) }),
            Retry::Safe,
        )?;
        Ok(r.kvs.into_iter().next().map(KeyValue::from))
    }

    /// Every key starting with `prefix`, in key order (every key for an
    /// empty prefix: etcd's range from `\0` to `\0`).
    pub fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, EtcdError> {
        let start = if prefix.is_empty() {
            &[0u8][..]
        } else {
            prefix
        };
        let r: RangeReply = self.call(
            "/v3/kv/range",
            json!({ "key": B64.encode(start), "range_end": B64.encode(prefix_end(prefix)) }),
            Retry::Safe,
        )?;
        Ok(r.kvs.into_iter().map(KeyValue::from).collect())
    }

    /// Sets `key` (under `lease`, if given). Returns the new revision.
    pub fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<i64, EtcdError> {
        let r: HeaderReply = self.call("/v3/kv/put", put_body(key, value, lease), Retry::Once)?;
        Ok(r.header.map_or(0, |h| h.revision.0))
    }

    /// Creates `key` only if it does not exist (compare-and-swap on its
    /// create revision). Returns whether it was created.
    pub fn create(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<bool, EtcdError> {
        self.txn(&[Compare::Absent(key)], &[Put { key, value, lease }])
    }

    /// Replaces `key` only if its last change is still `mod_revision`
    /// (compare-and-swap). Returns whether it was replaced.
    pub fn replace(
        &self,
        key: &[u8],
        mod_revision: i64,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<bool, EtcdError> {
        self.txn(
            &[Compare::ModRevision(key, mod_revision)],
            &[Put { key, value, lease }],
        )
    }

    /// Makes every put of `puts` if every compare of `compares` holds, all
    /// at one revision (etcd's transaction). Returns whether they held.
    pub fn txn(&self, compares: &[Compare<'_>], puts: &[Put<'_>]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares.iter().map(|c| c.to_json()).collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|p| json!({ "request_put": put_body(p.key, p.value, p.lease) }))
            .collect();
        let body = json!({ "compare": compare, "success": success });
        let r: TxnReply = self.call("/v3/kv/txn", body, Retry::Once)?;
        Ok(r.succeeded)
    }

    /// Watches every key starting with `prefix` and calls `changed` once
    /// per batch of events, until the stream breaks (the error says why).
    /// One endpoint, no timeout: a watch is an accelerator on top of
    /// polling, and a stream that goes silent only means no news.
    pub fn watch_prefix(&self, prefix: &[u8], mut changed: impl FnMut()) -> Result<(), EtcdError> {
        use std::io::BufRead;
        let path = "/v3/watch";
        let endpoint = &self.url.endpoints
            [self.current.load(Ordering::Relaxed) % self.url.endpoints.len().max(1)];
        let body = json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
        }});
        let response = self
            .agent
            .post(format!("{endpoint}{path}"))
            .config()
            .timeout_global(None)
            .build()
            .send_json(&body)
            .map_err(|e| EtcdError::Unreachable {
                endpoints: endpoint.clone(),
                last: e.to_string(),
            })?;
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| bad(path, &e.to_string()))?;
            let reply: Value =
                serde_json::from_str(&line).map_err(|e| bad(path, &e.to_string()))?;
            if let Some((code, message)) = etcd_error(&reply, 200) {
                return Err(EtcdError::Refused {
                    path,
                    code,
                    message,
                });
            }
            // The first answer only confirms the watch; events follow.
            if reply["result"].get("events").is_some() {
                changed();
            }
        }
        Err(bad(path, "the watch stream ended"))
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool, EtcdError> {
        let body = json!({ "key": B64.encode(key) });
        let r: DeleteReply = self.call("/v3/kv/deleterange", body, Retry::Once)?;
        Ok(r.deleted.is_some_and(|d| d.0 > 0))
    }

    /// POSTs `body` to `path` on the endpoints in turn until one answers,
    /// all within the client's timeout. A call that may have reached etcd
    /// is tried on another endpoint only if it is `Retry::Safe` (a read, a
    /// renewal): a write that timed out may have been applied, and trying
    /// it again elsewhere could report a compare it had won as lost.
    fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: Value,
        retry: Retry,
    ) -> Result<T, EtcdError> {
        let count = self.url.endpoints.len().max(1);
        let first = self.current.load(Ordering::Relaxed) % count;
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("no endpoint");
        for i in 0..self.url.endpoints.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("{last}; out of time");
                break;
            }
            // Each endpoint left gets an equal share of the time left, so
            // a silent one cannot take all of it from a live one behind.
            let share = left / (count - i) as u32;
            let at = (first + i) % count;
            let endpoint = &self.url.endpoints[at];
            let sent = self
                .agent
                .post(format!("{endpoint}{path}"))
                .config()
                .timeout_global(Some(share))
                .build()
                .send_json(&body);
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    if never_sent(&e) || retry == Retry::Safe {
                        continue;
                    }
                    return Err(EtcdError::OutcomeUnknown { path, why: last });
                }
            };
            let status = response.status().as_u16();
            let reply: Value = match response
                .body_mut()
                .with_config()
                .limit(REPLY_BYTES_MAX)
                .read_json()
            {
                Ok(reply) => reply,
                Err(e) if retry == Retry::Safe => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
                Err(e) => return Err(bad(path, &e.to_string())),
            };
            if let Some((code, message)) = etcd_error(&reply, status) {
                // A member cut off from the majority, or one busy electing
                // a leader, answers "unavailable": another may not be.
                if status >= 500 || code == GRPC_UNAVAILABLE || code == GRPC_DEADLINE_EXCEEDED {
                    last = format!("{endpoint}: {message} (code {code})");
                    if retry == Retry::Safe {
                        continue;
                    }
                    return Err(EtcdError::OutcomeUnknown { path, why: last });
                }
                return Err(EtcdError::Refused {
                    path,
                    code,
                    message,
                });
            }
            let parsed = serde_json::from_value(reply).map_err(|e| bad(path, &e.to_string()))?;
            self.current.store(at, Ordering::Relaxed);
            return Ok(parsed);
        }
        Err(EtcdError::Unreachable {
            endpoints: self.url.to_string(),
            last,
        })
    }
}

/// One condition of a transaction ([`Etcd::txn`]).
#[derive(Clone, Copy, Debug)]
pub enum Compare<'a> {
    /// The key does not exist.
    Absent(&'a [u8]),
    /// The key's last change is at this revision (0: it does not exist).
    ModRevision(&'a [u8], i64),
}

impl Compare<'_> {
    fn to_json(self) -> Value {
        match self {
            Compare::Absent(key) => json!({
                "key": B64.encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
            }),
            Compare::ModRevision(key, rev) => json!({
                "key": B64.encode(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()
            }),
        }
    }
}

/// One write of a transaction ([`Etcd::txn`]).
#[derive(Clone, Copy, Debug)]
pub struct Put<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub lease: Option<LeaseId>,
}

/// Whether a call may be tried again on another endpoint after it may have
/// reached one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// A read or a renewal: doing it twice changes nothing.
    Safe,
    /// A write: once sent, its outcome is the first endpoint's.
    Once,
}

/// etcd's gRPC status codes that mean "not now, maybe elsewhere".
const GRPC_DEADLINE_EXCEEDED: i64 = 4;
const GRPC_UNAVAILABLE: i64 = 14;

/// Whether the request surely never reached the endpoint.
fn never_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// The error in an etcd reply, in either of the gateway's shapes: a unary
/// call's `{"error": "...", "code": N, "message": "..."}`, or a stream's
/// `{"error": {"grpc_code": N, "message": "..."}}` (HTTP 200). An empty
/// `error` string is no error.
fn etcd_error(reply: &Value, status: u16) -> Option<(i64, String)> {
    let error = reply.get("error");
    let failed = match error {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(_)) => true,
        _ => false,
    } || status != 200;
    if !failed {
        return None;
    }
    let inner = error.filter(|e| e.is_object()).unwrap_or(reply);
    let code = ["code", "grpc_code"]
        .iter()
        .find_map(|k| inner.get(*k).and_then(Value::as_i64))
        .unwrap_or(-1);
    let message = inner
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.and_then(Value::as_str))
        .unwrap_or("no message")
        .to_string();
    Some((code, format!("{message} (HTTP {status})")))
}

fn bad(path: &'static str, why: &str) -> EtcdError {
    EtcdError::BadReply {
        path,
        why: why.to_string(),
    }
}

fn put_body(key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Value {
    let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    if let Some(lease) = lease {
        body["lease"] = json!(lease.0.to_string());
    }
    body
}

/// The end of the range of keys that start with `prefix` (etcd's rule:
/// the prefix with its last byte below 0xff incremented; all keys if none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit integer as the gateway writes it: a JSON string (or a number).
#[derive(Clone, Copy, Debug)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map(Int).map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_i64()
                .map(Int)
                .ok_or_else(|| serde::de::Error::custom("not a 64-bit integer")),
            _ => Err(serde::de::Error::custom("not an integer")),
        }
    }
}

/// Bytes as the gateway writes them: base64.
#[derive(Clone, Debug, Default)]
struct B64Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for B64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s)
            .map(B64Bytes)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default = "zero")]
    revision: Int,
}

fn zero() -> Int {
    Int(0)
}

#[derive(Deserialize)]
struct HeaderReply {
    header: Option<Header>,
}

#[derive(Deserialize)]
struct LeaseReply {
    #[serde(rename = "ID")]
    id: Option<Int>,
    #[serde(rename = "TTL")]
    ttl: Option<Int>,
}

#[derive(Deserialize)]
struct StreamReply<T> {
    result: Option<T>,
}

#[derive(Deserialize)]
struct RangeReply {
    #[serde(default)]
    kvs: Vec<RawKeyValue>,
}

#[derive(Deserialize)]
struct RawKeyValue {
    key: B64Bytes,
    #[serde(default)]
    value: B64Bytes,
    create_revision: Option<Int>,
    mod_revision: Option<Int>,
    lease: Option<Int>,
}

impl From<RawKeyValue> for KeyValue {
    fn from(kv: RawKeyValue) -> Self {
        KeyValue {
            key: kv.key.0,
            value: kv.value.0,
            create_revision: kv.create_revision.map_or(0, |r| r.0),
            mod_revision: kv.mod_revision.map_or(0, |r| r.0),
            lease: kv.lease.filter(|l| l.0 != 0).map(|l| LeaseId(l.0)),
        }
    }
}

#[derive(Deserialize)]
struct TxnReply {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct DeleteReply {
    deleted: Option<Int>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_urls_parse_and_refuse_what_is_not_etcd() {
        let url: CoordinatorUrl = "etcd://127.0.0.1:2379,etcd2:2379".parse().unwrap();
        assert_eq!(
            url.endpoints,
            ["http://127.0.0.1:2379", "http://etcd2:2379"]
        );
        assert_eq!(url.to_string(), "etcd://127.0.0.1:2379,etcd2:2379");
        for bad in [
            "127.0.0.1:2379",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "zk://h:1",
        ] {
            assert!(bad.parse::<CoordinatorUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_read_in_both_of_the_gateways_shapes() {
        let unary = json!({"error": "etcdserver: requested lease not found", "code": 5, "message": "etcdserver: requested lease not found"});
        assert_eq!(etcd_error(&unary, 404).unwrap().0, 5);
        let stream =
            json!({"error": {"grpc_code": 14, "http_code": 503, "message": "unavailable"}});
        let (code, message) = etcd_error(&stream, 200).unwrap();
        assert_eq!(code, 14);
        assert!(message.contains("unavailable"), "{message}");
        // An empty error field (defaults emitted) is no error.
        assert!(etcd_error(&json!({"error": "", "ID": "1"}), 200).is_none());
        assert!(etcd_error(&json!({"header": {}}), 200).is_none());
        // A non-200 status without a body of etcd's is still an error.
        assert_eq!(etcd_error(&json!({}), 502).unwrap().0, -1);
    }

    #[test]
    fn prefix_ends_follow_etcds_rule() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
