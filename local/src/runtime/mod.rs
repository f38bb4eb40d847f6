//! A Lambda Runtime API emulator: runs each function's real binary the way Lambda does.
//!
//! Each function scales out like Lambda: an invocation goes to an idle execution environment, or
//! starts a new one while fewer than [`FunctionSpec::max_concurrency`] exist (the template's
//! `ReservedConcurrentExecutions`, capped locally), or waits for one to free up. An environment is
//! a process started **lazily** by the invocation it will serve (that invocation is its cold start
//! and carries the `Init Duration`), with its own Runtime API server (2018-06-01) on a free
//! `127.0.0.1` port, passed to the process as `AWS_LAMBDA_RUNTIME_API`. One environment runs one
//! invocation at a time. Environments idle for [`FunctionSpec::idle_timeout`] are shut down,
//! except the last one. A timeout kills the process; a timeout, a crash (the process exits while an
//! invocation is in flight or before its first `/next`) or an init error (`/init/error`) fails the
//! invocation, and that environment's next invocation cold-starts a new process. A process that
//! dies while idle is simply replaced on its next invocation.
//!
//! The child inherits our environment (so `PATH`, `HOME`, … work), then gets the spec's `env`,
//! then Lambda's reserved variables (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
//! `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, `AWS_LAMBDA_FUNCTION_VERSION=$LATEST`,
//! `AWS_LAMBDA_LOG_STREAM_NAME` (one per process), `AWS_LAMBDA_LOG_GROUP_NAME`,
//! `AWS_LAMBDA_INITIALIZATION_TYPE`, `AWS_REGION`/`AWS_DEFAULT_REGION` (from the spec's env, else
//! `us-east-1`), `_HANDLER`, `LAMBDA_TASK_ROOT` = the binary's directory, which is also its working
//! directory).
//!
//! Everything goes to our stdout as `[<function>] <line>`: the process's stdout and stderr, line by
//! line, and Lambda's platform lines `START RequestId: …`, `END RequestId: …` and
//! `REPORT RequestId: …\tDuration: … ms\tBilled Duration: … ms\tMemory Size: … MB\tMax Memory
//! Used: … MB[\tInit Duration: … ms]`. The same figures are kept as [`InvocationReport`]s.

mod actor;
mod api;
mod env;
mod pool;
mod report;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use futures::channel::{mpsc, oneshot};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::invoke::{InvokeError, Invoker};
use actor::{Command, SHUT_DOWN};
use pool::Pool;
use report::ReportLog;
pub use report::{InvocationOutcome, InvocationReport};

/// How to run one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: String,
    /// The executable speaking the Runtime API (a `bootstrap`).
    pub binary: PathBuf,
    /// Environment variables from the template (Lambda's reserved variables override these).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Most execution environments at once (at least 1).
    pub max_concurrency: u32,
    /// An environment idle this long is shut down (the last one stays).
    pub idle_timeout: Duration,
}

/// How long an idle execution environment is kept by default. Lambda keeps them for minutes; a
/// minute shows scale-in without keeping a burst's processes around for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl FunctionSpec {
    /// A spec with Lambda's defaults (3 s timeout, 128 MB, no environment) and one execution
    /// environment.
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            binary: binary.into(),
            env: Vec::new(),
            timeout: Duration::from_secs(3),
            memory_mb: 128,
            max_concurrency: 1,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// One running execution environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentStatus {
    /// The environment's number ([`InvocationReport::environment`]).
    pub slot: u64,
    pub pid: Option<u32>,
    /// The Runtime API address the process was given.
    pub runtime_api: SocketAddr,
}

/// What a function's execution environments are doing now, and have done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionStatus {
    /// The running processes, by environment number.
    pub environments: Vec<EnvironmentStatus>,
    /// Processes started so far (each one a cold start).
    pub cold_starts: u64,
    /// Invocations finished so far (any outcome).
    pub invocations: u64,
    /// Invocations running now.
    pub busy: u32,
    /// The most invocations that ran at once.
    pub peak_busy: u32,
    /// Invocations waiting for a free environment now.
    pub waiting: u32,
    /// Environments started so far (running or shut down since).
    pub environments_started: u64,
    /// Environments shut down after idling.
    pub scaled_in: u64,
    /// Processes started to replace a failed one.
    pub replaced: u64,
    /// Bytes of log lines so far: the processes' output and the platform lines of each
    /// invocation (what CloudWatch Logs would ingest).
    pub log_bytes: u64,
}

impl FunctionStatus {
    /// Processes started to replace an earlier one of the same environment (after a timeout,
    /// crash or init error).
    pub fn restarts(&self) -> u64 {
        self.replaced
    }

