use std::error::Error;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::event::LeadProfile;
use crate::scoring::{
    put_rule, CheckpointPolicy, LeadReader, LeadRecompute, MemoryHistory, MemoryLeads, MemoryRules,
    RecomputeJobs, Rule, Stage, BOARD_SHARDS, RECENT_EVENTS,
};

type TestResult = Result<(), Box<dyn Error>>;

fn at(s: &str) -> Result<DateTime<Utc>, Box<dyn Error>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

struct World {
    scorer: Scorer<Arc<MemoryLeads>, Arc<MemoryHistory>, Arc<MemoryRules>>,
    leads: Arc<MemoryLeads>,
    history: Arc<MemoryHistory>,
    rules: Arc<MemoryRules>,
}

impl World {
    fn new() -> Self {
        let (leads, history, rules) = (Arc::default(), Arc::default(), Arc::default());
        World {
            scorer: Scorer::new(Arc::clone(&leads), Arc::clone(&history), Arc::clone(&rules)),
            leads,
            history,
            rules,
        }
    }

    /// Stores the events (the source of truth) and scores them as one stream batch.
    async fn batch(
        &self,
        events: &[(&str, ScoredEvent)],
        now: DateTime<Utc>,
    ) -> Result<ScoreReport, StoreError> {
        for (lead, e) in events {
            self.history.store(lead, e.clone());
        }
        self.deliver(events, now).await
    }

    /// Scores the events as one stream batch without storing them (again, or before the index
    /// shows them).
    async fn deliver(
        &self,
        events: &[(&str, ScoredEvent)],
        now: DateTime<Utc>,
    ) -> Result<ScoreReport, StoreError> {
        let batch = events
            .iter()
            .map(|(lead, e)| LeadEvent {
                lead_id: (*lead).to_owned(),
                event: e.clone(),
            })
            .collect();
        self.scorer.score_events(batch, now).await
    }

    /// What a recompute from the stored events gives.
    async fn expected(&self, lead: &str) -> Result<LeadScore, Box<dyn Error>> {
        let rules = super::load_or_init(self.rules.as_ref()).await?.rules;
        Ok(LeadScore::fold(&rules, self.history.lead_events(lead).await?).0)
    }

    fn state(&self, lead: &str) -> Option<LeadScore> {
        self.leads.lead(lead).map(|r| r.state)
    }
}

fn ev(id: &str, t: &str, ts: &str) -> Result<ScoredEvent, Box<dyn Error>> {
    Ok(ScoredEvent::new(id, t, at(ts)?))
}

#[tokio::test]
async fn each_batch_folds_into_states_and_the_board_at_once() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    let report = w
        .batch(
            &[
                ("a", ev("1", "PAGE_VIEW", "2026-11-20T10:00:00Z")?),
                ("b", ev("2", "DEMO_REQUEST", "2026-11-20T10:00:01Z")?),
            ],
            now,
        )
        .await?;
    assert_eq!((report.events, report.leads, report.recomputed), (2, 2, 0));
    assert_eq!(
        w.state("a").map(|s| s.score),
        Some(5),
        "scored before the next batch"
    );
    let report = w
        .batch(&[("a", ev("3", "PURCHASE", "2026-11-20T10:05:00Z")?)], now)
        .await?;
    assert_eq!((report.events, report.leads, report.recomputed), (1, 1, 0));
    assert_eq!(w.state("a"), Some(w.expected("a").await?));
    assert_eq!(w.state("a").map(|s| s.score), Some(105));
    assert_eq!(w.state("b").map(|s| s.score), Some(50));
    let board = w.leads.board().await?;
    let entry = board.iter().find(|(id, _)| id == "a").map(|(_, e)| e.score);
    assert_eq!(entry, Some(105));
    // An empty batch writes nothing.
    assert_eq!(
        w.scorer.score_events(Vec::new(), now).await?,
        ScoreReport::default()
    );
    Ok(())
}

