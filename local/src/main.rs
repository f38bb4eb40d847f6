//! `tally-local`: run all of Tally on one machine, without Docker or an AWS account.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tally_local::cost::{CostOptions, Profile};
use tally_local::publish::{publish, verify, PublishOptions, Summary};
use tally_local::seed::{seed_over_http, SeedOptions};
use tally_local::up::{shutdown_signal, LocalStack, UpOptions, STOP_GRACE};

#[derive(Parser)]
#[command(name = "tally-local", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack and serve the HTTP API until Ctrl-C.
    Up {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:3000")]
        api: SocketAddr,
        /// Address of the WebSocket API (the console's live updates).
        #[arg(long, default_value = "127.0.0.1:3001")]
        live: SocketAddr,
        /// Keep table data here between runs (default: fresh every run).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The SAM template to run.
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// Build and run release binaries.
        #[arg(long)]
        release: bool,
        /// Template parameter override, `Name=Value` (repeatable).
        #[arg(long = "parameter", value_parser = parse_parameter)]
        parameters: Vec<(String, String)>,
        /// Cargo features for the function build (tests use `process/faults`).
        #[arg(long = "cargo-feature", hide = true)]
        cargo_features: Vec<String>,
        /// Once started, store this many days of history (1–30) for the query routes.
        #[arg(long)]
        seed_days: Option<u32>,
        /// Events per seeded day.
        #[arg(long, default_value_t = SeedOptions::default().events_per_day)]
        seed_events_per_day: u32,
        /// Most execution environments of one function at once (a function's
        /// ReservedConcurrentExecutions may lower it).
        #[arg(long, default_value_t = tally_local::up::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=64))]
        concurrency: u32,
        /// Seconds an idle execution environment is kept (the last one of a function stays).
        #[arg(long, default_value_t = tally_local::runtime::DEFAULT_IDLE_TIMEOUT.as_secs())]
        idle_seconds: u64,
    },
    /// Post realistic traffic to a running stack and report what it accepted.
    Publish {
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        api: String,
        /// Events per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Distinct leads of the canonical events.
        #[arg(long, default_value_t = 3000)]
        leads: u32,
        /// Events per request.
        #[arg(long, default_value_t = 10)]
        batch: u32,
        /// Share of events repeating an earlier eventId.
        #[arg(long, default_value_t = 0.05)]
        duplicates: f64,
        /// Share of events stamped hours to days in the past.
        #[arg(long, default_value_t = 0.05)]
        late: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = tally_local::up::LOCAL_INGEST_KEY)]
        key: String,
        #[arg(long, default_value = tally_local::up::LOCAL_TIKTOK_SECRET)]
        tiktok_secret: String,
        /// Admin key, to read the pipeline counters that prove every event was stored once.
        #[arg(long, default_value = tally_local::up::LOCAL_ADMIN_KEY)]
        admin_key: String,
        /// Skip waiting for the pipeline and checking what it stored.
        #[arg(long)]
        no_verify: bool,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
    },
    /// Run a reference workload through a metered local stack and print what a million events
    /// cost at list prices, item by item.
    Cost {
        /// The SAM template to run.
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// Build and run release binaries (Lambda's durations, hence GB-seconds, are closer).
        #[arg(long)]
        release: bool,
        /// Events posted per profile.
        #[arg(long, default_value_t = 6000)]
        events: u32,
        /// Events per second offered.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// The rollup's tumbling window in seconds (the template's RollupWindowSeconds).
        #[arg(long, default_value_t = 60)]
        rollup_window: u32,
        /// Lambda architecture to price (the template's Architecture parameter).
        #[arg(long, default_value = "arm64")]
        architecture: tally_local::cost::Architecture,
        /// Profiles to run: single, batch (repeatable; default both).
        #[arg(long = "profile", value_parser = parse_profile)]
        profiles: Vec<Profile>,
    },
    /// Fire a schedule of a running stack now.
    Trigger {
        /// The schedule's name (its event name in the template, or `Name`).
        name: String,
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        api: String,
    },
}

/// `path` as given when absolute, else under the repository's root.
fn in_repo(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        tally_local::repo_root().join(path)
    }
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    match s {
        "single" => Ok(Profile::Single),
        "batch" => Ok(Profile::Batch),
        other => Err(format!("unknown profile {other} (single or batch)")),
    }
}

