//! Per-invocation figures (Lambda's `START`/`END`/`REPORT` platform lines) and where they go.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;

/// How many reports [`super::Runtimes::reports`] keeps (oldest dropped first).
pub(crate) const REPORTS_KEPT: usize = 10_000;

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// The runtime posted `/invocation/{id}/response`.
    Success,
    /// The runtime posted `/invocation/{id}/error` (or the response was too large).
    FunctionError { error_type: String },
    /// No answer within the function's timeout; the process was killed.
    Timeout,
    /// The runtime posted `/init/error`; the process was replaced.
    InitError {
        error_type: String,
        error_message: String,
    },
    /// The process exited, could not be started, or the emulator shut down; the text says how
    /// (for an exit, its status, e.g. `exit status: 3`).
    Crashed(String),
}

/// The figures Lambda prints in its `REPORT` line, for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationReport {
    pub request_id: String,
    pub function: String,
    /// Which of the function's execution environments ran it (numbered from 1 in start order;
    /// a process replaced after a crash keeps its environment's number).
    pub environment: u64,
    /// From delivery of the event (the runtime's `/next` answered) to the runtime's answer, the
    /// timeout, or the crash.
    pub duration: Duration,
    /// Only on the first invocation of a process (a cold start): from spawn until the runtime's
    /// first `/next` call.
    pub init_duration: Option<Duration>,
    /// Peak resident set size of the process (`VmHWM`), in MB; the last value read when the
    /// process was already gone.
    pub max_memory_mb: u64,
    /// The configured memory size.
    pub memory_size_mb: u32,
    pub outcome: InvocationOutcome,
}

impl InvocationReport {
    /// Whether this invocation started a new process.
    pub fn cold_start(&self) -> bool {
        self.init_duration.is_some()
    }

    /// Lambda bills the duration rounded up to the millisecond.
    pub fn billed_duration_ms(&self) -> u64 {
        let micros = self.duration.as_micros();
        u64::try_from(micros.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// The `REPORT` line exactly as Lambda writes it (without the `[function] ` prefix).
    pub fn report_line(&self) -> String {
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            self.request_id,
            millis(self.duration),
            self.billed_duration_ms(),
            self.memory_size_mb,
            self.max_memory_mb,
        );
        if let Some(init) = self.init_duration {
            line.push_str(&format!("\tInit Duration: {:.2} ms", millis(init)));
        }
        match &self.outcome {
            InvocationOutcome::Success | InvocationOutcome::FunctionError { .. } => {}
            InvocationOutcome::Timeout => line.push_str("\tStatus: timeout"),
            InvocationOutcome::InitError { .. } => {
                line.push_str("\tStatus: error\tError Type: Runtime.InitError")
            }
            InvocationOutcome::Crashed(_) => {
                line.push_str("\tStatus: error\tError Type: Runtime.ExitError")
            }
        }
        line
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Write one line to our stdout as `[<function>] <line>`; a closed stdout is ignored.
pub(crate) fn emit(function: &str, line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{function}] {line}");
    let _ = out.flush();
}

/// Peak RSS (`VmHWM`) of a live process, in kB.
pub(crate) fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmHWM:")?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// kB → MB (MiB), rounded up like Lambda's figure never under-reports.
pub(crate) fn kb_to_mb(kb: u64) -> u64 {
    kb.div_ceil(1024)
}

#[derive(Default)]
struct ReportLogInner {
    kept: VecDeque<InvocationReport>,
    subscribers: Vec<mpsc::UnboundedSender<InvocationReport>>,
}

/// Shared sink of reports: the last [`REPORTS_KEPT`] plus live subscribers.
#[derive(Clone, Default)]
pub(crate) struct ReportLog {
    inner: Arc<Mutex<ReportLogInner>>,
}

impl ReportLog {
    fn lock(&self) -> MutexGuard<'_, ReportLogInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, report: InvocationReport) {
        let mut inner = self.lock();
        inner
            .subscribers
            .retain(|tx| tx.unbounded_send(report.clone()).is_ok());
        if inner.kept.len() == REPORTS_KEPT {
            inner.kept.pop_front();
        }
        inner.kept.push_back(report);
    }

    pub(crate) fn all(&self) -> Vec<InvocationReport> {
        self.lock().kept.iter().cloned().collect()
    }

    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<InvocationReport> {
        let (tx, rx) = mpsc::unbounded();
        self.lock().subscribers.push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: InvocationOutcome, init_duration: Option<Duration>) -> InvocationReport {
        InvocationReport {
            request_id: "8f507cfc-example".to_owned(),
            function: "f".to_owned(),
            environment: 1,
            duration: Duration::from_micros(12_340),
            init_duration,
            max_memory_mb: 18,
            memory_size_mb: 256,
            outcome,
        }
    }

    #[test]
    fn report_line_is_lambdas() {
        let cold = report(
            InvocationOutcome::Success,
            Some(Duration::from_micros(45_670)),
        );
        assert_eq!(
            cold.report_line(),
            "REPORT RequestId: 8f507cfc-example\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 256 MB\tMax Memory Used: 18 MB\tInit Duration: 45.67 ms"
        );
        let warm = report(InvocationOutcome::Success, None);
        assert_eq!(
            warm.report_line(),
            "REPORT RequestId: 8f507cfc-example\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 256 MB\tMax Memory Used: 18 MB"
        );
        assert!(report(InvocationOutcome::Timeout, None)
            .report_line()
            .ends_with("Max Memory Used: 18 MB\tStatus: timeout"));
    }

    #[test]
    fn billed_duration_rounds_up_to_the_millisecond() {
        let mut r = report(InvocationOutcome::Success, None);
        r.duration = Duration::from_millis(13);
        assert_eq!(r.billed_duration_ms(), 13);
        r.duration = Duration::from_micros(13_001);
        assert_eq!(r.billed_duration_ms(), 14);
    }

    #[test]
    fn memory_figures() {
        assert_eq!(kb_to_mb(18_432), 18);
        assert_eq!(kb_to_mb(18_433), 19);
        assert!(peak_rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
