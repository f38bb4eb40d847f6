//! The loop that owns one execution environment of a function: it runs the invocations the
//! function's [`super::pool::Pool`] hands it, one at a time, and tells the pool when each ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt as _;
use serde_json::Value;

use super::api::{Delivery, EnvEvent};
use super::env::ExecEnv;
use super::report::{emit, InvocationOutcome, InvocationReport, ReportLog};
use super::{EnvironmentStatus, FunctionSpec, FunctionStatus};
use crate::invoke::InvokeError;

/// Lambda's limit on the init phase of an on-demand function.
pub(crate) const INIT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const SHUT_DOWN: &str = "the runtime emulator is shut down";

pub(crate) struct Command {
    pub(crate) event: Value,
    pub(crate) reply: oneshot::Sender<Result<Value, InvokeError>>,
}

impl Command {
    /// Fails the invocation: the emulator is shutting down.
    pub(crate) fn refuse(self) {
        let _ = self
            .reply
            .send(Err(InvokeError::Crashed(SHUT_DOWN.to_owned())));
    }
}

/// Closes `commands` and fails every invocation still queued in it.
pub(crate) fn refuse_queued(commands: &mut mpsc::UnboundedReceiver<Command>) {
    commands.close();
    while let Ok(command) = commands.try_recv() {
        command.refuse();
    }
}

pub(crate) struct Actor {
    /// Which of the function's environments this is (unique per function, never reused).
    pub(crate) slot: u64,
    pub(crate) spec: Arc<FunctionSpec>,
    pub(crate) status: Arc<Mutex<FunctionStatus>>,
    pub(crate) reports: ReportLog,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) stop: oneshot::Receiver<()>,
    pub(crate) env: Option<ExecEnv>,
    /// Told this slot's id after every invocation, so the pool can give it the next one.
    pub(crate) done: mpsc::UnboundedSender<u64>,
    /// A process was started in this environment before (so the next one replaces it).
    pub(crate) spawned_before: bool,
}

enum Wake {
    Command(Command),
    Stop,
    Env(Option<EnvEvent>),
}

/// How an invocation ended, before it is reported.
struct Ending {
    result: Result<Value, InvokeError>,
    outcome: InvocationOutcome,
    /// Kill the process and start a new one on the next invocation.
    discard_env: bool,
}

impl Ending {
    fn crashed(message: String) -> Self {
        Self {
            result: Err(InvokeError::Crashed(message.clone())),
            outcome: InvocationOutcome::Crashed(message),
            discard_env: true,
        }
    }

    fn timeout(seconds: u64) -> Self {
        Self {
            result: Err(InvokeError::Timeout { seconds }),
            outcome: InvocationOutcome::Timeout,
            discard_env: true,
        }
    }
}

async fn env_event(env: &mut Option<ExecEnv>) -> Option<EnvEvent> {
    match env {
        Some(env) => env.next_event().await,
        None => std::future::pending().await,
    }
}

impl Actor {
    pub(crate) async fn run(mut self) {
        loop {
            let wake = tokio::select! {
                biased;
                _ = &mut self.stop => Wake::Stop,
                command = self.commands.next() => command.map_or(Wake::Stop, Wake::Command),
                event = env_event(&mut self.env) => Wake::Env(event),
            };
            match wake {
                Wake::Stop => break,
                Wake::Env(event) => self.idle_event(event).await,
                Wake::Command(command) => {
                    let (result, stopping) = self.invoke(command.event).await;
                    let _ = command.reply.send(result);
                    let _ = self.done.unbounded_send(self.slot);
                    if stopping {
                        break;
                    }
                }
            }
        }
        self.discard_env().await;
        refuse_queued(&mut self.commands);
    }

