//! Lead scores from the real events stream (DynamoDB Local) through the local stream mapping,
//! scored batch by batch as they arrive, checked against a fold written independently here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tally::aggregation::AggregateStore;
use tally::aws::DynamoLeads;
use tally::event::{normalize, Event, Limits, NormalizeContext};
use tally::scoring::{put_rule, BoardEntry, LeadReader, LeadStore, Rule, RuleStore, ScoreRules};
use tally_tests::stream::{fixture, store_all, workload, Fixture, Handler};

/// The scoring semantics of docs/api.md, spelled out without the library's fold: events in
/// `(timestamp, eventId)` order, `maxPerDay` per type per UTC day, clamped after each event.
fn reference_score(rules: &ScoreRules, events: &[&Event]) -> (i64, u64) {
    let mut sorted: Vec<&Event> = events.to_vec();
    sorted.sort_by(|a, b| (a.timestamp, &a.event_id).cmp(&(b.timestamp, &b.event_id)));
    let mut per_day: HashMap<(String, String), u32> = HashMap::new();
    let mut score = 0i64;
    for e in &sorted {
        let day = e.timestamp.format("%Y-%m-%d").to_string();
        let seen = per_day.entry((day, e.event_type.clone())).or_insert(0);
        let points = match rules.rules.get(&e.event_type) {
            Some(rule) if rule.active && rule.max_per_day.is_none_or(|max| *seen < max) => {
                rule.points
            }
            _ => 0,
        };
        *seen += 1;
        score = (score + points).clamp(rules.min, rules.max);
    }
    (score, sorted.len() as u64)
}

fn expected_by_lead(rules: &ScoreRules, events: &[Event]) -> BTreeMap<String, (i64, u64)> {
    let mut by_lead: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if let Some(lead) = &e.lead_id {
            by_lead.entry(lead.clone()).or_default().push(e);
        }
    }
    by_lead
        .into_iter()
        .map(|(lead, events)| (lead, reference_score(rules, &events)))
        .collect()
}

/// (score, events) of each lead as stored.
async fn stored_scores(
    store: &DynamoLeads,
    leads: &[&str],
) -> Result<BTreeMap<String, (i64, u64)>> {
    Ok(store
        .get_leads(leads)
        .await?
        .into_iter()
        .map(|(id, r)| (id, (r.state.score, r.state.events)))
        .collect())
}

/// Waits until every lead equals `expected`: the stream mapping scores each batch as it arrives.
async fn scored_until_equal(f: &Fixture, expected: &BTreeMap<String, (i64, u64)>) -> Result<()> {
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored = stored_scores(&f.leads, &ids).await?;
        if stored == *expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(id, v)| stored.get(*id) != Some(v))
                .take(5)
                .map(|(id, v)| format!("{id}: expected {v:?}, stored {:?}", stored.get(id)))
                .collect();
            bail!("scores never matched: {wrong:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each lead's leaderboard entry as the index shows it.
async fn board(leads: &DynamoLeads) -> Result<BTreeMap<String, BoardEntry>> {
    Ok(leads.board().await?.into_iter().collect())
}

fn ctx() -> NormalizeContext<'static> {
    NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    }
}

