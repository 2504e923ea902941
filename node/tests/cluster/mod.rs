//! Real `hotblock-node` and `hotblock-secondary` processes on loopback,
//! driven through the `redis` crate, for the end-to-end tests.

#![allow(dead_code)]

pub mod etcd;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "e2e-secret";

/// A free loopback port (bound, then released: another process could take
/// it in between). Nodes here listen on port 0 instead and report theirs.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of one of the workspace's binaries. `cargo test --workspace`
/// builds them, and so does a run of this crate's tests; a test binary run
/// on its own does not, so they are built here when missing or older than
/// the sources.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
        let stale = match modified(&path) {
            None => true,
            Some(bin) => newest_source().is_some_and(|src| src > bin),
        };
        if stale {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "hotblock-node", "--bin", name]);
            // The profile of this test binary's own directory.
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building {name}");
        }
        built.push(name.to_string());
    }
    path
}

/// The newest modification time of the sources the binaries are built from.
fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(t));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut newest = None;
    for krate in [
        "core",
        "persist",
        "nic-transport",
        "primary",
        "secondary",
        "node",
    ] {
        walk(&root.join(krate).join("src"), &mut newest);
    }
    newest
}

/// A running node; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub port: u16,
    pub repl_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Proc {
    pub fn node(dir: &Path, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--repl-listen".into(),
            "127.0.0.1:0".into(),
            "--repl-secret".into(),
            SECRET.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("hotblock-node", args, dir)
    }

    /// A secondary of the node whose replication port is `primary`; it
    /// relays (and, once promoted, serves secondaries) on a port of its own.
    pub fn secondary(dir: &Path, primary: u16, extra: &[&str]) -> Proc {
        Self::spawn("hotblock-secondary", secondary_args(primary, extra), dir)
    }

    /// A secondary of a cluster with a coordinator: etcd says whom it
    /// follows (no `--primary`).
    pub fn member(dir: &Path, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--repl-listen".into(),
            "127.0.0.1:0".into(),
            "--repl-secret".into(),
            SECRET.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("hotblock-secondary", args, dir)
    }

    /// A secondary started with fault injection on (`DEBUG FLIPBYTE`).
    pub fn secondary_with_faults(dir: &Path, primary: u16, extra: &[&str]) -> Proc {
        let args = secondary_args(primary, extra);
        let mut p = Proc::unstarted("hotblock-secondary", args, dir);
        p.env.push(("HOTBLOCK_FAULT_INJECTION".into(), "1".into()));
        p.start();
        p
    }

    fn spawn(name: &'static str, args: Vec<String>, dir: &Path) -> Proc {
        let mut p = Proc::unstarted(name, args, dir);
        p.start();
        p
    }

    fn unstarted(name: &'static str, args: Vec<String>, dir: &Path) -> Proc {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("{name}-{n}.log"));
        Proc {
            name,
            port: 0,
            repl_port: 0,
            child: None,
            args,
            env: Vec::new(),
            log,
        }
    }

    /// (Re)starts the process with the same arguments and ports.
    pub fn start(&mut self) {
        let logged_before = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary(self.name))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready(logged_before);
    }

    /// Waits for the log to name the ports the process listens on (it was
    /// given port 0), pins them for restarts, then for `PING` to answer.
    fn wait_ready(&mut self, logged_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let port_after = |text: &str, marker: &str| -> Option<u16> {
            let at = text.find(marker)? + marker.len();
            let addr: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            addr.rsplit(':').next()?.parse().ok()
        };
        while self.port == 0
            || (self.repl_port == 0 && self.args.iter().any(|a| a == "--repl-listen"))
        {
            let text = self.log_text();
            let text = text.get(logged_before..).unwrap_or("");
            if let (Some(port), Some(repl)) = (
                port_after(text, "ready for clients addr="),
                port_after(text, "replication listening local_addr="),
            ) {
                self.port = port;
                self.repl_port = repl;
                // Restarts keep the ports: secondaries and clients use them.
                let pinned: Vec<String> = self
                    .args
                    .iter()
                    .scan(None::<&str>, |flag, arg| {
                        let out = match (*flag, arg.as_str()) {
                            (Some("--listen"), "127.0.0.1:0") => format!("127.0.0.1:{port}"),
                            (Some("--repl-listen"), "127.0.0.1:0") => format!("127.0.0.1:{repl}"),
                            _ => arg.clone(),
                        };
                        *flag = Some(arg.as_str());
                        Some(out)
                    })
                    .collect();
                self.args = pinned;
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} never said where it listens:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        loop {
            if let Ok(mut c) = self.try_client() {
                match redis::cmd("PING").query::<String>(&mut c) {
                    Ok(_) => return,
                    Err(e) if e.code() == Some("NOAUTH") => return,
                    Err(_) => {}
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered PING:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every TLS certificate fingerprint the process logged, oldest first
    /// (one per start).
    pub fn fingerprints(&self) -> Vec<String> {
        let text = self.log_text();
        text.match_indices("fingerprint=")
            .map(|(at, m)| {
                text[at + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect()
            })
            .collect()
    }

    pub fn try_client(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn client(&self) -> redis::Connection {
        self.try_client().unwrap()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own (after `SHUTDOWN`).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `INFO section` as field → value.
    pub fn info(&self, section: &str) -> std::collections::HashMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.client())
            .unwrap();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    pub fn lsn(&self) -> u64 {
        self.info("replication")["lsn"].parse().unwrap()
    }

    pub fn digest(&self) -> String {
        redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(&mut self.client())
            .unwrap()
    }

    pub fn promote(&self) {
        let () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut self.client())
            .unwrap_or_else(|e| panic!("promotion: {e}\n{}", self.log_text()));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A secondary of the primary replicating on `primary`, on ports of its
/// own choosing (relaying, and after promotion serving, on one).
fn secondary_args(primary: u16, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--primary".to_string(),
        format!("127.0.0.1:{primary}"),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--repl-listen".into(),
        "127.0.0.1:0".into(),
        "--repl-secret".into(),
        SECRET.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to a process.
pub fn signal(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {signal} {pid}");
}

/// Writer threads, each `SET`ting fresh keys on one node until stopped,
/// keeping the keys that got `OK`. A write that gets an error is not
/// counted (its outcome is unknown); a dropped connection is reopened.
#[derive(Debug)]
pub struct Writers {
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    pub fn start(port: u16, writers: usize) -> Writers {
        use std::sync::atomic::Ordering;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..writers)
            .map(|w| {
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let url = format!("redis://127.0.0.1:{port}/");
                    let mut conn = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match &mut conn {
                            Some(c) => c,
                            None => {
                                match redis::Client::open(url.as_str()).unwrap().get_connection() {
                                    Ok(c) => conn.insert(c),
                                    Err(_) => {
                                        std::thread::sleep(Duration::from_millis(20));
                                        continue;
                                    }
                                }
                            }
                        };
                        let key = format!("w{w}-{i}");
                        i += 1;
                        match redis::cmd("SET").arg(&key).arg(i).query::<()>(c) {
                            Ok(()) => acked.lock().unwrap().push(key),
                            Err(e) if e.is_io_error() || e.is_connection_dropped() => conn = None,
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        Writers {
            acked,
            stop,
            threads,
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writers; returns every key that got `OK`.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Writer threads that follow the cluster's primary: each asks the nodes
/// on `ports` (as Sentinels) where the primary is, `SET`s fresh keys there,
/// and asks again on an error or a dropped connection. Keeps the keys that
/// got `OK`, and the longest time without one (the unavailability).
#[derive(Debug)]
pub struct FollowingWriters {
    acked: std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
    /// The error codes writes got (`READONLY`, `TIMEOUT`, ...).
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One command on a fresh connection, every step bounded by `timeout`
/// (a paused node must not hang the caller: the `redis` crate's own
/// connection set-up reads without one). `None` on any failure.
pub fn raw_query(port: u16, args: &[&str], timeout: Duration) -> Option<redis::Value> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let deadline = Instant::now() + timeout;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Ok(v) = redis::parse_redis_value(&reply) {
            return Some(v);
        }
    }
    None
}

/// The cluster's primary's client port, as the first node of `ports` that
/// answers `SENTINEL get-master-addr-by-name hotblock` says.
pub fn primary_port(ports: &[u16]) -> Option<u16> {
    ports.iter().find_map(|&port| {
        let reply = raw_query(
            port,
            &["SENTINEL", "get-master-addr-by-name", "hotblock"],
            Duration::from_millis(500),
        )?;
        let addr: Option<(String, String)> = redis::from_redis_value(&reply).ok()?;
        addr?.1.parse().ok()
    })
}

impl FollowingWriters {
    pub fn start(ports: Vec<u16>, writers: usize) -> FollowingWriters {
        use std::sync::atomic::Ordering;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..writers)
            .map(|w| {
                let (acked, stop, ports) = (acked.clone(), stop.clone(), ports.clone());
                let errors = errors.clone();
                std::thread::spawn(move || {
                    let mut conn: Option<redis::Connection> = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match &mut conn {
                            Some(c) => c,
                            None => {
                                let opened = primary_port(&ports).and_then(|port| {
                                    let c =
                                        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                                            .ok()?
                                            .get_connection_with_timeout(Duration::from_millis(500))
                                            .ok()?;
                                    // Longer than a sync commit's wait, short
                                    // enough to leave a paused primary.
                                    c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                                    Some(c)
                                });
                                match opened {
                                    Some(c) => conn.insert(c),
                                    None => {
                                        std::thread::sleep(Duration::from_millis(20));
                                        continue;
                                    }
                                }
                            }
                        };
                        let key = format!("f{w}-{i}");
                        i += 1;
                        match redis::cmd("SET").arg(&key).arg(i).query::<()>(c) {
                            Ok(()) => acked.lock().unwrap().push((key, Instant::now())),
                            // Not acknowledged: its outcome is unknown. Ask
                            // where the primary is again.
                            Err(e) => {
                                let code = e.code().unwrap_or("io").to_string();
                                errors.lock().unwrap().push(code);
                                conn = None;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
            })
            .collect();
        FollowingWriters {
            acked,
            errors,
            stop,
            threads,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// The longest time without an `OK` since `since`.
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .acked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.1)
            .filter(|t| *t >= since)
            .collect();
        times.sort();
        times.insert(0, since);
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// The error codes writes got so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Stops the writers; returns every key that got `OK`.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self
            .acked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0.clone())
            .collect();
        acked
    }
}

/// A new directory `name` under `root`, for a node's `--data-dir`; its
/// path as an argument.
pub fn data_dir(root: &Path, name: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// Waits until `node` has `count` secondaries connected, all online.
pub fn wait_secondaries_online(node: &Proc, count: usize) {
    wait_until("secondaries online", Duration::from_secs(20), || {
        let info = node.info("replication");
        info.get("connected_secondaries") == Some(&count.to_string())
            && (0..count).all(|i| {
                info.get(&format!("secondary{i}"))
                    .is_some_and(|l| l.contains("state=online"))
            })
    });
}

/// Fails naming the keys (of `keys`, all acknowledged writes) that `c`
/// does not hold.
pub fn assert_all_present(c: &mut redis::Connection, keys: &[String]) {
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !redis::cmd("EXISTS")
                .arg(k.as_str())
                .query::<bool>(c)
                .unwrap()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Polls `check` until it holds or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
