//! Debian's PostgreSQL, started by a test in a temporary directory on a
//! loopback port: `initdb`, then `postgres` itself, stopped and started
//! again when a test asks (an outage), removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of its own.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    server: Option<Child>,
    /// With a certificate: it then accepts TLS.
    pub tls: bool,
}

/// The server binaries of the newest PostgreSQL installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)")
    })
}

/// Runs `cmd` as the `postgres` user when this is root, which PostgreSQL refuses to run as.
fn as_server_user(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

/// Makes `path` (recursively) the `postgres` user's when this is root.
fn give_to_server_user(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {} to postgres", path.display());
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub const USER: &str = "waymark";
pub const PASSWORD: &str = "s3cret-pw";

impl Pg {
    /// A fresh cluster with user `waymark` (password [`PASSWORD`],
    /// scram-sha-256 over TCP), serving on a free loopback port; with
    /// `tls`, also a certificate signed by `ca` for 127.0.0.1.
    pub fn start(tls: Option<&super::TestCa>) -> Pg {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PASSWORD).expect("write");
        give_to_server_user(dir.path());
        let out = as_server_user(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Pg {
            dir,
            bin,
            port: super::free_port(),
            server: None,
            tls: false,
        };
        if let Some(ca) = tls {
            let (cert, key) = &ca.leaf_pem;
            std::fs::write(data.join("server.crt"), cert).expect("write");
            std::fs::write(data.join("server.key"), key).expect("write");
            give_to_server_user(&data);
            let _ = Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status();
            pg.tls = true;
        }
        pg.resume();
        pg
    }

    /// Where the cluster is.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of database `postgres` as user `waymark`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let mut cmd = as_server_user(&self.bin, "postgres");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // A test server: speed over durability.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.tls {
            cmd.args(["-c", "ssl=on"]);
        }
        self.server = Some(cmd.spawn().expect("postgres starts"));
        let t = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server now (SIGINT: PostgreSQL's fast shutdown, which
    /// drops the connections), as an outage.
    pub fn pause(&mut self) {
        self.signal("-INT");
    }

    /// Sends `sig` to the postmaster (not to `runuser`, which does not pass
    /// signals on) and waits for it to end.
    fn signal(&mut self, sig: &str) {
        let Some(mut s) = self.server.take() else {
            return;
        };
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
            .unwrap_or_else(|| s.id().to_string());
        let _ = Command::new("kill").args([sig, &pid]).status();
        let _ = s.wait();
    }

    /// `sql` run with psql as the superuser; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg(self.url())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // SIGQUIT: immediate; the directory goes anyway.
        self.signal("-QUIT");
    }
}
