//! Real `hotblock-node` and `hotblock-secondary` processes on loopback,
//! driven through the `redis` crate, for the end-to-end tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "e2e-secret";

/// A free loopback port (bound, then released: another process could take
/// it in between, which loopback tests accept).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of one of the workspace's binaries, building it if this test
/// run did not (`cargo test -p hotblock-secondary` alone).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let package = match name {
            "hotblock-node" => "hotblock-primary",
            _ => "hotblock-secondary",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .unwrap();
        assert!(status.success(), "building {name}");
    }
    path
}

/// A running node; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub port: u16,
    pub repl_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Proc {
    pub fn node(dir: &Path, extra: &[&str]) -> Proc {
        let (port, repl_port) = (free_port(), free_port());
        let mut args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--repl-listen".into(),
            format!("127.0.0.1:{repl_port}"),
            "--repl-secret".into(),
            SECRET.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("hotblock-node", port, repl_port, args, dir)
    }

    /// A secondary of the node whose replication port is `primary`; it
    /// relays (and, once promoted, serves secondaries) on a port of its own.
    pub fn secondary(dir: &Path, primary: u16, extra: &[&str]) -> Proc {
        let (port, repl_port) = (free_port(), free_port());
        let mut args = vec![
            "--primary".to_string(),
            format!("127.0.0.1:{primary}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--repl-listen".into(),
            format!("127.0.0.1:{repl_port}"),
            "--repl-secret".into(),
            SECRET.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("hotblock-secondary", port, repl_port, args, dir)
    }

    fn spawn(name: &'static str, port: u16, repl_port: u16, args: Vec<String>, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}-{port}.log"));
        let mut p = Proc {
            name,
            port,
            repl_port,
            child: None,
            args,
            log,
        };
        p.start();
        p
    }

    /// (Re)starts the process with the same arguments and ports.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary(self.name))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
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

/// Polls `check` until it holds or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
