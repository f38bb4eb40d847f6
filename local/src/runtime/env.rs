//! One execution environment: a function process plus its own Runtime API server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::api::{ApiServer, ApiShared, Delivery, EnvEvent};
use super::report::{emit, kb_to_mb, peak_rss_kb};
use super::{FunctionSpec, FunctionStatus};

/// How long the watcher waits for the last log lines after the process exited.
const LOG_DRAIN: Duration = Duration::from_millis(500);
/// Variables a parent shell may carry that would change how a runtime behaves.
const SCRUBBED: [&str; 3] = [
    "AWS_LAMBDA_MAX_CONCURRENCY",
    "_X_AMZN_TRACE_ID",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
];

pub(crate) struct ExecEnv {
    pub(crate) pid: Option<u32>,
    pub(crate) addr: SocketAddr,
    pub(crate) spawned_at: Instant,
    /// Set once the runtime made its first `/next` call.
    pub(crate) initialized: bool,
    peak_kb: u64,
    events: mpsc::UnboundedReceiver<EnvEvent>,
    deliveries: Option<mpsc::UnboundedSender<Delivery>>,
    kill: Option<oneshot::Sender<()>>,
    watcher: JoinHandle<()>,
    server: Option<ApiServer>,
}

impl ExecEnv {
    /// Starts the Runtime API server, then the process pointed at it.
    pub(crate) async fn spawn(
        spec: &FunctionSpec,
        status: Arc<Mutex<FunctionStatus>>,
    ) -> anyhow::Result<Self> {
        let (events_tx, events) = mpsc::unbounded();
        let (deliveries_tx, deliveries_rx) = mpsc::unbounded();
        let shared = Arc::new(ApiShared::new(
            &spec.name,
            spec.timeout,
            events_tx.clone(),
            deliveries_rx,
        ));
        let server = ApiServer::start(shared)
            .await
            .context("binding the Runtime API server")?;
        let addr = server.addr();
        let mut command = command(spec, addr)?;
        let spawned_at = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                server.stop().await;
                return Err(err).with_context(|| format!("spawning {}", spec.binary.display()));
            }
        };
        let pid = child.id();
        let mut logs = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            logs.push(tokio::spawn(forward_lines(
                spec.name.clone(),
                stdout,
                Arc::clone(&status),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            logs.push(tokio::spawn(forward_lines(
                spec.name.clone(),
                stderr,
                Arc::clone(&status),
            )));
        }
        let (kill, killed) = oneshot::channel();
        let watcher = tokio::spawn(watch(child, killed, logs, events_tx));
        Ok(Self {
            pid,
            addr,
            spawned_at,
            initialized: false,
            peak_kb: 0,
            events,
            deliveries: Some(deliveries_tx),
            kill: Some(kill),
            watcher,
            server: Some(server),
        })
    }

    pub(crate) async fn next_event(&mut self) -> Option<EnvEvent> {
        self.events.next().await
    }

    /// Queues an invocation for the runtime's `/next`; false if the environment is closing.
    pub(crate) fn deliver(&self, delivery: Delivery) -> bool {
        self.deliveries
            .as_ref()
            .is_some_and(|tx| tx.unbounded_send(delivery).is_ok())
    }

    /// The process is gone (and reaped): its pid may be reused, so stop reading it.
    pub(crate) fn exited(&mut self) {
        self.pid = None;
    }

    /// Peak RSS in MB, read now if the process is alive, else the last figure read.
    pub(crate) fn max_memory_mb(&mut self) -> u64 {
        if let Some(kb) = self.pid.and_then(peak_rss_kb) {
            self.peak_kb = self.peak_kb.max(kb);
        }
        kb_to_mb(self.peak_kb)
    }

    /// Kills the process (if still running) and waits for it, then closes the server.
    pub(crate) async fn teardown(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let _ = (&mut self.watcher).await;
        // Ends any `/next` long-poll still open, so the graceful stop can finish.
        self.deliveries = None;
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

// Dropping an `ExecEnv` without `teardown` drops `kill`, which makes the watcher kill the process,
// and `ApiServer`'s own drop aborts the server task.

fn command(spec: &FunctionSpec, addr: SocketAddr) -> anyhow::Result<Command> {
    let binary = std::path::absolute(&spec.binary)
        .with_context(|| format!("resolving {}", spec.binary.display()))?;
    let task_root = binary.parent().unwrap_or(Path::new("/")).to_path_buf();
    let lookup = |key: &str| {
        spec.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let region = lookup("AWS_REGION")
        .or_else(|| lookup("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let log_stream = format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        uuid::Uuid::new_v4().simple()
    );

    let mut command = Command::new(&binary);
    for key in SCRUBBED {
        command.env_remove(key);
    }
    command
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        )
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream)
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        )
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("AWS_REGION", &region)
        .env("AWS_DEFAULT_REGION", &region)
        .env("_HANDLER", "bootstrap")
        .env("LAMBDA_TASK_ROOT", &task_root)
        .current_dir(&task_root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a terminal Ctrl-C reaches only tally-local, which stops the
    // functions after the HTTP API and the pollers have drained.
    #[cfg(unix)]
    command.process_group(0);
    Ok(command)
}

/// Owns the child: waits for it to exit, or kills it when asked (or when the environment is
/// dropped), then reports the exit status after the last log lines are out.
async fn watch(
    mut child: Child,
    killed: oneshot::Receiver<()>,
    logs: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedSender<EnvEvent>,
) {
    let kill_requested = tokio::select! {
        status = child.wait() => Some(status),
        _ = killed => None,
    };
    let status = match kill_requested {
        Some(status) => status,
        None => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let status = match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("waiting for the process failed: {err}"),
    };
    for log in logs {
        let _ = tokio::time::timeout(LOG_DRAIN, log).await;
    }
    let _ = events.unbounded_send(EnvEvent::Exited(status));
}

/// Copies a child's output to our stdout, one `[function] line` at a time, counting the bytes
/// Lambda would send to the function's log group.
async fn forward_lines(
    function: String,
    output: impl AsyncRead + Unpin,
    status: Arc<Mutex<FunctionStatus>>,
) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .log_bytes += read as u64;
                let text = String::from_utf8_lossy(&line);
                emit(&function, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}