#[tokio::test]
async fn a_late_event_recomputes_the_lead_from_its_history() -> TestResult {
    let w = World::new();
    let rules = ScoreRules::defaults().with_rule(Rule {
        event_type: "PAGE_VIEW".into(),
        points: 5,
        active: true,
        max_per_day: Some(1),
    });
    w.rules.save(&rules, 0).await?;
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&[("a", ev("2", "PAGE_VIEW", "2026-11-20T12:00:00Z")?)], now)
        .await?;
    assert_eq!(w.state("a").map(|s| s.score), Some(5));
    // Earlier the same day: it takes the one scoring PAGE_VIEW of the day, the later one gives 0.
    let report = w
        .batch(
            &[
                ("a", ev("1", "PAGE_VIEW", "2026-11-20T08:00:00Z")?),
                ("a", ev("3", "REFUND", "2026-11-20T13:00:00Z")?),
            ],
            now,
        )
        .await?;
    assert_eq!(report.recomputed, 1);
    let state = w.state("a").ok_or("stored")?;
    assert_eq!(state, w.expected("a").await?);
    assert_eq!(state.score, 0, "5 then 0 then −100, clamped at 0");
    assert_eq!(state.recent_points, vec![5, 0, -100]);
    Ok(())
}

#[tokio::test]
async fn a_batch_delivered_twice_counts_once() -> TestResult {
    let w = World::new();
    let events = [
        ("a", ev("1", "EMAIL_OPEN", "2026-11-20T10:00:00Z")?),
        ("a", ev("2", "EMAIL_OPEN", "2026-11-20T10:01:00Z")?),
        ("b", ev("3", "PURCHASE", "2026-11-20T10:01:00Z")?),
    ];
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&events, now).await?;
    // A retried batch, or the half of a bisected one, carries the same events again.
    let report = w.deliver(&events, now).await?;
    assert_eq!(report.recomputed, 2);
    let report = w.deliver(&events[1..], now).await?;
    assert_eq!(report.recomputed, 2);
    let state = w.state("a").ok_or("stored")?;
    assert_eq!((state.score, state.events), (20, 2));
    assert_eq!(w.state("b").map(|s| (s.score, s.events)), Some((100, 1)));
    Ok(())
}

#[tokio::test]
async fn a_batch_retried_after_a_crash_that_wrote_some_of_its_leads_counts_once() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&[("a", ev("0", "PAGE_VIEW", "2026-11-20T09:00:00Z")?)], now)
        .await?;
    let batch = [
        ("a", ev("1", "DEMO_REQUEST", "2026-11-20T10:00:00Z")?),
        ("b", ev("2", "PURCHASE", "2026-11-20T10:00:01Z")?),
        ("c", ev("3", "EMAIL_OPEN", "2026-11-20T10:00:02Z")?),
    ];
    for (lead, e) in &batch {
        w.history.store(lead, e.clone());
    }
    // The invocation wrote lead a and b, then died; Lambda retries the whole batch.
    w.deliver(&batch[..2], now).await?;
    let report = w.deliver(&batch, now).await?;
    assert_eq!(
        (report.leads, report.recomputed),
        (3, 2),
        "a and b re-fold, c advances"
    );
    for lead in ["a", "b", "c"] {
        assert_eq!(w.state(lead), Some(w.expected(lead).await?), "{lead}");
    }
    assert_eq!(w.state("a").map(|s| (s.score, s.events)), Some((55, 2)));
    Ok(())
}

