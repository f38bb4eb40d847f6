//! End-to-end: `tally.js` (clients/tally-js) in headless Chromium against the whole local stack.
//!
//! Two page servers on two loopback ports are two origins; the stack's `TrackOrigins` (its CORS
//! configuration) and its local track key allow the first only. `clients/tally-js/e2e/
//! track.e2e.mjs` runs the same page on both: a page view and a form submission flushed with
//! fetch (the first delivery's answer lost, so the batch is retried with its Idempotency-Key), a
//! type the key may not post, then an event left queued that the page hiding sends with
//! sendBeacon. This test checks what was stored: the allowed page's three events once each, and
//! nothing from the other origin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tally::aws::DynamoEventStore;
use tally::scoring::LeadHistory;
use tally_local::up::{LocalStack, UpOptions, LOCAL_TRACK_KEY};

/// `clients/tally-js`, installed from its lockfile and built.
fn built_package() -> Result<PathBuf> {
    let dir = tally_local::repo_root().join("clients").join("tally-js");
    let npm = |args: &[&str]| -> Result<()> {
        let status = std::process::Command::new("npm")
            .args(args)
            .current_dir(&dir)
            .status()
            .with_context(|| format!("running npm {args:?}"))?;
        ensure!(status.success(), "npm {args:?} in clients/tally-js failed");
        Ok(())
    };
    if !dir.join("node_modules/esbuild").exists() {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    npm(&["run", "build"])?;
    Ok(dir)
}

/// Serves a page that loads the script, and the script, on a free loopback port.
async fn page_server(script: String) -> Result<SocketAddr> {
    let page = Html(
        "<!doctype html><html><head><title>Tally tracking test</title>\
         <script src=\"/tally.min.js\"></script></head><body>test page</body></html>",
    );
    let app = Router::new()
        .route("/", get(move || async move { page }))
        .route(
            "/tally.min.js",
            get(move || async move {
                ([("content-type", "text/javascript")], script.clone()).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn chromium() -> Result<String> {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&path).exists() {
        bail!("no Chromium at {path}: install Debian's `chromium` (`.ci/chromium` does), or set CHROMIUM");
    }
    Ok(path)
}

/// The types of the lead's stored events, once `want` of them are there (or the deadline).
async fn stored_types(
    store: &DynamoEventStore,
    lead_id: &str,
    want: usize,
    wait: Duration,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + wait;
    loop {
        let events = store.lead_events(lead_id).await?;
        if events.len() >= want || Instant::now() > deadline {
            let mut types: Vec<String> = events.into_iter().map(|e| e.event_type).collect();
            types.sort();
            return Ok(types);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_js_posts_from_its_origin_and_is_refused_elsewhere() -> Result<()> {
    let chromium = chromium()?;
    let package = built_package()?;
    // The build fails when a script passes 3 KB gzipped.
    let script = std::fs::read_to_string(package.join("dist/tally.min.js"))?;
    let types = std::fs::read_to_string(package.join("dist/tally.d.ts"))?;
    ensure!(
        types.contains("export declare function init(options: TallyOptions): Tally;"),
        "{types}"
    );

    let allowed = page_server(script.clone()).await?;
    let other = page_server(script).await?;
    let allowed_origin = format!("http://{allowed}");
    let stack = LocalStack::start(UpOptions {
        parameters: vec![("TrackOrigins".into(), allowed_origin.clone())],
        ..UpOptions::new(tally_local::repo_root().join("template.yaml"))
    })
    .await?;
    let outcome = async {
        let api = format!("http://{}", stack.api_addr);
        let run = format!("{:x}", fastrand::u64(..));

        // The gateway answers preflights itself, for the allowed origin only.
        let client = reqwest::Client::new();
        let preflight = |origin: &str| {
            client
                .request(reqwest::Method::OPTIONS, format!("{api}/v1/events/batch"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,idempotency-key",
                )
                .send()
        };
        let yes = preflight(&allowed_origin).await?;
        assert_eq!(yes.status().as_u16(), 204);
        assert_eq!(
            yes.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(allowed_origin.as_str())
        );
        let no = preflight(&format!("http://{other}")).await?;
        assert_eq!(no.status().as_u16(), 204);
        assert!(no.headers().get("access-control-allow-origin").is_none());

        let output = tokio::process::Command::new("node")
            .arg("e2e/track.e2e.mjs")
            .current_dir(&package)
            .env("TALLY_API", &api)
            .env("TALLY_TRACK_KEY", LOCAL_TRACK_KEY)
            .env("TALLY_ALLOWED_PAGE", format!("{allowed_origin}/"))
            .env("TALLY_OTHER_PAGE", format!("http://{other}/"))
            .env("TALLY_RUN", &run)
            .env("CHROMIUM", &chromium)
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "the browser steps failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| String::from_utf8_lossy(&output.stdout).into_owned())?;
        let statuses = |page: &str| -> Vec<u64> {
            seen[page]["failures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["status"].as_u64())
                .collect()
        };
        ensure!(seen["allowed"]["errors"] == serde_json::json!([]), "{seen}");
        // The PURCHASE was rejected (207); the batch was delivered twice (the first answer lost).
        assert_eq!(statuses("allowed"), [207], "{seen}");
        assert_eq!(
            seen["allowed"]["failures"][0]["events"], 1,
            "one event rejected: {seen}"
        );
        assert_eq!(seen["allowed"]["deliveries"], 2, "{seen}");
        // No cookie unless the page asks.
        assert_eq!(seen["allowed"]["cookies"], "", "{seen}");
        // The other origin's fetches never got past the preflight.
        let refused = statuses("other");
        ensure!(
            !refused.is_empty() && refused.iter().all(|s| *s == 0),
            "{seen}"
        );

        let store = DynamoEventStore::new(
            &tally_local::sdk_config(&stack.stack.dynamodb_endpoint),
            stack.stack.table("EventsTable")?.to_owned(),
        );
        let visitor = format!("user:visitor-{run}");
        stored_types(&store, &visitor, 3, Duration::from_secs(60)).await?;
        // Settled: a retry or a beacon storing anything twice would show by now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mine = stored_types(&store, &visitor, 3, Duration::ZERO).await?;
        assert_eq!(
            mine,
            ["EMAIL_OPEN", "FORM_SUBMISSION", "PAGE_VIEW"],
            "each once"
        );
        // Its beacon was refused by the API (403: not the key's origin), its fetches by CORS.
        let theirs = stored_types(
            &store,
            &format!("user:intruder-{run}"),
            1,
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(theirs, Vec::<String>::new());
        Ok(())
    }
    .await;
    stack.stop().await;
    outcome
}
