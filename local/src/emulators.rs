//! Starts DynamoDB Local and moto once per test process.
//!
//! Each emulator runs under a small `sh` wrapper whose stdin is a pipe from the test process:
//!
//! ```sh
//! exec 3<&0                                  # keep the pipe from the test process on fd 3
//! "$@" </dev/null 3<&- & child=$!            # the emulator, without the pipe
//! { read _ignored <&3; kill $child; } &      # watcher: EOF on the pipe => kill the emulator
//! watcher=$!
//! wait $child; status=$?; kill $watcher; exit $status
//! ```
//!
//! The write end of the pipe lives in a `static` and is never written to nor closed, so it closes
//! only when the test process ends, however it ends (normal exit, panic, `SIGKILL`): then `read`
//! sees EOF and the emulator is killed. No orphans, no signal handlers, no unsafe code. Because the
//! wrapper also exits when the emulator dies, an emulator that fails to start (port taken, Java
//! missing) is noticed at once instead of after the readiness timeout.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::install::{ensure_dynamodb_local, ensure_moto, tail_lines};

/// Endpoints of the emulators shared by every test in this process.
#[derive(Debug)]
pub struct Emulators {
    /// `http://127.0.0.1:<port>` of DynamoDB Local.
    pub dynamodb_endpoint: String,
    /// `http://127.0.0.1:<port>` of moto (used for SQS).
    pub moto_endpoint: String,
    /// How long each emulator took to answer HTTP (zero when an external endpoint is used).
    pub dynamodb_startup: Duration,
    pub moto_startup: Duration,
    _processes: Vec<EmulatorProcess>,
}

/// Environment variables that point the harness at already-running emulators instead of
/// starting its own (e.g. CI service containers).
pub const DYNAMODB_ENDPOINT_ENV: &str = "TALLY_DYNAMODB_ENDPOINT";
pub const MOTO_ENDPOINT_ENV: &str = "TALLY_MOTO_ENDPOINT";
/// Overrides the readiness timeout (seconds, default 60).
pub const TIMEOUT_ENV: &str = "TALLY_EMULATOR_TIMEOUT_SECS";

static EMULATORS: OnceLock<std::result::Result<Emulators, String>> = OnceLock::new();

/// The emulators for this test process, installed if missing and started on first use.
///
/// Blocking (std threads and processes), so it works from any tokio runtime; async code should
/// prefer calling it through `tokio::task::spawn_blocking` (as `Stack::provision` does). A start
/// failure is remembered: later calls return the same error without retrying.
pub fn emulators() -> Result<&'static Emulators> {
    match EMULATORS
        .get_or_init(|| Emulators::start(&EmulatorOptions::default()).map_err(|e| format!("{e:#}")))
    {
        Ok(emulators) => Ok(emulators),
        Err(message) => Err(anyhow!("emulators failed to start: {message}")),
    }
}

/// How the local stack wants its emulators (the tests use the defaults).
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// Keep DynamoDB Local's data here (`-dbPath`) instead of in memory.
    pub dynamodb_data_dir: Option<PathBuf>,
}

impl Emulators {
    /// Installs (when missing) and starts both emulators; they stop when this value is dropped
    /// or the process ends.
    pub fn start(options: &EmulatorOptions) -> Result<Emulators> {
        start_all(options)
    }
}

fn start_all(options: &EmulatorOptions) -> Result<Emulators> {
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs);

    // Install and start both in parallel: pip/npm and the JVM start-up dominate.
    let (ddb, moto) = std::thread::scope(|scope| {
        let ddb = scope.spawn(|| match std::env::var(DYNAMODB_ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                Ok((endpoint.trim().to_string(), Duration::ZERO, None))
            }
            _ => start_dynamodb_local(timeout, options.dynamodb_data_dir.as_deref()),
        });
        let moto = scope.spawn(|| match std::env::var(MOTO_ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                Ok((endpoint.trim().to_string(), Duration::ZERO, None))
            }
            _ => start_moto(timeout),
        });
        let ddb = ddb
            .join()
            .unwrap_or_else(|_| Err(anyhow!("DynamoDB Local start-up thread panicked")));
        let moto = moto
            .join()
            .unwrap_or_else(|_| Err(anyhow!("moto start-up thread panicked")));
        (ddb, moto)
    });
    // If one fails the other's process is dropped here, which closes its pipe and stops it.
    let (dynamodb_endpoint, dynamodb_startup, ddb_process) = ddb?;
    let (moto_endpoint, moto_startup, moto_process) = moto?;
    eprintln!(
        "tally-local: DynamoDB Local at {dynamodb_endpoint} (ready in {dynamodb_startup:?}), moto at {moto_endpoint} (ready in {moto_startup:?})"
    );
    Ok(Emulators {
        dynamodb_endpoint,
        moto_endpoint,
        dynamodb_startup,
        moto_startup,
        _processes: ddb_process.into_iter().chain(moto_process).collect(),
    })
}

type Started = (String, Duration, Option<EmulatorProcess>);