    /// The first running environment's process.
    pub fn pid(&self) -> Option<u32> {
        self.environments.first().and_then(|e| e.pid)
    }

    /// The first running environment's Runtime API address.
    pub fn runtime_api(&self) -> Option<SocketAddr> {
        self.environments.first().map(|e| e.runtime_api)
    }
}

struct Function {
    commands: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<FunctionStatus>>,
    control: Mutex<Control>,
}

#[derive(Default)]
struct Control {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The emulated Lambda service for a set of functions.
pub struct Runtimes {
    functions: HashMap<String, Function>,
    reports: ReportLog,
}

impl Runtimes {
    /// Checks the specs and starts one actor per function; no process starts before its first
    /// invocation. Must be called inside a Tokio runtime.
    pub fn start(specs: Vec<FunctionSpec>) -> anyhow::Result<Runtimes> {
        let handle = tokio::runtime::Handle::try_current()
            .context("Runtimes::start must be called inside a Tokio runtime")?;
        let reports = ReportLog::default();
        let mut functions = HashMap::new();
        for spec in specs {
            if spec.name.is_empty() {
                bail!("a function has an empty name");
            }
            if functions.contains_key(&spec.name) {
                bail!("function {} is defined twice", spec.name);
            }
            if !spec.binary.is_file() {
                bail!(
                    "function {}: binary {} does not exist (build it first)",
                    spec.name,
                    spec.binary.display()
                );
            }
            if spec.timeout.is_zero() {
                bail!("function {}: the timeout must be positive", spec.name);
            }
            let (commands, commands_rx) = mpsc::unbounded();
            let (stop, stop_rx) = oneshot::channel();
            let status = Arc::new(Mutex::new(FunctionStatus::default()));
            let name = spec.name.clone();
            let pool = Pool {
                spec: Arc::new(spec),
                status: Arc::clone(&status),
                reports: reports.clone(),
                commands: commands_rx,
                stop: stop_rx,
            };
            let task = handle.spawn(pool.run());
            functions.insert(
                name,
                Function {
                    commands,
                    status,
                    control: Mutex::new(Control {
                        stop: Some(stop),
                        task: Some(task),
                    }),
                },
            );
        }
        Ok(Runtimes { functions, reports })
    }

    /// Stops every function: in-flight and queued invocations fail with
    /// [`InvokeError::Crashed`], every process is killed and waited for, every Runtime API
    /// listener is closed.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// [`Runtimes::shutdown`] for a shared `Runtimes`; later invocations fail with
    /// [`InvokeError::Crashed`].
    pub async fn stop(&self) {
        let mut tasks = Vec::new();
        for function in self.functions.values() {
            let mut control = function
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(stop) = control.stop.take() {
                let _ = stop.send(());
            }
            tasks.extend(control.task.take());
        }
        for task in futures::future::join_all(tasks).await {
            if let Err(err) = task {
                tracing::warn!(error = %err, "a function actor failed");
            }
        }
    }

    /// The names of the functions, sorted.
    pub fn functions(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.keys().cloned().collect();
        names.sort();
        names
    }

    /// The function's current process and counters; `None` for an unknown function.
    pub fn status(&self, function: &str) -> Option<FunctionStatus> {
        self.functions.get(function).map(|f| {
            f.status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// How many times the function's process was replaced; `None` for an unknown function.
    pub fn restart_count(&self, function: &str) -> Option<u64> {
        self.status(function).map(|s| s.restarts())
    }

    /// Reports of the finished invocations (all functions, oldest first; the last 10 000).
    pub fn reports(&self) -> Vec<InvocationReport> {
        self.reports.all()
    }

    /// Every report from now on, as it is made.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<InvocationReport> {
        self.reports.subscribe()
    }
}

#[async_trait]
impl Invoker for Runtimes {
    async fn invoke(&self, function: &str, event: Value) -> Result<Value, InvokeError> {
        let target = self
            .functions
            .get(function)
            .ok_or_else(|| InvokeError::UnknownFunction(function.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        target
            .commands
            .unbounded_send(Command { event, reply })
            .map_err(|_| InvokeError::Crashed(SHUT_DOWN.to_owned()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(InvokeError::Crashed(SHUT_DOWN.to_owned())))
    }
}

impl Drop for Runtimes {
    /// Best effort without [`Runtimes::shutdown`]: aborting an actor drops its process handle,
    /// which kills the process (`kill_on_drop`).
    fn drop(&mut self) {
        for function in self.functions.values() {
            let mut control = function
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            control.stop.take();
            if let Some(task) = control.task.take() {
                task.abort();
            }
        }
    }
}
