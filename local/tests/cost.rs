//! `tally-local cost` end to end: both client profiles through a metered local stack, every
//! event stored exactly once through the metering proxies, and the bill counting what the
//! pipeline did (the events table's writes, the HTTP API's requests, SQS, Lambda, Firehose).

use anyhow::{ensure, Result};
use tally_local::cost::{run, Architecture, Bill, CostOptions, Profile};
use tally_local::meter::Unit;

const EVENTS: u32 = 200;

fn units(bill: &Bill, pick: impl Fn(&Unit) -> bool) -> f64 {
    bill.lines
        .iter()
        .filter(|l| pick(&l.unit))
        .map(|l| l.units_per_million)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_profiles_are_billed_from_what_the_pipeline_did() -> Result<()> {
    let bills = run(&CostOptions {
        template: tally_local::repo_root().join("template.yaml"),
        release: false,
        events: EVENTS,
        rate: 100,
        rollup_window: 2,
        architecture: Architecture::Arm64,
        profiles: vec![Profile::Batch, Profile::Single],
    })
    .await?;
    ensure!(bills.len() == 2, "{bills:?}");
    let (batch, single) = (&bills[0], &bills[1]);
    for bill in &bills {
        let report = bill.render();
        // The publisher posts for EVENTS / rate seconds; a slow debug stack on a busy machine
        // takes fewer (a single-event run got 149 of 200). The bill is per event measured.
        ensure!(
            bill.events >= 20,
            "accepted {} of {EVENTS}\n{report}",
            bill.events
        );
        // Every stored event is one write of at least one unit to the events table, and one to
        // its hour index; both counted by table and by index through the proxy.
        let table_writes = units(
            bill,
            |u| matches!(u, Unit::DynamoWrite(t) if t.ends_with("EventsTable")),
        );
        ensure!(table_writes >= 900_000.0, "{report}");
        let hour_index = units(
            bill,
            |u| matches!(u, Unit::DynamoWrite(t) if t.ends_with("EventsTable/byHourShard")),
        );
        ensure!(hour_index >= 900_000.0, "{report}");
        for (unit, what) in [
            (Unit::SqsRequests, "SQS"),
            (Unit::LambdaRequests, "Lambda requests"),
            (Unit::LambdaGbSeconds, "GB-seconds"),
            (Unit::LambdaLogBytes, "log bytes"),
            (Unit::FirehoseBytes, "Firehose"),
            (Unit::AccessLogBytes, "access logs"),
        ] {
            ensure!(units(bill, |u| *u == unit) > 0.0, "no {what}\n{report}");
        }
        // The counters the check reads are not part of an event's cost.
        ensure!(
            !bill.by_caller.iter().any(|(c, _)| c == "AdminFunction"),
            "{report}"
        );
        ensure!(bill.total() > 0.0 && bill.total() < 100.0, "{report}");
    }
    // Single events: one request each (TikTok's through its webhook); batches: about fifty
    // events a request (the TikTok share goes to the webhook as a second request). Per million
    // events is a scaled float: one request an event may come out a hair over a million.
    let requests = |bill: &Bill| units(bill, |u| *u == Unit::ApiRequests);
    ensure!(
        (900_000.0..=1_000_000.001).contains(&requests(single)),
        "{}",
        single.render()
    );
    ensure!(
        (10_000.0..=40_000.0).contains(&requests(batch)),
        "{}",
        batch.render()
    );
    // Packing: a batch client's events share SQS messages and ingest invocations.
    let sqs = |bill: &Bill| units(bill, |u| *u == Unit::SqsRequests);
    ensure!(
        sqs(batch) * 5.0 < sqs(single),
        "{}\n{}",
        batch.render(),
        single.render()
    );
    Ok(())
}