#[tokio::test]
async fn a_recompute_waits_for_the_history_index_to_show_what_the_state_applied() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&[("a", ev("1", "PURCHASE", "2026-11-20T10:00:00Z")?)], now)
        .await?;
    // Applied, but the index does not show it yet.
    let lagging = ev("2", "PURCHASE", "2026-11-20T11:00:00Z")?;
    w.deliver(&[("a", lagging.clone())], now).await?;
    assert_eq!(w.state("a").map(|s| s.score), Some(200));
    // A late event forces a re-fold; folding the index as it is would drop event 2.
    let late = ev("0", "EMAIL_OPEN", "2026-11-20T09:00:00Z")?;
    w.history.store("a", late.clone());
    let history = Arc::clone(&w.history);
    let shown = tokio::spawn(async move {
        tokio::time::sleep(StdDuration::from_millis(150)).await;
        history.store("a", lagging);
    });
    let report = w.deliver(&[("a", late)], now).await?;
    shown.await?;
    assert_eq!((report.leads, report.failed), (1, 0));
    let state = w.state("a").ok_or("stored")?;
    assert_eq!((state.score, state.events), (210, 3));
    assert_eq!(state, w.expected("a").await?);
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_are_redone_not_lost() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&[("a", ev("1", "PURCHASE", "2026-11-20T10:00:00Z")?)], now)
        .await?;
    w.leads.inject_conflicts(2);
    let report = w
        .batch(&[("a", ev("2", "PURCHASE", "2026-11-20T11:00:00Z")?)], now)
        .await?;
    assert_eq!(report.conflicts, 2);
    assert_eq!(w.state("a").map(|s| s.score), Some(200));
    assert_eq!(w.state("a"), Some(w.expected("a").await?));
    Ok(())
}

#[tokio::test]
async fn two_consumers_at_once_converge_on_the_fold() -> TestResult {
    let w = Arc::new(World::new());
    let now = at("2026-11-21T00:00:00Z")?;
    let events: Vec<(String, ScoredEvent)> = (0..40)
        .map(|i| {
            let ts = at("2026-11-20T10:00:00Z").map(|t| t + Duration::seconds(i))?;
            Ok((
                format!("lead-{}", i % 4),
                ScoredEvent::new(format!("e{i:02}"), "PAGE_VIEW", ts),
            ))
        })
        .collect::<Result<_, Box<dyn Error>>>()?;
    for (lead, e) in &events {
        w.history.store(lead, e.clone());
    }
    // Two invocations (a retry racing the original, or two shards) score overlapping halves.
    let (first, second) = (events[..30].to_vec(), events[10..].to_vec());
    let run = |part: Vec<(String, ScoredEvent)>| {
        let w = Arc::clone(&w);
        tokio::spawn(async move {
            let part: Vec<(&str, ScoredEvent)> =
                part.iter().map(|(l, e)| (l.as_str(), e.clone())).collect();
            w.deliver(&part, now).await
        })
    };
    let (a, b) = tokio::join!(run(first), run(second));
    let (a, b) = (a??, b??);
    assert_eq!(a.failed + b.failed, 0);
    for i in 0..4 {
        let lead = format!("lead-{i}");
        assert_eq!(w.state(&lead), Some(w.expected(&lead).await?), "{lead}");
        assert_eq!(w.state(&lead).map(|s| s.events), Some(10));
    }
    Ok(())
}

#[tokio::test]
async fn a_rule_change_applies_to_later_events_until_a_recompute() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    w.batch(&[("a", ev("1", "PAGE_VIEW", "2026-11-20T10:00:00Z")?)], now)
        .await?;
    put_rule(w.rules.as_ref(), Rule::new("PAGE_VIEW", 7)).await?;
    w.batch(&[("a", ev("2", "PAGE_VIEW", "2026-11-20T11:00:00Z")?)], now)
        .await?;
    assert_eq!(w.state("a").map(|s| s.score), Some(5 + 7));
    let report = w.scorer.recompute_lead("a", now).await?;
    assert_eq!((report.leads, report.recomputed), (1, 1));
    assert_eq!(w.state("a").map(|s| s.score), Some(14));
    assert_eq!(w.state("a"), Some(w.expected("a").await?));
    // An unknown lead is not created.
    assert_eq!(w.scorer.recompute_lead("nobody", now).await?.leads, 0);
    assert_eq!(w.state("nobody"), None);
    Ok(())
}