fn start_dynamodb_local(timeout: Duration, data_dir: Option<&Path>) -> Result<Started> {
    let dist = ensure_dynamodb_local()?;
    let storage: Vec<String> = match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            vec!["-dbPath".into(), dir.display().to_string()]
        }
        None => vec!["-inMemory".into()],
    };
    let java = java_binary();
    start_with_retries("DynamoDB Local", timeout, |port| {
        let mut cmd = Command::new(&java);
        cmd.arg(format!("-Djava.library.path={}", dist.lib().display()))
            .arg("-jar")
            .arg(dist.jar())
            .args(&storage)
            // One database whatever the credentials/region of the client, so code under test
            // configured differently from the harness still sees the same tables.
            .arg("-sharedDb")
            .arg("-disableTelemetry")
            .arg("-port")
            .arg(port.to_string())
            .current_dir(&dist.dir);
        cmd
    })
}

fn start_moto(timeout: Duration) -> Result<Started> {
    let server = ensure_moto()?;
    start_with_retries("moto", timeout, |port| {
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        cmd
    })
}

fn java_binary() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin").join("java").is_file() => {
            Path::new(&home).join("bin").join("java")
        }
        _ => PathBuf::from("java"),
    }
}

/// Starts an emulator on a free port, retrying with another port if it exits early (the port
/// picked may have been taken by someone else between probe and bind).
fn start_with_retries(
    name: &str,
    timeout: Duration,
    command_for_port: impl Fn(u16) -> Command,
) -> Result<Started> {
    const ATTEMPTS: usize = 3;
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        let port = free_port()?;
        let started = Instant::now();
        let mut process = EmulatorProcess::spawn(name, command_for_port(port))?;
        match process.wait_ready(port, started + timeout) {
            Ok(()) => {
                return Ok((
                    format!("http://127.0.0.1:{port}"),
                    started.elapsed(),
                    Some(process),
                ))
            }
            Err(WaitError::Exited(err)) if attempt < ATTEMPTS => {
                eprintln!("tally-local: {name} exited early on port {port}, retrying: {err:#}");
                last_error = Some(err);
            }
            Err(WaitError::Exited(err) | WaitError::TimedOut(err)) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("{name} did not start")))
}

/// Picks a free loopback port by binding port 0 and releasing it.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local_addr")?.port())
}

const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
child=$!
{ read _ignored <&3; kill $child 2>/dev/null; } &
watcher=$!
wait $child
status=$?
kill $watcher 2>/dev/null
exit $status"#;

/// Last lines of the emulator's stdout + stderr, for error messages.
#[derive(Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    const KEEP: usize = 60;

    fn drain(&self, stream: impl Read + Send + 'static) {
        let tail = self.clone();
        std::thread::spawn(move || {
            // Keep reading until EOF whatever the bytes are: a stalled pipe would block the
            // emulator on its next log write.
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                let mut lines = tail.0.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == Self::KEEP {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text: Vec<&str> = lines.iter().map(String::as_str).collect();
        tail_lines(&text.join("\n"), Self::KEEP)
    }
}

struct EmulatorProcess {
    name: String,
    /// The wrapper `sh`; its stdin (kept open inside `Child`) is the life line of the emulator.
    wrapper: Child,
    log: LogTail,
}

impl std::fmt::Debug for EmulatorProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorProcess")
            .field("name", &self.name)
            .field("wrapper_pid", &self.wrapper.id())
            .finish()
    }
}

enum WaitError {
    Exited(anyhow::Error),
    TimedOut(anyhow::Error),
}

impl EmulatorProcess {
    fn spawn(name: &str, command: Command) -> Result<EmulatorProcess> {
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            .arg(WRAPPER)
            .arg("tally-emulator")
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = command.get_current_dir() {
            wrapper.current_dir(dir);
        }
        // Its own process group: a Ctrl-C in the terminal reaches only the parent, which then
        // stops things in order (HTTP first, emulators last) instead of all at once.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut wrapper, 0);
        let mut child = wrapper
            .spawn()
            .with_context(|| format!("spawning {name}: {command:?}"))?;
        let log = LogTail::default();
        if let Some(out) = child.stdout.take() {
            log.drain(out);
        }
        if let Some(err) = child.stderr.take() {
            log.drain(err);
        }
        Ok(EmulatorProcess {
            name: name.to_string(),
            wrapper: child,
            log,
        })
    }

    fn wait_ready(&mut self, port: u16, deadline: Instant) -> std::result::Result<(), WaitError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            match self.wrapper.try_wait() {
                Ok(Some(status)) => {
                    // Give the drain threads a moment to collect the last words.
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(WaitError::Exited(anyhow!(
                        "{} exited before answering on {addr} ({status})\n--- {} output (tail) ---\n{}",
                        self.name,
                        self.name,
                        self.log.text()
                    )));
                }
                Ok(None) => {}
                Err(err) => {
                    return Err(WaitError::Exited(
                        anyhow!(err).context(format!("waiting for {}", self.name)),
                    ))
                }
            }
            if http_answers(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WaitError::TimedOut(anyhow!(
                    "{} did not answer HTTP on {addr} in time (set {TIMEOUT_ENV} to wait longer)\n--- {} output (tail) ---\n{}",
                    self.name,
                    self.name,
                    self.log.text()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper kill the emulator; then reap the wrapper. (The
        // tests' shared instances live in a static and die with the process instead.)
        drop(self.wrapper.stdin.take());
        let _ = self.wrapper.wait();
    }
}

/// True once something on `addr` accepts a connection and answers an HTTP request with any
/// status (DynamoDB Local answers an unsigned `GET /` with 400, moto with 200).
fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tally-local\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}