    fn status(&self) -> std::sync::MutexGuard<'_, FunctionStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn discard_env(&mut self) {
        if let Some(env) = self.env.take() {
            env.teardown().await;
        }
        self.status().environments.retain(|e| e.slot != self.slot);
    }

    /// Something happened while no invocation was in flight.
    async fn idle_event(&mut self, event: Option<EnvEvent>) {
        match event {
            Some(EnvEvent::Exited(status)) => {
                emit(
                    &self.spec.name,
                    &format!("runtime exited while idle: {status}"),
                );
                self.discard_env().await;
            }
            Some(EnvEvent::InitError {
                error_type,
                error_message,
            }) => {
                emit(
                    &self.spec.name,
                    &format!("init error while idle {error_type}: {error_message}"),
                );
                self.discard_env().await;
            }
            None => self.discard_env().await,
            Some(_) => {}
        }
    }

    /// Runs one invocation; the flag says the actor was asked to stop meanwhile.
    async fn invoke(&mut self, event: Value) -> (Result<Value, InvokeError>, bool) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let name = self.spec.name.clone();
        let timeout = self.spec.timeout;
        let mut stopping = false;
        let mut init_duration = None;
        // Delivery to the runtime (`/next` answered), else when the event was queued for it.
        let mut started: Option<Instant> = None;
        let mut start_printed = false;

        let ending = 'ending: {
            // Cold start: a new process and its Runtime API server.
            if self.env.is_none() {
                match ExecEnv::spawn(&self.spec, Arc::clone(&self.status)).await {
                    Ok(env) => {
                        let replaces = std::mem::replace(&mut self.spawned_before, true);
                        let mut status = self.status();
                        status.cold_starts += 1;
                        status.replaced += u64::from(replaces);
                        status.environments.retain(|e| e.slot != self.slot);
                        status.environments.push(EnvironmentStatus {
                            slot: self.slot,
                            pid: env.pid,
                            runtime_api: env.addr,
                        });
                        status.environments.sort_by_key(|e| e.slot);
                        drop(status);
                        self.env = Some(env);
                    }
                    Err(err) => break 'ending Ending::crashed(format!("{err:#}")),
                }
            }
            let Some(env) = self.env.as_mut() else {
                break 'ending Ending::crashed("no execution environment".to_owned());
            };

            // Init: until the runtime's first `/next`.
            if !env.initialized {
                let init_deadline = tokio::time::Instant::from_std(env.spawned_at + INIT_TIMEOUT);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut self.stop => {
                            stopping = true;
                            break 'ending Ending::crashed(SHUT_DOWN.to_owned());
                        }
                        event = env.next_event() => match event {
                            Some(EnvEvent::NextCalled(at)) => {
                                env.initialized = true;
                                env.max_memory_mb();
                                init_duration = Some(at.saturating_duration_since(env.spawned_at));
                                break;
                            }
                            Some(EnvEvent::InitError { error_type, error_message }) => {
                                let elapsed = env.spawned_at.elapsed();
                                init_duration = Some(elapsed);
                                env.max_memory_mb();
                                emit(&name, &format!("INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: {error_type}", millis(elapsed)));
                                break 'ending init_error(error_type, error_message);
                            }
                            Some(EnvEvent::Exited(status)) => {
                                env.exited();
                                let elapsed = env.spawned_at.elapsed();
                                init_duration = Some(elapsed);
                                emit(&name, &format!("Error: Runtime exited with error: {status}"));
                                emit(&name, &format!("INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: Runtime.ExitError", millis(elapsed)));
                                break 'ending Ending::crashed(status);
                            }
                            None => {
                                break 'ending Ending::crashed("runtime API closed".to_owned());
                            }
                            Some(_) => {}
                        },
                        _ = tokio::time::sleep_until(init_deadline) => {
                            init_duration = Some(env.spawned_at.elapsed());
                            break 'ending Ending::timeout(INIT_TIMEOUT.as_secs());
                        }
                    }
                }
            }

            // Invoke: hand the event to `/next` and wait for the answer.
            emit(&name, &start_line(&request_id));
            start_printed = true;
            let queued = Instant::now();
            started = Some(queued);
            let delivery = Delivery {
                request_id: request_id.clone(),
                event: serde_json::to_vec(&event).unwrap_or_default(),
                trace_id: trace_id(),
            };
            if !env.deliver(delivery) {
                break 'ending Ending::crashed("runtime API closed".to_owned());
            }
            let mut deadline = queued + timeout;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut self.stop => {
                        stopping = true;
                        break 'ending Ending::crashed(SHUT_DOWN.to_owned());
                    }
                    event = env.next_event() => match event {
                        Some(EnvEvent::Delivered { request_id: id, at }) if id == request_id => {
                            started = Some(at);
                            deadline = at + timeout;
                        }
                        Some(EnvEvent::Response { request_id: id, result }) if id == request_id => {
                            break 'ending match result {
                                Ok(value) => Ending {
                                    result: Ok(value),
                                    outcome: InvocationOutcome::Success,
                                    discard_env: false,
                                },
                                Err((error_type, error_message)) => function_error(error_type, error_message),
                            };
                        }
                        Some(EnvEvent::Error { request_id: id, error_type, error_message }) if id == request_id => {
                            break 'ending function_error(error_type, error_message);
                        }
                        Some(EnvEvent::InitError { error_type, error_message }) => {
                            break 'ending init_error(error_type, error_message);
                        }
                        Some(EnvEvent::Exited(status)) => {
                            env.exited();
                            emit(&name, &format!("RequestId: {request_id} Error: Runtime exited with error: {status}"));
                            emit(&name, "Runtime.ExitError");
                            break 'ending Ending::crashed(status);
                        }
                        None => break 'ending Ending::crashed("runtime API closed".to_owned()),
                        Some(_) => {}
                    },
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                        emit(&name, &format!(
                            "{} {request_id} Task timed out after {:.2} seconds",
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            timeout.as_secs_f64(),
                        ));
                        break 'ending Ending::timeout(timeout_seconds(timeout));
                    }
                }
            }
        };

        let ended = Instant::now();
        let max_memory_mb = self.env.as_mut().map_or(0, ExecEnv::max_memory_mb);
        if ending.discard_env {
            self.discard_env().await;
        }
        let report = InvocationReport {
            request_id: request_id.clone(),
            function: name.clone(),
            environment: self.slot,
            duration: started.map_or(Duration::ZERO, |s| ended.saturating_duration_since(s)),
            init_duration,
            max_memory_mb,
            memory_size_mb: self.spec.memory_mb,
            outcome: ending.outcome,
        };
        if !start_printed {
            // Failed before delivery (init): Lambda still opens and closes the request.
            emit(&name, &start_line(&request_id));
        }
        let end = format!("END RequestId: {request_id}");
        let report_line = report.report_line();
        emit(&name, &end);
        emit(&name, &report_line);
        let mut status = self.status();
        status.invocations += 1;
        // Lambda writes these three platform lines to the function's log group.
        status.log_bytes +=
            (start_line(&request_id).len() + end.len() + report_line.len() + 3) as u64;
        drop(status);
        self.reports.push(report);
        (ending.result, stopping)
    }
}

fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: $LATEST")
}

fn function_error(error_type: String, error_message: String) -> Ending {
    Ending {
        outcome: InvocationOutcome::FunctionError {
            error_type: error_type.clone(),
        },
        result: Err(InvokeError::FunctionError {
            error_type,
            error_message,
        }),
        discard_env: false,
    }
}

/// `/init/error`: the invocation fails as a crash, the process is replaced.
fn init_error(error_type: String, error_message: String) -> Ending {
    Ending {
        result: Err(InvokeError::Crashed(format!(
            "init error {error_type}: {error_message}"
        ))),
        outcome: InvocationOutcome::InitError {
            error_type,
            error_message,
        },
        discard_env: true,
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whole seconds, rounded up (Lambda timeouts are whole seconds anyway).
fn timeout_seconds(timeout: Duration) -> u64 {
    let secs = timeout.as_secs();
    if timeout.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// An X-Ray style trace header: `Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn trace_id() -> String {
    let epoch = chrono::Utc::now().timestamp();
    format!(
        "Root=1-{epoch:08x}-{:012x}{:012x};Parent={:016x};Sampled=0",
        fastrand::u64(..1 << 48),
        fastrand::u64(..1 << 48),
        fastrand::u64(..),
    )
}