#[tokio::test]
async fn a_requested_recompute_refolds_every_lead_shard_by_shard() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    for i in 0..40 {
        w.batch(
            &[(
                &format!("lead-{}", i % 10),
                ev(&format!("e{i}"), "FORM_SUBMISSION", "2026-11-20T10:00:00Z")?,
            )],
            now,
        )
        .await?;
    }
    put_rule(w.rules.as_ref(), Rule::new("FORM_SUBMISSION", 1)).await?;
    w.batch(
        &[(
            "lead-0",
            ev("late", "FORM_SUBMISSION", "2026-11-20T11:00:00Z")?,
        )],
        now,
    )
    .await?;
    // Nothing requested: a run does nothing.
    let (report, progress) = w.scorer.run_requested(now, StdDuration::ZERO).await?;
    assert_eq!((report, progress), Default::default());

    assert_eq!(w.scorer.request_all("job-1".into(), now).await?, 10);
    // With no time to spare, each run does one shard and the next continues.
    let mut runs = 0;
    let mut leads = 0;
    loop {
        let (report, progress) = w.scorer.run_requested(now, StdDuration::ZERO).await?;
        runs += 1;
        leads += report.leads;
        assert_eq!(progress.shards_done, 1, "run {runs}");
        assert_eq!(progress.job_id.as_deref(), Some("job-1"));
        if progress.finished {
            break;
        }
        assert_eq!(progress.next_shard, runs);
        assert!(runs < BOARD_SHARDS, "never finished");
    }
    assert_eq!((runs, leads), (BOARD_SHARDS, 10), "every lead once");
    assert_eq!(w.leads.current_job().await?, None);
    for i in 0..10 {
        let lead = format!("lead-{i}");
        assert_eq!(w.state(&lead), Some(w.expected(&lead).await?), "{lead}");
    }
    assert_eq!(w.state("lead-0").map(|s| s.score), Some(5));
    assert_eq!(w.state("lead-1").map(|s| s.score), Some(4));
    Ok(())
}

#[tokio::test]
async fn a_new_request_starts_over_under_the_rules_of_its_time() -> TestResult {
    let w = World::new();
    let now = at("2026-11-21T00:00:00Z")?;
    for i in 0..64 {
        w.batch(
            &[(
                &format!("lead-{i}"),
                ev(&format!("e{i}"), "PAGE_VIEW", "2026-11-20T10:00:00Z")?,
            )],
            now,
        )
        .await?;
    }
    w.scorer.request_all("job-1".into(), now).await?;
    for _ in 0..5 {
        w.scorer.run_requested(now, StdDuration::ZERO).await?;
    }
    put_rule(w.rules.as_ref(), Rule::new("PAGE_VIEW", 9)).await?;
    assert_eq!(w.scorer.request_all("job-2".into(), now).await?, 64);
    let job = w.leads.current_job().await?.ok_or("no job")?;
    assert_eq!((job.id.as_str(), job.next_shard), ("job-2", 0));
    // A run of the old job that was still going cannot move the new one's progress.
    assert!(!w.leads.advance_job("job-1", 6).await?);
    let (_, progress) = w
        .scorer
        .run_requested(now, StdDuration::from_secs(600))
        .await?;
    assert_eq!(
        (
            progress.job_id.as_deref(),
            progress.shards_done,
            progress.finished
        ),
        (Some("job-2"), BOARD_SHARDS, true)
    );
    for i in 0..64 {
        assert_eq!(w.state(&format!("lead-{i}")).map(|s| s.score), Some(9));
    }
    Ok(())
}

#[tokio::test]
async fn profile_takes_each_field_from_the_latest_event_giving_it() -> TestResult {
    let w = World::new();
    let profile = |email: Option<&str>, name: Option<&str>| {
        Some(LeadProfile {
            email: email.map(str::to_owned),
            name: name.map(str::to_owned),
            company: None,
        })
    };
    w.batch(
        &[
            (
                "a",
                ev("1", "PAGE_VIEW", "2026-11-20T10:00:00Z")?
                    .with_profile(profile(Some("a@x.io"), Some("Ann"))),
            ),
            (
                "a",
                ev("2", "PAGE_VIEW", "2026-11-20T11:00:00Z")?
                    .with_profile(profile(None, Some("Ann B"))),
            ),
        ],
        at("2026-11-21T00:00:00Z")?,
    )
    .await?;
    let state = w.state("a").ok_or("stored")?;
    assert_eq!(state.profile.email.as_deref(), Some("a@x.io"));
    assert_eq!(state.profile.name.as_deref(), Some("Ann B"));
    Ok(())
}

