//! A real etcd (Debian's `etcd-server`, installed by `scripts/test.sh`) on
//! loopback ports, for the coordinator's tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotblock_node::coordinator::{CoordinatorUrl, Etcd};

use super::free_port;

/// A real etcd on loopback; killed when dropped.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn spawn(dir: &Path, client_port: u16, peer_port: u16) -> Child {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    Command::new("etcd")
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
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
        .expect("etcd (Debian's etcd-server) on the PATH: scripts/test.sh installs it")
}

impl EtcdProcess {
    pub fn start() -> EtcdProcess {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd = EtcdProcess {
            child: spawn(dir.path(), client_port, peer_port),
            client_port,
            peer_port,
            dir,
        };
        etcd.wait_ready();
        etcd
    }

    fn wait_ready(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(b"ready?").is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> CoordinatorUrl {
        self.flag().parse().unwrap()
    }

    /// `--coordinator`'s value for this etcd.
    pub fn flag(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    pub fn client(&self) -> Etcd {
        Etcd::new(self.url(), Duration::from_secs(2))
    }

    /// Stops etcd (SIGKILL), keeping its data for [`EtcdProcess::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path(), self.client_port, self.peer_port);
        self.wait_ready();
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
