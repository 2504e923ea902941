//! The client libraries users run, with their defaults, against a primary
//! and a hot secondary started from the real binaries: redis-py (RESP3)
//! and ioredis (RESP2). Each suite covers the everyday commands, a
//! pipeline, a `WATCH` transaction, `SCAN` under concurrent writes and key
//! expiry on both nodes; they live in `tests/clients/` and print one line
//! per part. `scripts/test.sh` installs both libraries.

mod cluster;

use std::process::Command;

use cluster::{data_dir, wait_secondaries_online, Proc};

const CLIENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// Runs `program suite primary secondary` and fails with its output unless
/// it exits 0.
fn run_suite(program: &str, suite: &str) {
    let dir = tempfile::tempdir().unwrap();
    let primary_dir = data_dir(dir.path(), "primary");
    let primary = Proc::node(dir.path(), &["--data-dir", &primary_dir]);
    let secondary = Proc::secondary(dir.path(), primary.repl_port, &["--serve-reads"]);
    wait_secondaries_online(&primary, 1);
    let out = Command::new(program)
        .arg(format!("{CLIENTS_DIR}/{suite}"))
        .arg(primary.port.to_string())
        .arg(secondary.port.to_string())
        .current_dir(CLIENTS_DIR)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{suite} failed:\n{stdout}\n{}\nprimary log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        primary.log_text()
    );
}

#[test]
fn redis_py_with_its_defaults_runs_every_everyday_command() {
    let have = Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "python3 with redis-py: scripts/test.sh installs it (pip install redis)"
    );
    run_suite("python3", "redis_py_suite.py");
}

#[test]
fn ioredis_with_its_defaults_runs_every_everyday_command() {
    assert!(
        std::path::Path::new(CLIENTS_DIR)
            .join("node_modules/ioredis")
            .is_dir(),
        "ioredis in {CLIENTS_DIR}/node_modules: scripts/test.sh installs it (npm install)"
    );
    run_suite("node", "ioredis_suite.js");
}