#[tokio::test]
async fn recent_points_keep_the_latest_fifty() -> TestResult {
    let w = World::new();
    let start = at("2026-11-20T00:00:00Z")?;
    let events: Vec<(&str, ScoredEvent)> = (0..60)
        .map(|i| {
            let t = if i % 2 == 0 {
                "PAGE_VIEW"
            } else {
                "EMAIL_OPEN"
            };
            (
                "a",
                ScoredEvent::new(format!("e{i:02}"), t, start + Duration::minutes(i)),
            )
        })
        .collect();
    w.batch(&events, at("2026-11-21T00:00:00Z")?).await?;
    let state = w.state("a").ok_or("stored")?;
    assert_eq!(state.recent_points.len(), RECENT_EVENTS);
    // Events 10..59 alternate PAGE_VIEW (5) and EMAIL_OPEN (10), starting with PAGE_VIEW.
    let expected: Vec<i64> = (10..60).map(|i| if i % 2 == 0 { 5 } else { 10 }).collect();
    assert_eq!(state.recent_points, expected);
    assert_eq!(state.score, 30 * 5 + 30 * 10);
    Ok(())
}

#[tokio::test]
async fn a_lead_that_cannot_be_written_does_not_stop_the_others_and_is_repaired() -> TestResult {
    let w = World::new();
    w.leads.refuse_writes("huge");
    let now = at("2026-11-02T11:00:00Z")?;

    // The batch goes on past the lead that cannot be written and succeeds, so the stream is
    // not retried for ever: the lead's events stay in the events table, and the lead is
    // recorded with its reason.
    let report = w
        .batch(
            &[
                ("good-1", ev("e1", "PAGE_VIEW", "2026-11-02T10:00:00Z")?),
                ("huge", ev("e2", "PURCHASE", "2026-11-02T10:00:01Z")?),
                ("good-2", ev("e3", "EMAIL_OPEN", "2026-11-02T10:00:02Z")?),
            ],
            now,
        )
        .await?;
    assert_eq!((report.leads, report.failed), (2, 1));
    assert_eq!(w.state("good-1"), Some(w.expected("good-1").await?));
    assert_eq!(w.state("good-2"), Some(w.expected("good-2").await?));
    assert_eq!(w.state("huge"), None);
    let failures = w.leads.failures(10).await?;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].lead_id, "huge");
    assert!(
        failures[0].reason.contains("Item size"),
        "{}",
        failures[0].reason
    );

    // Later runs retry it (still failing: the failure is kept, nothing else is touched).
    let (report, _) = w.scorer.run_requested(now, StdDuration::ZERO).await?;
    assert_eq!((report.failed, report.repaired), (1, 0));
    assert_eq!(w.leads.failures(10).await?.len(), 1);

    // Once the cause is fixed, the scheduled run re-folds it from its events and clears it.
    w.leads.allow_writes("huge");
    let (report, _) = w.scorer.run_requested(now, StdDuration::ZERO).await?;
    assert_eq!((report.failed, report.repaired), (0, 1));
    assert_eq!(w.state("huge"), Some(w.expected("huge").await?));
    assert!(w.leads.failures(10).await?.is_empty());
    let board = w.leads.board().await?;
    assert!(
        board.iter().any(|(id, _)| id == "huge"),
        "on the leaderboard once repaired"
    );
    Ok(())
}

