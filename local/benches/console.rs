//! The console on the local stack (release build): first-load time, and the time from ingest's
//! `202` to the score on an open leaderboard page. Runs `console/e2e/measure.mjs` in headless
//! Chromium against the stack and prints its figures.
//!
//! Run: `cargo bench -p tally-local --bench console` (env `SAMPLES`, default 30; `LOADS`, 10).

use anyhow::{bail, Result};
use tally_local::up::{LocalStack, UpOptions, LOCAL_INGEST_KEY, LOCAL_READ_KEY};

#[tokio::main]
async fn main() -> Result<()> {
    let stack = LocalStack::start(UpOptions {
        release: true,
        ..UpOptions::new(tally_local::repo_root().join("template.yaml"))
    })
    .await?;
    let console = tally_local::repo_root().join("console");
    let output = tokio::process::Command::new("node")
        .arg("e2e/measure.mjs")
        .current_dir(&console)
        .env("TALLY_URL", format!("http://{}", stack.api_addr))
        .env("TALLY_READ_KEY", LOCAL_READ_KEY)
        .env("TALLY_INGEST_KEY", LOCAL_INGEST_KEY)
        .kill_on_drop(true)
        .output()
        .await;
    stack.stop().await;
    let output = output?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("measure.mjs failed ({})", output.status);
    }
    println!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}
