//! The Lambda Runtime API emulator against real processes: a Python fixture runtime
//! (`tests/fixtures/echo_lambda.py`) and, when it has been built, Tally's `process` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::json;
use tally_local::invoke::{InvokeError, Invoker};
use tally_local::runtime::{FunctionSpec, InvocationOutcome, InvocationReport, Runtimes};

fn fixture() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo_lambda.py");
    let mut permissions = std::fs::metadata(&path)
        .with_context(|| format!("{}", path.display()))?
        .permissions();
    if permissions.mode() & 0o111 == 0 {
        permissions.set_mode(0o755);
        std::fs::set_permissions(&path, permissions)?;
    }
    Ok(path)
}

fn spec(name: &str, env: &[(&str, &str)]) -> Result<FunctionSpec> {
    let mut spec = FunctionSpec::new(name, fixture()?);
    spec.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.memory_mb = 256;
    Ok(spec)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn gone_within(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

fn reports_of(runtimes: &Runtimes, function: &str) -> Vec<InvocationReport> {
    runtimes
        .reports()
        .into_iter()
        .filter(|r| r.function == function)
        .collect()
}

fn last_report(runtimes: &Runtimes, function: &str) -> Result<InvocationReport> {
    reports_of(runtimes, function)
        .pop()
        .context("no report for the function")
}

fn pid_of(runtimes: &Runtimes, function: &str) -> Result<u32> {
    runtimes
        .status(function)
        .and_then(|s| s.pid())
        .context("no running process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_with_report_figures() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("echo", &[])?])?;
    assert_eq!(
        runtimes.status("echo").and_then(|s| s.pid()),
        None,
        "lazy start"
    );

    let answer = runtimes.invoke("echo", json!({"echo": {"n": 1}})).await?;
    assert_eq!(answer, json!({"echo": {"n": 1}}));
    let cold = last_report(&runtimes, "echo")?;
    let init = cold
        .init_duration
        .context("the first invocation is a cold start")?;
    assert!(
        init > Duration::ZERO && init < Duration::from_secs(10),
        "{init:?}"
    );
    assert!(cold.duration > Duration::ZERO, "{:?}", cold.duration);
    assert!(cold.max_memory_mb > 0, "VmHWM read: {}", cold.max_memory_mb);
    assert_eq!(cold.memory_size_mb, 256);
    assert_eq!(cold.outcome, InvocationOutcome::Success);

    let line = cold.report_line();
    let expected_start = format!("REPORT RequestId: {}\tDuration: ", cold.request_id);
    assert!(line.starts_with(&expected_start), "{line}");
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert!(
        fields[1].ends_with(" ms") && fields[1].contains('.'),
        "{line}"
    );
    assert_eq!(
        fields[2],
        format!("Billed Duration: {} ms", cold.billed_duration_ms())
    );
    assert_eq!(fields[3], "Memory Size: 256 MB");
    assert_eq!(
        fields[4],
        format!("Max Memory Used: {} MB", cold.max_memory_mb)
    );
    assert!(
        fields[5].starts_with("Init Duration: ") && fields[5].ends_with(" ms"),
        "{line}"
    );

    let answer = runtimes.invoke("echo", json!({"echo": "again"})).await?;
    assert_eq!(answer, json!({"echo": "again"}));
    let warm = last_report(&runtimes, "echo")?;
    assert_eq!(warm.init_duration, None, "no init on a warm invocation");
    assert!(!warm.report_line().contains("Init Duration"));
    assert_ne!(warm.request_id, cold.request_id);

    // Peak RSS follows the process.
    runtimes.invoke("echo", json!({"allocate_mb": 64})).await?;
    let big = last_report(&runtimes, "echo")?;
    assert!(
        big.max_memory_mb >= cold.max_memory_mb + 60,
        "{} vs {}",
        big.max_memory_mb,
        cold.max_memory_mb
    );

    let status = runtimes.status("echo").context("status")?;
    assert_eq!(
        (status.cold_starts, status.invocations, status.restarts()),
        (1, 3, 0)
    );
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_environment_and_invocation_headers() -> Result<()> {
    let mut spec = spec(
        "envcheck",
        &[("AWS_REGION", "eu-west-1"), ("CUSTOM", "yes")],
    )?;
    spec.timeout = Duration::from_secs(7);
    let runtimes = Runtimes::start(vec![spec])?;
    let names = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "CUSTOM",
    ];
    let answer = runtimes.invoke("envcheck", json!({"env": names})).await?;
    let env = &answer["env"];
    let api = runtimes
        .status("envcheck")
        .and_then(|s| s.runtime_api())
        .context("api")?;
    assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], api.to_string());
    assert!(api.ip().is_loopback());
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "envcheck");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/envcheck");
    let stream = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        .as_str()
        .context("log stream")?;
    assert!(stream.contains("/[$LATEST]"), "{stream}");
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "eu-west-1");
    assert_eq!(env["_HANDLER"], "bootstrap");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    assert_eq!(env["LAMBDA_TASK_ROOT"], root.to_string_lossy().as_ref());
    assert_eq!(env["CUSTOM"], "yes");

    let before = chrono::Utc::now().timestamp_millis();
    let answer = runtimes
        .invoke("envcheck", json!({"context": true}))
        .await?;
    let headers = &answer["headers"];
    let request_id = headers["lambda-runtime-aws-request-id"]
        .as_str()
        .context("request id")?;
    assert_eq!(request_id, last_report(&runtimes, "envcheck")?.request_id);
    let deadline: i64 = headers["lambda-runtime-deadline-ms"]
        .as_str()
        .context("deadline")?
        .parse()?;
    assert!(
        deadline >= before + 6_000 && deadline <= before + 8_000,
        "{deadline} vs {before}"
    );
    assert_eq!(
        headers["lambda-runtime-invoked-function-arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:envcheck"
    );
    let trace = headers["lambda-runtime-trace-id"]
        .as_str()
        .context("trace")?;
    assert!(trace.starts_with("Root=1-"), "{trace}");
    assert_eq!(answer["cwd"], root.to_string_lossy().as_ref());
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_error_is_mapped_and_the_process_stays() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("failing", &[])?])?;
    let err = runtimes.invoke("failing", json!({"fail": "boom"})).await;
    assert_eq!(
        err,
        Err(InvokeError::FunctionError {
            error_type: "Fixture.Error".into(),
            error_message: "boom".into()
        })
    );
    let report = last_report(&runtimes, "failing")?;
    assert_eq!(
        report.outcome,
        InvocationOutcome::FunctionError {
            error_type: "Fixture.Error".into()
        }
    );
    assert!(report.init_duration.is_some());
    assert_eq!(
        runtimes.invoke("failing", json!({"echo": 2})).await?,
        json!({"echo": 2})
    );
    assert_eq!(runtimes.restart_count("failing"), Some(0));
    assert_eq!(last_report(&runtimes, "failing")?.init_duration, None);
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_process_and_the_next_call_cold_starts() -> Result<()> {
    let mut spec = spec("slow", &[])?;
    spec.timeout = Duration::from_secs(1);
    let runtimes = Runtimes::start(vec![spec])?;
    runtimes.invoke("slow", json!({"echo": "warm up"})).await?;
    let first_pid = pid_of(&runtimes, "slow")?;

    let started = Instant::now();
    let err = runtimes.invoke("slow", json!({"sleep": 30})).await;
    let waited = started.elapsed();
    assert_eq!(err, Err(InvokeError::Timeout { seconds: 1 }));
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(
        !alive(first_pid),
        "the timed-out process is killed and reaped"
    );
    assert_eq!(runtimes.status("slow").and_then(|s| s.pid()), None);
    let report = last_report(&runtimes, "slow")?;
    assert_eq!(report.outcome, InvocationOutcome::Timeout);
    assert!(
        report.duration >= Duration::from_millis(990),
        "{:?}",
        report.duration
    );
    assert_eq!(report.init_duration, None);
    assert!(report.report_line().ends_with("\tStatus: timeout"));

    assert_eq!(
        runtimes.invoke("slow", json!({"echo": 3})).await?,
        json!({"echo": 3})
    );
    let report = last_report(&runtimes, "slow")?;
    assert!(
        report.init_duration.is_some(),
        "cold start after the timeout"
    );
    assert_ne!(pid_of(&runtimes, "slow")?, first_pid);
    assert_eq!(runtimes.restart_count("slow"), Some(1));
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_invocation_and_recovery() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("crashy", &[])?])?;
    runtimes.invoke("crashy", json!({"echo": 0})).await?;
    let first_pid = pid_of(&runtimes, "crashy")?;

    match runtimes.invoke("crashy", json!({"exit": 3})).await {
        Err(InvokeError::Crashed(status)) => assert!(status.contains("exit status: 3"), "{status}"),
        other => bail!("expected a crash, got {other:?}"),
    }
    assert!(!alive(first_pid));
    let report = last_report(&runtimes, "crashy")?;
    assert!(
        matches!(report.outcome, InvocationOutcome::Crashed(_)),
        "{report:?}"
    );
    assert!(report.max_memory_mb > 0, "last VmHWM read is kept");

    assert_eq!(
        runtimes.invoke("crashy", json!({"echo": 4})).await?,
        json!({"echo": 4})
    );
    assert!(last_report(&runtimes, "crashy")?.init_duration.is_some());
    assert_eq!(runtimes.restart_count("crashy"), Some(1));
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_before_the_first_next_is_a_crash() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("noinit", &[("EXIT_AT_INIT", "7")])?])?;
    match runtimes.invoke("noinit", json!({"echo": 1})).await {
        Err(InvokeError::Crashed(status)) => assert!(status.contains("exit status: 7"), "{status}"),
        other => bail!("expected a crash, got {other:?}"),
    }
    // Restarted (and failing again) on the next invocation.
    assert!(matches!(
        runtimes.invoke("noinit", json!({"echo": 1})).await,
        Err(InvokeError::Crashed(_))
    ));
    assert_eq!(runtimes.status("noinit").map(|s| s.cold_starts), Some(2));
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_error_fails_the_invocation_and_restarts() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("badinit", &[("FAIL_INIT", "1")])?])?;
    for attempt in 1..=2u64 {
        match runtimes.invoke("badinit", json!({"echo": 1})).await {
            Err(InvokeError::Crashed(message)) => {
                assert!(
                    message.contains("Fixture.InitError") && message.contains("FAIL_INIT is set"),
                    "{message}"
                )
            }
            other => bail!("expected an init failure, got {other:?}"),
        }
        let report = last_report(&runtimes, "badinit")?;
        assert_eq!(
            report.outcome,
            InvocationOutcome::InitError {
                error_type: "Fixture.InitError".into(),
                error_message: "FAIL_INIT is set".into()
            }
        );
        assert!(report.init_duration.is_some());
        assert!(report
            .report_line()
            .ends_with("\tStatus: error\tError Type: Runtime.InitError"));
        assert_eq!(
            runtimes.status("badinit").map(|s| s.cold_starts),
            Some(attempt)
        );
        assert_eq!(runtimes.status("badinit").and_then(|s| s.pid()), None);
    }
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_are_serialized_and_all_answered() -> Result<()> {
    let runtimes = Arc::new(Runtimes::start(vec![spec("queue", &[])?])?);
    let started = Instant::now();
    let calls = (0..6).map(|i| {
        let runtimes = Arc::clone(&runtimes);
        tokio::spawn(async move {
            runtimes
                .invoke("queue", json!({"sleep": 0.2, "echo": i}))
                .await
        })
    });
    let answers = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer??, json!({"echo": i}));
    }
    assert!(
        elapsed >= Duration::from_millis(1200),
        "one at a time: {elapsed:?}"
    );
    let reports = reports_of(&runtimes, "queue");
    assert_eq!(reports.len(), 6);
    assert_eq!(reports.iter().filter(|r| r.cold_start()).count(), 1);
    for report in &reports {
        assert!(
            report.duration >= Duration::from_millis(190),
            "{:?}",
            report.duration
        );
    }
    assert_eq!(runtimes.status("queue").map(|s| s.cold_starts), Some(1));
    let runtimes = Arc::try_unwrap(runtimes).map_err(|_| anyhow::anyhow!("still shared"))?;
    runtimes.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_process_and_no_port() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("one", &[])?, spec("two", &[])?])?;
    assert_eq!(
        runtimes.functions(),
        vec!["one".to_owned(), "two".to_owned()]
    );
    runtimes
        .invoke("one", json!({"stderr": "to stderr"}))
        .await?;
    runtimes.invoke("two", json!({"echo": 2})).await?;
    let mut running = Vec::new();
    for name in ["one", "two"] {
        let status = runtimes.status(name).context("status")?;
        let pid = status.pid().context("pid")?;
        let api = status.runtime_api().context("api")?;
        assert!(alive(pid));
        assert!(
            std::net::TcpListener::bind(api).is_err(),
            "the Runtime API holds {api}"
        );
        running.push((pid, api));
    }
    runtimes.shutdown().await;
    for (pid, api) in running {
        assert!(!alive(pid), "process {pid} is gone (killed and reaped)");
        std::net::TcpListener::bind(api).with_context(|| format!("{api} is free again"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_fails_the_invocation_in_flight() -> Result<()> {
    let runtimes = Arc::new(Runtimes::start(vec![spec("busy", &[])?])?);
    runtimes.invoke("busy", json!({"echo": 1})).await?;
    let pid = pid_of(&runtimes, "busy")?;
    let in_flight = {
        let runtimes = Arc::clone(&runtimes);
        tokio::spawn(async move { runtimes.invoke("busy", json!({"sleep": 30})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    runtimes.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(in_flight.await?, Err(InvokeError::Crashed(_))));
    assert!(!alive(pid));
    assert!(matches!(
        runtimes.invoke("busy", json!({"echo": 1})).await,
        Err(InvokeError::Crashed(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_the_processes() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("dropped", &[])?])?;
    runtimes.invoke("dropped", json!({"echo": 1})).await?;
    let pid = pid_of(&runtimes, "dropped")?;
    drop(runtimes);
    assert!(
        gone_within(pid, Duration::from_secs(5)).await,
        "process {pid} killed on drop"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_function_and_bad_specs() -> Result<()> {
    let runtimes = Runtimes::start(vec![spec("known", &[])?])?;
    assert_eq!(
        runtimes.invoke("unknown", json!({})).await,
        Err(InvokeError::UnknownFunction("unknown".into()))
    );
    assert_eq!(runtimes.status("unknown"), None);
    runtimes.shutdown().await;

    assert!(Runtimes::start(vec![spec("twice", &[])?, spec("twice", &[])?]).is_err());
    let missing = FunctionSpec::new(
        "missing",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nope"),
    );
    assert!(Runtimes::start(vec![missing]).is_err());
    Ok(())
}

/// The real `lambda_runtime` loop: Tally's `process` function, built here if needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_process_binary_answers_an_empty_sqs_batch() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let status =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--locked", "--bin", "process"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .await?;
    anyhow::ensure!(status.success(), "cargo build --bin process failed");
    let binary = target.join("debug/process");
    let mut spec = FunctionSpec::new("process", binary);
    spec.memory_mb = 256;
    spec.env = [
        ("EVENTS_TABLE", "events"),
        ("ANALYTICS_TABLE", "analytics"),
        ("WORK_QUEUE_URL", "http://127.0.0.1:9/queue"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let mut cold_starts = Vec::new();
    for _ in 0..3 {
        let runtimes = Runtimes::start(vec![spec.clone()])?;
        let answer = runtimes.invoke("process", json!({"Records": []})).await?;
        assert_eq!(answer, json!({"batchItemFailures": []}));
        let cold = last_report(&runtimes, "process")?;
        let answer = runtimes.invoke("process", json!({"Records": []})).await?;
        assert_eq!(answer, json!({"batchItemFailures": []}));
        let warm = last_report(&runtimes, "process")?;
        assert_eq!(warm.init_duration, None);
        eprintln!("process cold: {}", cold.report_line());
        eprintln!("process warm: {}", warm.report_line());
        cold_starts.push(cold);
        runtimes.shutdown().await;
    }
    let mut inits: Vec<Duration> = cold_starts.iter().filter_map(|r| r.init_duration).collect();
    ensure!(inits.len() == 3, "every first invocation is a cold start");
    inits.sort();
    eprintln!(
        "process (debug) median init {:.2} ms, max memory {} MB",
        inits[1].as_secs_f64() * 1000.0,
        cold_starts
            .iter()
            .map(|r| r.max_memory_mb)
            .max()
            .unwrap_or(0)
    );
    Ok(())
}

/// Invokes `function` with `events` all at once and returns the answers in order.
async fn invoke_all(
    runtimes: &Arc<Runtimes>,
    function: &str,
    events: Vec<serde_json::Value>,
) -> Result<Vec<serde_json::Value>> {
    let calls = events.into_iter().map(|event| {
        let runtimes = Arc::clone(runtimes);
        let function = function.to_owned();
        tokio::spawn(async move { runtimes.invoke(&function, event).await })
    });
    let mut answers = Vec::new();
    for call in futures::future::join_all(calls).await {
        answers.push(call??);
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_of_one_function_serve_requests_at_once() -> Result<()> {
    let mut two = spec("two", &[])?;
    two.max_concurrency = 2;
    let runtimes = Arc::new(Runtimes::start(vec![two, spec("one", &[])?])?);
    let slow = || json!({"sleep": 0.6, "env": ["AWS_LAMBDA_LOG_STREAM_NAME"]});

    let answers = invoke_all(&runtimes, "two", vec![slow(), slow()]).await?;
    let status = runtimes.status("two").context("status")?;
    assert_eq!(status.peak_busy, 2, "both invocations ran at once");
    assert_eq!(status.cold_starts, 2, "each environment cold-started");
    assert_eq!(status.environments.len(), 2);
    let pids: Vec<Option<u32>> = status.environments.iter().map(|e| e.pid).collect();
    assert!(
        pids.iter().all(Option::is_some) && pids[0] != pids[1],
        "{pids:?}"
    );
    let streams: Vec<&str> = answers
        .iter()
        .filter_map(|a| a["env"]["AWS_LAMBDA_LOG_STREAM_NAME"].as_str())
        .collect();
    assert_eq!(streams.len(), 2);
    assert_ne!(streams[0], streams[1], "one log stream per environment");
    let mut environments: Vec<u64> = reports_of(&runtimes, "two")
        .iter()
        .map(|r| r.environment)
        .collect();
    environments.sort_unstable();
    assert_eq!(environments, [1, 2]);
    assert!(reports_of(&runtimes, "two").iter().all(|r| r.cold_start()));

    // The same burst on a function capped at one environment runs one after the other.
    invoke_all(&runtimes, "one", vec![slow(), slow()]).await?;
    let one = runtimes.status("one").context("status")?;
    assert_eq!((one.peak_busy, one.cold_starts), (1, 1));
    let cold: Vec<bool> = reports_of(&runtimes, "one")
        .iter()
        .map(InvocationReport::cold_start)
        .collect();
    assert_eq!(cold, [true, false]);

    // An idle environment is reused: no third cold start.
    runtimes.invoke("two", json!({"echo": 1})).await?;
    let status = runtimes.status("two").context("status")?;
    assert_eq!((status.cold_starts, status.invocations), (2, 3));
    Arc::try_unwrap(runtimes)
        .map_err(|_| anyhow::anyhow!("runtimes still shared"))?
        .shutdown()
        .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_out_to_the_cap_then_idles_back_to_one_environment() -> Result<()> {
    let mut burst = spec("burst", &[])?;
    burst.max_concurrency = 3;
    burst.idle_timeout = Duration::from_millis(800);
    let runtimes = Arc::new(Runtimes::start(vec![burst])?);

    let events: Vec<_> = (0..7).map(|n| json!({"sleep": 0.4, "echo": n})).collect();
    let answers = invoke_all(&runtimes, "burst", events).await?;
    let echoed: Vec<i64> = answers.iter().filter_map(|a| a["echo"].as_i64()).collect();
    assert_eq!(echoed, [0, 1, 2, 3, 4, 5, 6], "every invocation answered");
    let status = runtimes.status("burst").context("status")?;
    assert_eq!(status.peak_busy, 3, "scaled out to the cap and no further");
    assert_eq!(status.environments_started, 3);
    assert_eq!(status.environments.len(), 3);
    let reports = reports_of(&runtimes, "burst");
    assert_eq!(reports.len(), 7);
    let cold: Vec<u64> = reports
        .iter()
        .filter(|r| r.cold_start())
        .map(|r| r.environment)
        .collect();
    assert_eq!(cold.len(), 3, "one cold start per environment: {cold:?}");
    let pids: Vec<u32> = status.environments.iter().filter_map(|e| e.pid).collect();

    // Idle past the timeout: two environments are shut down, the warmest stays.
    let until = Instant::now() + Duration::from_secs(10);
    while runtimes
        .status("burst")
        .is_some_and(|s| s.environments.len() > 1)
    {
        ensure!(
            Instant::now() < until,
            "still {:?}",
            runtimes.status("burst")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = runtimes.status("burst").context("status")?;
    assert_eq!((status.environments.len(), status.scaled_in), (1, 2));
    let kept = status.pid().context("the kept environment runs")?;
    for pid in pids.iter().filter(|&&p| p != kept) {
        assert!(
            gone_within(*pid, Duration::from_secs(5)).await,
            "{pid} is shut down"
        );
    }
    // It stays: later invocations are warm.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    runtimes.invoke("burst", json!({"echo": "later"})).await?;
    let later = last_report(&runtimes, "burst")?;
    assert!(!later.cold_start());
    assert_eq!(pid_of(&runtimes, "burst")?, kept);
    Arc::try_unwrap(runtimes)
        .map_err(|_| anyhow::anyhow!("runtimes still shared"))?
        .shutdown()
        .await;
    Ok(())
}