#[tokio::test]
async fn recomputing_one_lead_clears_its_failure() -> TestResult {
    let w = World::new();
    w.leads.refuse_writes("l1");
    let now = at("2026-11-02T11:00:00Z")?;
    let events = [("l1", ev("e1", "PAGE_VIEW", "2026-11-02T10:00:00Z")?)];
    assert_eq!(w.batch(&events, now).await?.failed, 1);
    w.leads.allow_writes("l1");
    assert!(w.scorer.recompute_now("l1", now).await?);
    assert!(w.leads.failures(10).await?.is_empty());
    Ok(())
}

/// (lead, from, to, eventId) of a change.
type Change = (String, Option<String>, Option<String>, Option<String>);

/// Every change written with its lead, in order (what the table's stream carries to the bus).
fn changes(w: &World) -> Vec<Change> {
    w.leads
        .stage_changes()
        .into_iter()
        .map(|c| (c.lead_id, c.from, c.to, c.event_id))
        .collect()
}

fn change(lead: &str, from: Option<&str>, to: Option<&str>, event: Option<&str>) -> Change {
    (
        lead.to_owned(),
        from.map(str::to_owned),
        to.map(str::to_owned),
        event.map(str::to_owned),
    )
}

#[tokio::test]
async fn a_crossing_publishes_one_change_and_redeliveries_and_recomputes_none() -> TestResult {
    let w = World::new();
    let now = at("2026-11-20T12:00:00Z")?;
    let first = [
        ("a", ev("1", "DEMO_REQUEST", "2026-11-20T10:00:00Z")?),
        ("a", ev("2", "DEMO_REQUEST", "2026-11-20T10:01:00Z")?),
    ];
    let report = w.batch(&first, now).await?;
    assert_eq!(report.stage_changes, 1);
    assert_eq!(changes(&w), [change("a", None, Some("MQL"), Some("2"))]);
    let published = w.leads.stage_changes();
    assert_eq!((published[0].score, published[0].at), (100, now));
    // Still MQL at 200: nothing.
    w.batch(&[("a", ev("3", "PURCHASE", "2026-11-20T10:02:00Z")?)], now)
        .await?;
    assert_eq!(changes(&w).len(), 1);
    // 300 reaches SQL.
    w.batch(&[("a", ev("4", "PURCHASE", "2026-11-20T10:03:00Z")?)], now)
        .await?;
    assert_eq!(
        changes(&w)[1],
        change("a", Some("MQL"), Some("SQL"), Some("4"))
    );
    // A redelivered batch and a recompute re-fold to the same stage: nothing more.
    w.deliver(&first, now).await?;
    w.scorer.recompute_lead("a", now).await?;
    assert_eq!(changes(&w).len(), 2);
    assert_eq!(
        w.leads.lead("a").and_then(|r| r.stage),
        Some("SQL".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn a_late_event_that_rewrites_history_publishes_the_correction() -> TestResult {
    let w = World::new();
    let now = at("2026-11-20T12:00:00Z")?;
    w.batch(&[("a", ev("1", "PURCHASE", "2026-11-20T10:00:00Z")?)], now)
        .await?;
    w.batch(
        &[("a", ev("2", "EMAIL_OPEN", "2026-11-20T10:05:00Z")?)],
        now,
    )
    .await?;
    assert_eq!(changes(&w), [change("a", None, Some("MQL"), Some("1"))]);
    // A refund before the open: 100 − 100 + 10 = 10, below MQL.
    w.batch(&[("a", ev("0", "REFUND", "2026-11-20T10:01:00Z")?)], now)
        .await?;
    assert_eq!(
        changes(&w)[1],
        change("a", Some("MQL"), None, Some("0")),
        "the correction names the late event"
    );
    assert_eq!(w.state("a").map(|s| s.score), Some(10));
    Ok(())
}

#[tokio::test]
async fn the_stage_check_publishes_what_decay_and_new_thresholds_move() -> TestResult {
    let w = World::new();
    let t0 = at("2026-11-01T10:00:00Z")?;
    w.batch(
        &[("quiet", ev("1", "PURCHASE", "2026-11-01T10:00:00Z")?)],
        t0,
    )
    .await?;
    w.batch(
        &[("busy", ev("2", "PURCHASE", "2026-11-20T10:00:00Z")?)],
        t0,
    )
    .await?;
    assert_eq!(changes(&w).len(), 2);
    // 15 whole days later the quiet lead has lost 2 %: 98, below MQL.
    let later = at("2026-11-16T10:00:00Z")?;
    let report = w.scorer.check_stages(later).await?;
    assert_eq!((report.leads, report.stage_changes), (1, 1));
    let decayed = w.leads.stage_changes().pop().ok_or("a change")?;
    assert_eq!(
        (
            decayed.lead_id.as_str(),
            decayed.from.as_deref(),
            decayed.to,
            decayed.event_id,
            decayed.score
        ),
        ("quiet", Some("MQL"), None, None, 98)
    );
    // Run again: nothing moved since.
    assert_eq!(w.scorer.check_stages(later).await?.leads, 0);
    // A threshold lowered to 90 moves it back, and the busy lead stays where it is.
    let mut rules = w.rules.load().await?.ok_or("rules")?;
    rules.rules.stages = vec![Stage::new("MQL", 90), Stage::new("SQL", 300)];
    w.rules.save(&rules.rules, rules.version).await?;
    w.scorer.check_stages(later).await?;
    assert_eq!(
        changes(&w).last(),
        Some(&change("quiet", None, Some("MQL"), None))
    );
    assert_eq!(changes(&w).len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_hot_lead_delivered_out_of_order_refolds_from_its_checkpoint() -> TestResult {
    let w = World::new();
    let policy = CheckpointPolicy {
        min_events: 50,
        lag: Duration::seconds(5),
    };
    let scorer = Scorer::new(
        Arc::clone(&w.leads),
        Arc::clone(&w.history),
        Arc::clone(&w.rules),
    )
    .with_checkpoints(policy);
    let now = at("2026-11-21T00:00:00Z")?;
    let start = at("2026-11-20T10:00:00Z")?;
    // 1,000 events, 10 a second, every batch of 10 holding back its fifth event to the next
    // batch (as concurrent writers deliver them), so each batch after the first has a late one.
    let events: Vec<ScoredEvent> = (0..1000)
        .map(|i| {
            let t = ["PAGE_VIEW", "EMAIL_OPEN", "REFUND", "PURCHASE"][i % 4];
            ScoredEvent::new(
                format!("h{i:04}"),
                t,
                start + Duration::milliseconds(100 * i as i64),
            )
        })
        .collect();
    let mut held: Option<ScoredEvent> = None;
    let mut recomputed = 0;
    for chunk in events.chunks(10) {
        // All ten are stored; the fifth reaches the scorer with the next batch.
        for e in chunk {
            w.history.store("hot", e.clone());
        }
        let batch: Vec<LeadEvent> = chunk[..4]
            .iter()
            .chain(&chunk[5..])
            .chain(held.iter())
            .map(|e| LeadEvent {
                lead_id: "hot".into(),
                event: e.clone(),
            })
            .collect();
        held = chunk.get(4).cloned();
        recomputed += scorer.score_events(batch, now).await?.recomputed;
    }
    let last = held.ok_or("the last event")?;
    scorer
        .score_events(
            vec![LeadEvent {
                lead_id: "hot".into(),
                event: last,
            }],
            now,
        )
        .await?;
    assert!(recomputed >= 90, "late every batch: {recomputed}");
    let mut state = w.state("hot").ok_or("stored")?;
    let checkpoint = state
        .checkpoint
        .take()
        .ok_or("a hot lead keeps a checkpoint")?;
    assert_eq!(
        state,
        w.expected("hot").await?,
        "the same as a fold of everything"
    );
    assert!(checkpoint.events < state.events);
    // A fold of the whole history every batch would read about 50,000 events; from the
    // checkpoint each re-fold reads the last few seconds.
    let read = w.history.events_read();
    assert!(read < 15_000, "{read} events read");
    Ok(())
}