fn parse_parameter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected Name=Value".to_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOCAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    match Cli::parse().command {
        Command::Up {
            api,
            live,
            state_dir,
            template,
            release,
            parameters,
            cargo_features,
            seed_days,
            seed_events_per_day,
            concurrency,
            idle_seconds,
        } => {
            let template = in_repo(template);
            let stack = LocalStack::start(UpOptions {
                api_addr: api,
                live_addr: live,
                state_dir,
                template,
                release,
                parameters,
                cargo_features,
                concurrency,
                idle_timeout: std::time::Duration::from_secs(idle_seconds.max(1)),
                meter: None,
                schedules: true,
            })
            .await?;
            println!("{}", stack.banner());
            if let Some(days) = seed_days {
                let options = SeedOptions {
                    days,
                    events_per_day: seed_events_per_day,
                    ..SeedOptions::default()
                };
                let api = format!("http://{}", stack.api_addr);
                println!(
                    "tally-local: seeding {days} days of {seed_events_per_day} events a day through {api}/v1/events/batch…"
                );
                tokio::spawn(async move {
                    match seed_over_http(&api, tally_local::up::LOCAL_INGEST_KEY, &options).await {
                        Ok(r) => println!(
                            "tally-local: posted {} events from {} to {} in {:.1} s; they are stored as the queue drains and rolled up as their windows close",
                            r.events,
                            r.from.to_rfc3339(),
                            r.to.to_rfc3339(),
                            r.elapsed.as_secs_f64()
                        ),
                        Err(e) => eprintln!("tally-local: seeding failed: {e:#}"),
                    }
                });
            }
            shutdown_signal().await;
            println!("tally-local: stopping…");
            if tokio::time::timeout(STOP_GRACE, stack.stop())
                .await
                .is_err()
            {
                eprintln!("tally-local: graceful stop took longer than {STOP_GRACE:?}; exiting");
            }
            println!("tally-local: stopped");
            Ok(())
        }
        Command::Publish {
            api,
            rate,
            duration,
            leads,
            batch,
            duplicates,
            late,
            seed,
            key,
            tiktok_secret,
            admin_key,
            no_verify,
            in_flight,
        } => {
            let options = PublishOptions {
                api: api.trim_end_matches('/').to_owned(),
                ingest_key: key,
                tiktok_secret,
                rate,
                duration: Duration::from_secs(duration),
                leads,
                batch,
                duplicates,
                late,
                seed,
                max_in_flight: in_flight.max(1),
            };
            println!("publishing {rate} events/s for {duration} s to {api} ({leads} leads, batches of {batch})");
            let client = reqwest::Client::new();
            let before = if no_verify {
                None
            } else {
                Some(Summary::read(&client, &options.api, &admin_key).await?)
            };
            let started = std::time::Instant::now();
            let report = publish(&options).await?;
            println!(
                "requests {} ({} failed) in {:.1} s: {:.1} requests/s, {:.0} events/s; accepted {}, rejected {}, duplicates sent {}",
                report.requests,
                report.failed_requests,
                report.elapsed.as_secs_f64(),
                report.requests_per_second(),
                report.events_per_second(),
                report.accepted,
                report.rejected,
                report.duplicates_sent
            );
            let Some(before) = before else {
                return Ok(());
            };
            println!("waiting for the pipeline to store every accepted event…");
            let found = verify(
                &options.api,
                &admin_key,
                &before,
                started,
                &report,
                Duration::from_secs(600),
            )
            .await?;
            println!("{}", found.summary(&report));
            if found.exactly_once {
                println!("every accepted event stored exactly once");
                Ok(())
            } else {
                Err(anyhow!(
                    "not exactly once: {} distinct ids accepted but {} stored; {} repeats accepted but {} duplicates counted",
                    report.distinct_accepted,
                    found.delta.processed,
                    report.accepted - report.distinct_accepted,
                    found.delta.duplicates
                ))
            }
        }
        Command::Cost {
            template,
            release,
            events,
            rate,
            rollup_window,
            architecture,
            profiles,
        } => {
            let template = in_repo(template);
            let profiles = if profiles.is_empty() {
                vec![Profile::Batch, Profile::Single]
            } else {
                profiles
            };
            let bills = tally_local::cost::run(&CostOptions {
                template,
                release,
                events,
                rate,
                rollup_window: rollup_window.clamp(1, 900),
                architecture,
                profiles,
            })
            .await?;
            for bill in &bills {
                println!("{}", bill.render());
            }
            Ok(())
        }
        Command::Trigger { name, api } => {
            let url = format!("{}/_local/schedules/{name}", api.trim_end_matches('/'));
            let response = reqwest::Client::new()
                .post(&url)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            println!("{body}");
            if status.is_success() {
                Ok(())
            } else {
                Err(anyhow!("{status}"))
            }
        }
    }
}