fn lead_event(id: &str, lead: &str, event_type: &str, at: DateTime<Utc>) -> Result<Event> {
    normalize(
        json!({"eventId": id, "leadId": lead, "type": event_type, "timestamp": at.to_rfc3339()}),
        &ctx(),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn day_start(days_ago: i64) -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::days(days_ago))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

async fn invoke_task(handler: &Handler, task: Value) -> Result<Value> {
    Ok(handler.handle(task).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_equal_an_independent_recomputation_despite_duplicates_and_failed_flushes(
) -> Result<()> {
    let f = fixture("scores_exact", true).await?;
    // Caps and negative points in play: PAGE_VIEW at most 3 a day, REFUND −100.
    put_rule(
        &f.rules,
        Rule {
            event_type: "PAGE_VIEW".into(),
            points: 5,
            active: true,
            max_per_day: Some(3),
        },
    )
    .await?;
    let rules = f.rules.load().await?.context("rules stored")?.rules;
    let events = workload(41, 400)?;
    store_all(&f.events, &events).await?;
    store_all(&f.events, &events[..30]).await?;
    let expected = expected_by_lead(&rules, &events);
    assert!(expected.len() > 20, "the workload scores many leads");
    scored_until_equal(&f, &expected).await?;

    // Profiles and per-type counts come with the state.
    let with_email = events
        .iter()
        .find(|e| e.lead.as_ref().is_some_and(|l| l.email.is_some()))
        .context("an event with a lead email")?;
    let lead_id = with_email.lead_id.clone().context("lead id")?;
    let state = f
        .leads
        .get_leads(&[&lead_id])
        .await?
        .remove(&lead_id)
        .context("stored")?
        .state;
    assert_eq!(
        state.profile.email,
        with_email.lead.as_ref().and_then(|l| l.email.clone())
    );
    let type_count = events
        .iter()
        .filter(|e| e.lead_id.as_deref() == Some(&lead_id) && e.event_type == with_email.event_type)
        .count() as u64;
    assert_eq!(
        state.event_counts.get(&with_email.event_type),
        Some(&type_count)
    );
    // Every lead is in the stage an independent fold puts it in (decay as of now included).
    let now = Utc::now();
    let mut last_activity: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for e in &events {
        if let Some(lead) = &e.lead_id {
            let last = last_activity.entry(lead.clone()).or_insert(e.timestamp);
            *last = (*last).max(e.timestamp);
        }
    }
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    let stored = f.leads.get_leads(&ids).await?;
    for (lead, (score, _)) in &expected {
        let decayed = rules.decay.apply(*score, last_activity[lead], now);
        assert_eq!(
            stored.get(lead).and_then(|r| r.stage.as_deref()),
            rules.stage_of(decayed),
            "{lead}: {score}, {decayed} after decay"
        );
    }
    assert!(
        expected.values().any(|(score, _)| *score >= 100),
        "the workload reaches a stage"
    );
    // Every lead is on the leaderboard with its score.
    let board = board(&f.leads).await?;
    let on_board: BTreeMap<String, i64> =
        board.iter().map(|(id, e)| (id.clone(), e.score)).collect();
    let scores: BTreeMap<String, i64> = expected.iter().map(|(id, v)| (id.clone(), v.0)).collect();
    assert_eq!(on_board, scores);
    let stats = f.poller.stop().await;
    assert!(
        stats.invoke_errors >= 1,
        "the injected crash (after the batch's leads were written) happened: {stats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_delivered_again_changes_nothing() -> Result<()> {
    let f = fixture("scores_twice", false).await?;
    let events = workload(42, 150)?;
    store_all(&f.events, &events).await?;
    let rules = ScoreRules::defaults();
    let expected = expected_by_lead(&rules, &events);
    scored_until_equal(&f, &expected).await?;
    f.poller.stop().await;
    // A redelivery of everything (a retried or bisected batch), and of a half alone.
    for part in [&events[..], &events[40..90]] {
        let again = invoke_task(&f.handler, window(part, 1, json!({}), false)?).await?;
        assert_eq!(again["batchItemFailures"], json!([]), "{again}");
        let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(stored_scores(&f.leads, &ids).await?, expected);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_recompute_and_a_rule_change_applies_after_recompute() -> Result<()> {
    let f = fixture("scores_late", false).await?;
    let day = day_start(2);
    let at = |h: i64, m: i64| day + chrono::Duration::hours(h) + chrono::Duration::minutes(m);
    let mut events = vec![
        lead_event("l-1", "lead-a", "PAGE_VIEW", at(10, 0))?,
        lead_event("l-2", "lead-a", "DEMO_REQUEST", at(11, 0))?,
        lead_event("l-3", "lead-b", "PURCHASE", at(9, 0))?,
    ];
    store_all(&f.events, &events).await?;
    let mut rules = ScoreRules::defaults();
    scored_until_equal(&f, &expected_by_lead(&rules, &events)).await?;

    // Older than lead-a's last event: the lead is recomputed.
    let late = lead_event("l-0", "lead-a", "REFUND", at(8, 0))?;
    store_all(&f.events, std::slice::from_ref(&late)).await?;
    events.push(late);
    scored_until_equal(&f, &expected_by_lead(&rules, &events)).await?;

    // A rule change applies to events scored after it …
    put_rule(&f.rules, Rule::new("PAGE_VIEW", 40)).await?;
    rules.set_rule(Rule::new("PAGE_VIEW", 40));
    let next = lead_event("l-4", "lead-a", "PAGE_VIEW", at(12, 0))?;
    store_all(&f.events, std::slice::from_ref(&next)).await?;
    events.push(next);
    let mixed = 5 + 50 + 40; // l-0 REFUND clamps at 0, then 5 (old rule), 50, 40 (new rule).
    scored_until_equal(
        &f,
        &BTreeMap::from([
            ("lead-a".to_owned(), (mixed, 4)),
            ("lead-b".to_owned(), (100, 1)),
        ]),
    )
    .await?;
    // … and a recompute re-folds the history under the current rules.
    let result = invoke_task(&f.handler, json!({"task": "recompute", "leadId": "lead-a"})).await?;
    assert_eq!(result["leads"], json!(1), "{result}");
    let ids = ["lead-a", "lead-b"];
    assert_eq!(
        stored_scores(&f.leads, &ids).await?.get("lead-a"),
        expected_by_lead(&rules, &events).get("lead-a")
    );
    assert_eq!(
        stored_scores(&f.leads, &ids).await?["lead-a"].0,
        40 + 50 + 40
    );
    let all = invoke_task(&f.handler, json!({"task": "recompute"})).await?;
    assert_eq!(all["leads"], json!(2), "{all}");
    assert_eq!(
        stored_scores(&f.leads, &ids).await?,
        expected_by_lead(&rules, &events)
    );
    f.poller.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_negative_points_day_boundaries_unknown_types_and_decay() -> Result<()> {
    let f = fixture("scores_bounds", false).await?;
    put_rule(
        &f.rules,
        Rule {
            event_type: "EMAIL_OPEN".into(),
            points: 10,
            active: true,
            max_per_day: Some(2),
        },
    )
    .await?;
    put_rule(
        &f.rules,
        Rule {
            event_type: "PAGE_VIEW".into(),
            points: 5,
            active: false,
            max_per_day: None,
        },
    )
    .await?;
    let rules = f.rules.load().await?.context("rules")?.rules;
    let midnight = day_start(20);
    let ms = chrono::Duration::milliseconds;
    let events = vec![
        // Three opens before midnight (the third is over the cap), two after (a new UTC day).
        lead_event("c-1", "capped", "EMAIL_OPEN", midnight - ms(3))?,
        lead_event("c-2", "capped", "EMAIL_OPEN", midnight - ms(2))?,
        lead_event("c-3", "capped", "EMAIL_OPEN", midnight - ms(1))?,
        lead_event("c-4", "capped", "EMAIL_OPEN", midnight)?,
        lead_event("c-5", "capped", "EMAIL_OPEN", midnight + ms(1))?,
        // Negative points clamp at the minimum, then count up from there.
        lead_event("n-1", "negative", "FORM_SUBMISSION", midnight)?,
        lead_event("n-2", "negative", "REFUND", midnight + ms(1))?,
        lead_event("n-3", "negative", "DEMO_REQUEST", midnight + ms(2))?,
        // Unknown and inactive types score nothing but count.
        lead_event("u-1", "unknown", "ad.click", midnight)?,
        lead_event("u-2", "unknown", "PAGE_VIEW", midnight + ms(5))?,
        lead_event("u-3", "unknown", "PURCHASE", midnight + ms(9))?,
    ];
    store_all(&f.events, &events).await?;
    let expected = expected_by_lead(&rules, &events);
    assert_eq!(expected["capped"], (40, 5));
    assert_eq!(expected["negative"], (50, 3));
    assert_eq!(expected["unknown"], (100, 3));
    scored_until_equal(&f, &expected).await?;
    let state = f
        .leads
        .get_leads(&["unknown"])
        .await?
        .remove("unknown")
        .context("stored")?
        .state;
    assert_eq!(state.event_counts.get("ad.click"), Some(&1));
    assert_eq!(state.recent_points, vec![0, 0, 100]);
    f.poller.stop().await;

    // Decay counts whole days from the last event, as of the read: none up to 15 days (14 days
    // of grace), 2 % from the 15th whole day on.
    let last = midnight + ms(9);
    let entry = *board(&f.leads)
        .await?
        .get("unknown")
        .context("on the board")?;
    assert_eq!(entry.last_activity(), last);
    let decay = &rules.decay;
    assert_eq!(
        entry.score_at(decay, last + chrono::Duration::days(15) - ms(1)),
        100
    );
    assert_eq!(entry.score_at(decay, last + chrono::Duration::days(15)), 98);
    // Today the lead is 20 days idle: 6 days of decay, 100 × 0.98^6 = 88.58 → 89.
    assert_eq!(entry.score_at(decay, Utc::now()), 89);
    Ok(())
}

fn sample(name: &str) -> Result<Value> {
    let path = tally_tests::repo_root().join("events").join(name);
    Ok(serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_in_events_drive_the_rollup_function() -> Result<()> {
    let f = fixture("scores_samples", false).await?;
    f.poller.stop().await;
    // The stream window sample: 3 events, 2 of them of one lead, scored by the invocation.
    let answer = invoke_task(&f.handler, sample("rollup-stream-window.json")?).await?;
    assert_eq!(answer, json!({"state": {}, "batchItemFailures": []}));
    let day = f.aggregates.inner.read_day("2026-11-24").await?.merged()?;
    let all: u64 = day
        .hours
        .get("2026-11-24T10")
        .map(|w| {
            w.totals
                .iter()
                .filter(|(k, _)| k.dimension == tally::rollup::Dimension::All)
                .map(|(_, t)| t.count)
                .sum()
        })
        .unwrap_or_default();
    assert_eq!(all, 3);

    let lead = "email:ada@example.com";
    let state = f
        .leads
        .get_leads(&[lead])
        .await?
        .remove(lead)
        .context("the sample lead is scored")?
        .state;
    assert_eq!(state.score, 105);
    assert_eq!(state.profile.name.as_deref(), Some("Ada Lovelace"));

    assert_eq!(board(&f.leads).await?.get(lead).map(|e| e.score), Some(105));
    // Nothing moved without an event: the stage check writes and sends nothing.
    let stages = invoke_task(&f.handler, sample("rollup-task-stages.json")?).await?;
    assert_eq!(
        (
            stages["task"].clone(),
            stages["leads"].clone(),
            stages["stageChanges"].clone()
        ),
        (json!("stages"), json!(0), json!(0)),
        "{stages}"
    );
    let reconcile = invoke_task(&f.handler, sample("rollup-task-reconcile.json")?).await?;
    assert_eq!(reconcile["days"][0]["day"], "2026-11-24", "{reconcile}");
    // The sample's events are not in the events table: a recompute from history finds none.
    let one = invoke_task(&f.handler, sample("rollup-task-recompute-lead.json")?).await?;
    assert_eq!(one["recomputed"], json!(1), "{one}");
    assert!(
        !board(&f.leads).await?.contains_key(lead),
        "a lead without events leaves the board"
    );
    let all = invoke_task(&f.handler, sample("rollup-task-recompute-all.json")?).await?;
    assert_eq!(
        (
            all["task"].clone(),
            all["leads"].clone(),
            all["job"]["finished"].clone()
        ),
        (json!("recompute-requested"), json!(0), json!(true)),
        "{all}"
    );
    Ok(())
}

/// A stream window invocation over `events` with sequence numbers from `first_seq`.
fn window(events: &[Event], first_seq: usize, state: Value, is_final: bool) -> Result<Value> {
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| -> Result<Value> {
            Ok(json!({
                "eventName": "INSERT",
                "dynamodb": {"SequenceNumber": format!("{:021}", first_seq + i), "NewImage": {
                    "status": {"S": "PROCESSED"},
                    "event": {"S": e.to_canonical_json().map_err(|err| anyhow::anyhow!("{err:?}"))?}
                }}
            }))
        })
        .collect::<Result<_>>()?;
    Ok(json!({
        "Records": records, "shardId": "shardId-big",
        "window": {"start": "2026-11-24T10:00:00Z", "end": "2026-11-24T10:05:00Z"},
        "state": state, "isFinalInvokeForWindow": is_final, "isWindowTerminatedEarly": false
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_leads_is_scored_in_its_invocation_and_its_retry_changes_nothing(
) -> Result<()> {
    let f = fixture("scores_big_batch", false).await?;
    f.poller.stop().await;
    let start = day_start(1);
    let events: Vec<Event> = (0..2500)
        .map(|i| {
            lead_event(
                &format!("big-{i:04}"),
                &format!("lead-{}", i % 300),
                "EMAIL_OPEN",
                start + chrono::Duration::seconds(i),
            )
        })
        .collect::<Result<_>>()?;
    store_all(&f.events, &events).await?;
    let expected = expected_by_lead(&ScoreRules::defaults(), &events);
    let batch = window(&events, 1, json!({}), false)?;
    invoke_task(&f.handler, batch.clone()).await?;
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(stored_scores(&f.leads, &ids).await?, expected);
    assert_eq!(board(&f.leads).await?.len(), 300);
    // A retry of the same invocation from the same checkpoint.
    invoke_task(&f.handler, batch).await?;
    assert_eq!(stored_scores(&f.leads, &ids).await?, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_route_recomputes_one_lead_now_and_every_lead_through_the_requested_task(
) -> Result<()> {
    let f = fixture("scores_admin_recompute", false).await?;
    let day = day_start(1);
    let at = |h: i64| day + chrono::Duration::hours(h);
    let events = vec![
        lead_event("r-1", "lead-a", "PAGE_VIEW", at(9))?,
        lead_event("r-2", "lead-a", "PAGE_VIEW", at(10))?,
        lead_event("r-3", "lead-b", "PAGE_VIEW", at(11))?,
        lead_event("r-4", "email:ada@example.com", "PAGE_VIEW", at(12))?,
    ];
    store_all(&f.events, &events).await?;
    let mut rules = ScoreRules::defaults();
    let before = expected_by_lead(&rules, &events);
    scored_until_equal(&f, &before).await?;
    f.poller.stop().await;
    put_rule(&f.rules, Rule::new("PAGE_VIEW", 40)).await?;
    rules.set_rule(Rule::new("PAGE_VIEW", 40));
    let after = expected_by_lead(&rules, &events);
    let ids: Vec<&str> = after.keys().map(String::as_str).collect();

    let ddb = tally_tests::sdk_config(&f.stack.dynamodb_endpoint);
    let admin_key = "sample-admin-key";
    let read_key = "recompute-read-key";
    let config = tally::config::AdminConfig {
        events_table: f.stack.table("EventsTable")?.to_owned(),
        analytics_table: f.stack.table("AnalyticsTable")?.to_owned(),
        work_queue_url: f.stack.queue("WorkQueue")?.url.clone(),
        dead_letter_queue_url: f.stack.queue("DeadLetterQueue")?.url.clone(),
        api_keys: tally::auth::ApiKeys::parse(&format!(
            "{}:admin,{}:read",
            tally::auth::ApiKeys::digest(admin_key),
            tally::auth::ApiKeys::digest(read_key),
        ))
        .map_err(anyhow::Error::msg)?,
    };
    let moto = tally_tests::sdk_config(&f.stack.moto_endpoint);
    let api = tally::admin::AdminApi::new(
        config.api_keys.clone(),
        tally::aws::admin_ports(&ddb, &moto, &config),
    );
    let recompute = |body: &str, key: &str| {
        tally::http::HttpRequest::new("POST", "/v1/admin/leads/recompute")
            .with_bearer(key)
            .with_json(body.to_owned())
    };
    let answer = |r: &tally::http::HttpResponse| -> Value {
        serde_json::from_str(&r.body).unwrap_or(Value::Null)
    };

    // A read key may not; an unknown lead is 404.
    let refused = api.handle(recompute("", read_key)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let unknown = api
        .handle(recompute(r#"{"leadId": "nobody"}"#, admin_key))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // One lead: folded under the new rule before the answer; the others keep their scores.
    let one = api
        .handle(recompute(r#"{"leadId": "lead-a"}"#, admin_key))
        .await;
    assert_eq!((one.status, answer(&one)), (202, json!({"leads": 1})));
    let stored = stored_scores(&f.leads, &ids).await?;
    assert_eq!(stored.get("lead-a"), after.get("lead-a"));
    assert_eq!(stored.get("lead-b"), before.get("lead-b"));
    let ada = "email:ada@example.com";
    let sampled = api
        .handle(tally_tests::pipeline::sample_request(
            "api-post-admin-recompute.json",
            |_| {},
        )?)
        .await;
    assert_eq!(
        (sampled.status, answer(&sampled)),
        (202, json!({"leads": 1}))
    );
    assert_eq!(
        stored_scores(&f.leads, &ids).await?.get(ada),
        after.get(ada)
    );

    // All: requested, nothing changes until the task runs; runs resume where the last stopped.
    let all = api.handle(recompute("", admin_key)).await;
    assert_eq!((all.status, answer(&all)), (202, json!({"leads": 3})));
    assert_eq!(
        stored_scores(&f.leads, &ids).await?.get("lead-b"),
        before.get("lead-b")
    );
    for run in 1..=2u32 {
        let (_, progress) = f
            .handler
            .scorer()
            .run_requested(Utc::now(), Duration::ZERO)
            .await?;
        assert_eq!((progress.shards_done, progress.next_shard), (1, run));
    }
    let job = tally::scoring::RecomputeJobs::current_job(f.leads.as_ref()).await?;
    assert_eq!(job.map(|j| (j.next_shard, j.leads)), Some((2, 3)));
    let done = invoke_task(&f.handler, sample("rollup-task-recompute-requested.json")?).await?;
    assert_eq!(done["job"]["finished"], json!(true), "{done}");
    assert_eq!(done["job"]["shardsDone"], json!(30), "{done}");
    assert_eq!(stored_scores(&f.leads, &ids).await?, after);
    assert!(tally::scoring::RecomputeJobs::current_job(f.leads.as_ref())
        .await?
        .is_none());
    // Nothing requested now: the scheduled run does nothing.
    let idle = invoke_task(&f.handler, sample("rollup-task-recompute-requested.json")?).await?;
    assert_eq!(
        (idle["leads"].clone(), idle.get("job")),
        (json!(0), None),
        "{idle}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_of_ten_thousand_types_fits_one_item_and_failed_leads_are_kept_for_repair(
) -> Result<()> {
    use tally::scoring::{LeadFailure, LeadFailures, LeadScore, ScoredEvent};
    let f = fixture("scores_bounded", false).await?;
    f.poller.stop().await;
    // What one CSV of 10,000 rows with distinct types for one lead folds to: once over
    // DynamoDB's 400 KB item limit, now a few kilobytes.
    let start = Utc::now() - chrono::Duration::days(1);
    let events = (0..10_000).map(|i| {
        ScoredEvent::new(
            format!("csv-{i:05}"),
            format!("custom.{i:05}.{}", "t".repeat(50)),
            start + chrono::Duration::seconds(i),
        )
    });
    let (state, _) = LeadScore::fold(&ScoreRules::defaults(), events);
    f.leads
        .put_lead("email:many@types.example", &state, 0)
        .await?;
    let stored = f.leads.get_leads(&["email:many@types.example"]).await?;
    assert_eq!(
        stored
            .get("email:many@types.example")
            .map(|r| r.state.events),
        Some(10_000)
    );

    // Failures round-trip through DynamoDB Local, in lead id order, and clear.
    let at = Utc::now();
    let failures: Vec<LeadFailure> = ["lead-b", "lead-a", "lead-c"]
        .iter()
        .map(|id| LeadFailure::new(*id, &"x".repeat(2_000), at))
        .collect();
    f.leads.record_failures(&failures).await?;
    let listed = f.leads.failures(10).await?;
    assert_eq!(
        listed
            .iter()
            .map(|l| l.lead_id.as_str())
            .collect::<Vec<_>>(),
        vec!["lead-a", "lead-b", "lead-c"]
    );
    assert_eq!(
        listed[0].reason.chars().count(),
        500,
        "reasons are cut at 500"
    );
    assert_eq!(f.leads.failures(2).await?.len(), 2);
    f.leads
        .clear_failures(&["lead-a".into(), "lead-c".into()])
        .await?;
    let left: Vec<String> = f
        .leads
        .failures(10)
        .await?
        .into_iter()
        .map(|l| l.lead_id)
        .collect();
    assert_eq!(left, vec!["lead-b".to_owned()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_puts_leads_written_before_the_leaderboard_index_on_it() -> Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let f = fixture("scores_reindex", false).await?;
    f.poller.stop().await;
    let day = day_start(1);
    let events = vec![
        lead_event("old-1", "lead-old", "PURCHASE", day)?,
        lead_event(
            "old-2",
            "lead-old",
            "DEMO_REQUEST",
            day + chrono::Duration::hours(1),
        )?,
    ];
    store_all(&f.events, &events).await?;
    // The lead item as the scheduled scorer wrote it: a state, no board attributes; its second
    // event was still in the scheduled scorer's log, which is gone.
    let (state, _) = tally::scoring::LeadScore::fold(
        &ScoreRules::defaults(),
        [tally::scoring::ScoredEvent::from(&events[0])],
    );
    let ddb = aws_sdk_dynamodb::Client::new(&tally_tests::sdk_config(&f.stack.dynamodb_endpoint));
    ddb.put_item()
        .table_name(f.stack.table("AnalyticsTable")?)
        .item("pk", AttributeValue::S("LEAD#lead-old".into()))
        .item("sk", AttributeValue::S("STATE".into()))
        .item("state", AttributeValue::S(serde_json::to_string(&state)?))
        .item("version", AttributeValue::N("3".into()))
        .send()
        .await?;
    assert!(board(&f.leads).await?.is_empty(), "not on the board");
    let run = invoke_task(&f.handler, json!({"task": "reindex"})).await?;
    assert_eq!(
        (run["leads"].clone(), run["next"].clone()),
        (json!(1), Value::Null),
        "{run}"
    );
    let entry = board(&f.leads).await?.get("lead-old").map(|e| e.score);
    assert_eq!(entry, Some(150), "re-folded from both events");
    let again = invoke_task(&f.handler, json!({"task": "reindex"})).await?;
    assert_eq!(again["leads"], json!(0), "{again}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_scoring_overlapping_batches_at_once_converge_on_the_fold() -> Result<()> {
    let f = fixture("scores_two_consumers", false).await?;
    f.poller.stop().await;
    let events = workload(43, 240)?;
    store_all(&f.events, &events).await?;
    let expected = expected_by_lead(&ScoreRules::defaults(), &events);
    // Two invocations at once (a retry racing the original, or two shards of one lead's events),
    // over batches that share their middle 80 events, each run twice.
    let first = window(&events[..160], 1, json!({}), false)?;
    let second = window(&events[80..], 81, json!({}), false)?;
    let (a, b, c, d) = tokio::join!(
        invoke_task(&f.handler, first.clone()),
        invoke_task(&f.handler, second.clone()),
        invoke_task(&f.handler, second),
        invoke_task(&f.handler, first),
    );
    for answer in [a?, b?, c?, d?] {
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    }
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(stored_scores(&f.leads, &ids).await?, expected);
    let on_board: BTreeMap<String, i64> = board(&f.leads)
        .await?
        .into_iter()
        .map(|(id, e)| (id, e.score))
        .collect();
    let scores: BTreeMap<String, i64> = expected.iter().map(|(id, v)| (id.clone(), v.0)).collect();
    assert_eq!(on_board, scores);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_are_found_by_email_through_the_index_whatever_their_id() -> Result<()> {
    use tally::event::LeadProfile;
    use tally::scoring::LeadScore;
    let f = fixture("scores_by_email", false).await?;
    f.poller.stop().await;
    let lead = |email: &str, score: i64| LeadScore {
        score,
        events: 1,
        last_activity_at: Some(Utc::now()),
        profile: LeadProfile {
            email: Some(email.to_owned()),
            ..LeadProfile::default()
        },
        ..LeadScore::default()
    };
    f.leads
        .put_lead("email:ada@example.com", &lead("ada@example.com", 10), 0)
        .await?;
    f.leads
        .put_lead("crm-1", &lead("Ada@Example.com ", 20), 0)
        .await?;
    f.leads
        .put_lead("crm-2", &lead("grace@example.com", 30), 0)
        .await?;
    // The index is sparse: the lead named after its address is found by its id, not indexed.
    assert_eq!(
        f.leads.leads_by_email("ada@example.com", 20).await?,
        ["crm-1"]
    );
    f.leads
        .put_lead("crm-3", &lead("ada@example.com", 40), 0)
        .await?;
    let mut found = f.leads.leads_by_email("ada@example.com", 20).await?;
    found.sort();
    assert_eq!(found, ["crm-1", "crm-3"]);
    // A lead whose email changes moves in the index.
    f.leads
        .put_lead("crm-1", &lead("ada@elsewhere.org", 20), 1)
        .await?;
    assert_eq!(
        f.leads.leads_by_email("ada@example.com", 20).await?,
        ["crm-3"]
    );
    assert_eq!(
        f.leads.leads_by_email("ada@elsewhere.org", 20).await?,
        ["crm-1"]
    );
    assert_eq!(f.leads.leads_by_email("ada@example.com", 1).await?.len(), 1);
    assert!(f
        .leads
        .leads_by_email("nobody@example.com", 20)
        .await?
        .is_empty());
    Ok(())
}
