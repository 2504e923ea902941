//! The systems under test as processes on loopback: hotblock nodes (this
//! binary re-run as `hotblock-node` or `hotblock-secondary`, the same code
//! as those binaries) and `redis-server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    pub repl_port: u16,
    /// QUIC only: the certificate fingerprint secondaries pin.
    pub fingerprint: Option<String>,
    child: Child,
    log: PathBuf,
    /// hotblock servers: the arguments to start it again with, and whether
    /// it serves secondaries.
    restart: Option<(Vec<String>, bool)>,
    /// redis-server: the arguments to start it again with.
    redis_args: Option<Vec<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A hotblock primary with `extra` flags, on ports of its choosing.
    pub fn hotblock_node(work: &Path, transport: &str, extra: &[String]) -> Result<Server, String> {
        let mut args: Vec<String> = [
            "__node",
            "--listen",
            "127.0.0.1:0",
            "--repl-listen",
            "127.0.0.1:0",
            "--repl-secret",
            "bench",
            "--transport",
            transport,
        ]
        .map(String::from)
        .into();
        args.extend(extra.iter().cloned());
        Self::hotblock("hotblock-node", work, args, true)
    }

    /// A hotblock secondary of `primary`, in `mode` (sync or async).
    pub fn hotblock_secondary(
        work: &Path,
        primary: &Server,
        transport: &str,
        mode: &str,
        extra: &[String],
    ) -> Result<Server, String> {
        let mut args: Vec<String> = [
            "__secondary",
            "--primary",
            &format!("127.0.0.1:{}", primary.repl_port),
            "--listen",
            "127.0.0.1:0",
            "--repl-secret",
            "bench",
            "--transport",
            transport,
            "--mode",
            mode,
        ]
        .map(String::from)
        .into();
        args.extend(extra.iter().cloned());
        if let Some(f) = &primary.fingerprint {
            args.extend(["--primary-fingerprint".to_string(), f.clone()]);
        }
        Self::hotblock("hotblock-secondary", work, args, false)
    }

    /// A hotblock secondary of a cluster with a coordinator (`extra` names
    /// it): etcd says whom it follows; it serves secondaries once elected.
    pub fn hotblock_member(work: &Path, extra: &[String]) -> Result<Server, String> {
        let mut args: Vec<String> = [
            "__secondary",
            "--listen",
            "127.0.0.1:0",
            "--repl-listen",
            "127.0.0.1:0",
            "--repl-secret",
            "bench",
        ]
        .map(String::from)
        .into();
        args.extend(extra.iter().cloned());
        Self::hotblock("hotblock-secondary", work, args, true)
    }

    fn hotblock(name: &str, work: &Path, args: Vec<String>, repl: bool) -> Result<Server, String> {
        let log = work.join(format!("{name}-{}.log", unique()));
        let child = spawn_self(name, &args, &log)?;
        let mut server = Server {
            port: 0,
            repl_port: 0,
            fingerprint: None,
            child,
            log,
            restart: Some((args, repl)),
            redis_args: None,
        };
        server.wait_listening(0, name, repl)?;
        // Restarts keep the ports: clients and secondaries use them.
        if let Some((args, _)) = &mut server.restart {
            pin_port(args, "--listen", server.port);
            pin_port(args, "--repl-listen", server.repl_port);
        }
        Ok(server)
    }

    /// Waits for the log (past `from`) to name the ports listened on.
    fn wait_listening(&mut self, from: usize, name: &str, repl: bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let text = text.get(from..).unwrap_or("");
            self.port = port_after(text, "ready for clients addr=").unwrap_or(0);
            self.repl_port = port_after(text, "replication listening local_addr=").unwrap_or(0);
            self.fingerprint = word_after(text, "fingerprint=");
            if self.port != 0 && (!repl || self.repl_port != 0) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{name} exited ({status}):\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then the same process again (same ports, same data
    /// directory). hotblock servers only.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        self.kill();
        self.restart()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a hotblock server again (after `kill`): same arguments, ports
    /// and data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        let (args, repl) = self
            .restart
            .clone()
            .ok_or("only hotblock servers restart")?;
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let name = if repl {
            "hotblock-node"
        } else {
            "hotblock-secondary"
        };
        self.child = spawn_self(name, &args, &self.log)?;
        self.wait_listening(from, name, repl)
    }

    /// Sends a signal (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?
            .success();
        ok.then_some(())
            .ok_or_else(|| format!("kill -{signal} failed"))
    }

    /// `redis-server` without persistence; with `replica_of`, its replica.
    pub fn redis(work: &Path, replica_of: Option<u16>) -> Result<Server, String> {
        let port = free_port()?;
        let dir = work.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap_or("."),
        ]
        .map(String::from)
        .into();
        if let Some(primary) = replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string(),
            ]);
        }
        let log = dir.join("redis.log");
        let child = spawn_redis("redis-server", &args, &log)?;
        let server = Server {
            port,
            repl_port: port,
            fingerprint: None,
            child,
            log,
            restart: None,
            redis_args: Some(args),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut c) = server.connect() {
                let up = match replica_of {
                    None => redis::cmd("PING").query::<String>(&mut c).is_ok(),
                    Some(_) => redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                        .is_ok_and(|i| i.contains("master_link_status:up")),
                };
                if up {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a killed redis-server again with the same arguments (the
    /// old master coming back: as a master, until Sentinel converts it).
    pub fn restart_redis(&mut self) -> Result<(), String> {
        let args = self.redis_args.clone().ok_or("not a redis-server")?;
        self.child = spawn_redis("redis-server", &args, &self.log)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !self
            .connect()
            .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
        {
            if Instant::now() > deadline {
                return Err("redis-server did not restart".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// A `redis-sentinel` watching the master on `master` (as `mymaster`,
    /// quorum 2) with `down-after-milliseconds`.
    pub fn redis_sentinel(work: &Path, master: u16, down_after_ms: u64) -> Result<Server, String> {
        let port = free_port()?;
        let dir = work.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master} 2\nsentinel down-after-milliseconds mymaster {down_after_ms}\nsentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 1\n",
                dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join("sentinel.log");
        let args = vec![conf.to_string_lossy().into_owned()];
        let child = spawn_redis("redis-sentinel", &args, &log)?;
        let server = Server {
            port,
            repl_port: port,
            fingerprint: None,
            child,
            log,
            restart: None,
            redis_args: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !server
            .connect()
            .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
        {
            if Instant::now() > deadline {
                return Err("redis-sentinel did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// This binary, as `hotblock-node` or `hotblock-secondary` (`args[0]` is
/// `__node` or `__secondary`), its log appended to `log`.
fn spawn_self(name: &str, args: &[String], log: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    Command::new(exe)
        .args(args)
        .env(
            "RUST_LOG",
            "warn,hotblock_node::server=info,hotblock_primary::replication=info,hotblock_node::cmd=info",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))
}

fn spawn_redis(program: &str, args: &[String], log: &Path) -> Result<Child, String> {
    Command::new(program)
        .args(args)
        .stdout(std::fs::File::create(log).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))
}

/// How fast etcd's own failure detection runs. etcd grants no lease
/// shorter than 1.5 election timeouts, rounded up to whole seconds: 2 s
/// with its defaults (heartbeat 100 ms, election timeout 1000 ms), 1 s with
/// `Fast` (50 ms, 500 ms), which a single etcd on loopback keeps easily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdTiming {
    Default,
    Fast,
}

/// An etcd on loopback ports of its own; killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    port: u16,
}

impl EtcdServer {
    pub fn start(work: &Path, timing: EtcdTiming) -> Result<EtcdServer, String> {
        let (port, peer) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let data = work.join(format!("etcd-{port}"));
        let timing_args: &[&str] = match timing {
            EtcdTiming::Default => &[],
            EtcdTiming::Fast => &["--heartbeat-interval", "50", "--election-timeout", "500"],
        };
        let child = Command::new("etcd")
            .args(["--data-dir", data.to_str().unwrap_or("etcd")])
            .args(timing_args)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        let etcd = EtcdServer { child, port };
        let client = hotblock_node::coordinator::Etcd::new(
            etcd.url().parse().map_err(|e| format!("{e}"))?,
            Duration::from_secs(1),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while client.get(b"ready?").is_err() {
            if Instant::now() > deadline {
                return Err("etcd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// `--coordinator`'s value.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces `flag 127.0.0.1:0` with the port the process chose.
fn pin_port(args: &mut [String], flag: &str, port: u16) {
    if port == 0 {
        return;
    }
    for i in 1..args.len() {
        if args[i - 1] == flag && args[i] == "127.0.0.1:0" {
            args[i] = format!("127.0.0.1:{port}");
        }
    }
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn word_after(text: &str, marker: &str) -> Option<String> {
    let at = text.rfind(marker)? + marker.len();
    Some(
        text[at..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect(),
    )
}

fn port_after(text: &str, marker: &str) -> Option<u16> {
    word_after(text, marker)?.rsplit(':').next()?.parse().ok()
}
