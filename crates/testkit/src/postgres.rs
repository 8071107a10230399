//! A throwaway PostgreSQL for store tests.
//!
//! With `GATEHOUSE_TEST_POSTGRES` set to a server URL (as `.ci/run` does), each harness creates
//! its own database there and drops it afterwards; otherwise it starts a private cluster with
//! `initdb` and `pg_ctl` on a free port in a temporary directory.

use std::path::PathBuf;
use std::process::Command;

use crate::process::external;

const SEARCH: &[&str] = &[
    "/usr/lib/postgresql/17/bin/",
    "/usr/lib/postgresql/16/bin/",
    "/usr/lib/postgresql/15/bin/",
];

fn tool(name: &str) -> PathBuf {
    let extra: Vec<String> = SEARCH.iter().map(|d| format!("{d}{name}")).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    external(name, &extra, "postgresql")
}

/// A PostgreSQL database that exists for as long as this value.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://…` for the database.
    pub url: String,
    cluster: Option<(tempfile::TempDir, PathBuf)>,
    shared: Option<(String, String)>,
}

fn as_postgres_user(cmd: &mut Command) {
    if nix::unistd::geteuid().is_root() {
        // PostgreSQL refuses to run as root.
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("no postgres user: apt-get install postgresql");
        use std::os::unix::process::CommandExt;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// A fresh, empty database.
    pub fn start() -> Self {
        if let Ok(server) = std::env::var("GATEHOUSE_TEST_POSTGRES") {
            return Self::in_shared(server);
        }
        let dir = tempfile::Builder::new()
            .prefix("gh-pg-")
            .tempdir()
            .expect("tempdir");
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("no postgres user: apt-get install postgresql");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let port = crate::free_port();
        let mut init = Command::new(tool("initdb"));
        init.args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ])
        .args(["--no-sync"]);
        as_postgres_user(&mut init);
        run(init, "initdb");
        let mut start = Command::new(tool("pg_ctl"));
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        start
            .args(["-D", data.to_str().unwrap(), "-o", &opts, "-w", "-l"])
            .arg(dir.path().join("log"))
            .arg("start");
        as_postgres_user(&mut start);
        run(start, "pg_ctl start");
        Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            cluster: Some((dir, data)),
            shared: None,
        }
    }

    fn in_shared(server: String) -> Self {
        let name = format!("gh_test_{}", crate::free_port()) + &format!("_{}", std::process::id());
        let mut psql = Command::new(tool("psql"));
        psql.args([
            &server,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ]);
        run(psql, "CREATE DATABASE");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            cluster: None,
            shared: Some((server.clone(), name)),
        }
    }
}

impl Postgres {
    /// Makes the database refuse every write (as after a failover to a read-only replica), or
    /// take writes again: new transactions default to read-only, and the connections open now
    /// are closed so that clients reconnect into that default.
    pub fn set_read_only(&self, read_only: bool) {
        let (admin, name) = match &self.shared {
            Some((server, name)) => (server.clone(), name.clone()),
            None => (self.url.clone(), "postgres".to_owned()),
        };
        let setting = if read_only {
            format!("ALTER DATABASE {name} SET default_transaction_read_only = on")
        } else {
            format!("ALTER DATABASE {name} RESET default_transaction_read_only")
        };
        let close = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        );
        let mut psql = Command::new(tool("psql"));
        // This session itself may be in the read-only database.
        let writable = "SET default_transaction_read_only = off";
        psql.args([&admin, "-v", "ON_ERROR_STOP=1", "-c", writable]);
        psql.args(["-c", &setting, "-c", &close]);
        run(psql, "ALTER DATABASE");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((_, data)) = &self.cluster {
            let mut stop = Command::new(tool("pg_ctl"));
            stop.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
            as_postgres_user(&mut stop);
            let _ = stop.output();
        }
        if let Some((server, name)) = &self.shared {
            let _ = Command::new(tool("psql"))
                .args([
                    server.as_str(),
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}
