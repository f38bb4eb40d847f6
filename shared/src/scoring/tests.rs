//! Hand-computed expectations for the scoring semantics of docs/api.md.

use std::collections::BTreeMap;
use std::error::Error;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;

type TestResult = Result<(), Box<dyn Error>>;

fn at(s: &str) -> Result<DateTime<Utc>, Box<dyn Error>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

fn ev(id: &str, event_type: &str, ts: &str) -> Result<ScoredEvent, Box<dyn Error>> {
    Ok(ScoredEvent::new(id, event_type, at(ts)?))
}

fn points(applied: &[(ScoredEvent, i64)]) -> Vec<i64> {
    applied.iter().map(|(_, p)| *p).collect()
}

fn ids(applied: &[(ScoredEvent, i64)]) -> Vec<&str> {
    applied.iter().map(|(e, _)| e.event_id.as_str()).collect()
}

#[test]
fn defaults_match_the_contract() {
    let rules = ScoreRules::defaults();
    let expected = [
        ("EMAIL_OPEN", 10),
        ("PAGE_VIEW", 5),
        ("FORM_SUBMISSION", 20),
        ("DEMO_REQUEST", 50),
        ("PURCHASE", 100),
        ("REFUND", -100),
    ];
    assert_eq!(rules.rules.len(), expected.len());
    for (event_type, pts) in expected {
        assert_eq!(
            rules.rule(event_type),
            Some(&Rule {
                event_type: event_type.to_owned(),
                points: pts,
                active: true,
                max_per_day: None,
            })
        );
    }
    assert_eq!(rules.rule("page_view"), None, "types are case-sensitive");
    assert_eq!((rules.min, rules.max), (0, 1000));
    assert_eq!(rules.decay.after_days, 14);
    assert_eq!(rules.decay.percent_per_day, Decimal::new(2, 0));
    assert_eq!(ScoreRules::default(), rules);
    assert_eq!(rules.validate(), Ok(()));
}

#[test]
fn clamps_at_zero_with_negative_points() -> TestResult {
    let rules = ScoreRules::defaults();
    let (state, applied) = LeadScore::fold(
        &rules,
        vec![
            ev("e1", "REFUND", "2024-03-01T10:00:00Z")?,
            ev("e2", "PURCHASE", "2024-03-01T10:01:00Z")?,
            ev("e3", "REFUND", "2024-03-01T10:02:00Z")?,
            ev("e4", "REFUND", "2024-03-01T10:03:00Z")?,
            ev("e5", "PAGE_VIEW", "2024-03-01T10:04:00Z")?,
        ],
    );
    // 0 → clamp(-100)=0 → 100 → 0 → clamp(-100)=0 → 5
    assert_eq!(state.score, 5);
    assert_eq!(points(&applied), vec![-100, 100, -100, -100, 5]);
    assert_eq!(state.events, 5);
    assert_eq!(state.event_counts.get("REFUND"), Some(&3));
    Ok(())
}

#[test]
fn clamps_at_the_maximum() -> TestResult {
    let rules = ScoreRules::defaults();
    let mut events = Vec::new();
    for minute in 0..11 {
        events.push(ev(
            &format!("p{minute:02}"),
            "PURCHASE",
            &format!("2024-03-01T10:{minute:02}:00Z"),
        )?);
    }
    let (state, _) = LeadScore::fold(&rules, events.clone());
    assert_eq!(state.score, 1000, "11 purchases = 1100, clamped to 1000");

    events.push(ev("r", "REFUND", "2024-03-01T11:00:00Z")?);
    let (state, applied) = LeadScore::fold(&rules, events);
    assert_eq!(state.score, 900, "the refund starts from the clamped 1000");
    assert_eq!(applied.last().map(|(_, p)| *p), Some(-100));
    assert_eq!(state.event_counts.get("PURCHASE"), Some(&11));
    assert_eq!(state.events, 12);
    Ok(())
}

#[test]
fn max_per_day_counts_per_type_per_utc_day() -> TestResult {
    let rules = ScoreRules::defaults().with_rule(Rule {
        event_type: "PAGE_VIEW".into(),
        points: 5,
        active: true,
        max_per_day: Some(2),
    });
    let (state, applied) = LeadScore::fold(
        &rules,
        vec![
            // Given out of order on purpose: the fold sorts.
            ev("d", "PAGE_VIEW", "2024-03-02T00:00:00Z")?,
            ev("a", "PAGE_VIEW", "2024-03-01T23:59:59.997Z")?,
            ev("c", "PAGE_VIEW", "2024-03-01T23:59:59.999Z")?,
            ev("b", "PAGE_VIEW", "2024-03-01T23:59:59.998Z")?,
            ev("m", "EMAIL_OPEN", "2024-03-01T23:59:59.999Z")?,
            ev("e", "PAGE_VIEW", "2024-03-02T00:00:00.001Z")?,
            ev("f", "PAGE_VIEW", "2024-03-02T12:00:00Z")?,
            ev("g", "PAGE_VIEW", "2024-03-02T23:59:59.999Z")?,
            ev("h", "PAGE_VIEW", "2024-03-03T00:00:00Z")?,
        ],
    );
    assert_eq!(
        ids(&applied),
        vec!["a", "b", "c", "m", "d", "e", "f", "g", "h"]
    );
    // Mar 1: a, b score; c is the 3rd page view (0); the email open is another type.
    // Mar 2 starts at 00:00:00Z: d, e score; f, g are 3rd and 4th (0). Mar 3: h scores.
    assert_eq!(points(&applied), vec![5, 5, 0, 10, 5, 5, 0, 0, 5]);
    assert_eq!(state.score, 35);
    assert_eq!(state.events, 9);
    assert_eq!(state.event_counts.get("PAGE_VIEW"), Some(&8));
    assert_eq!(state.event_counts.get("EMAIL_OPEN"), Some(&1));
    assert_eq!(
        state.day_counts,
        BTreeMap::from([("PAGE_VIEW".to_owned(), 1)]),
        "only the day of the last event is kept"
    );
    Ok(())
}

#[test]
fn inactive_and_unknown_types_score_zero_but_count() -> TestResult {
    let rules = ScoreRules::defaults().with_rule(Rule {
        event_type: "PAGE_VIEW".into(),
        points: 5,
        active: false,
        max_per_day: None,
    });
    let (state, applied) = LeadScore::fold(
        &rules,
        vec![
            ev("1", "PAGE_VIEW", "2024-03-01T10:00:00Z")?,
            ev("2", "ad.click", "2024-03-01T10:00:01Z")?,
            ev("3", "EMAIL_OPEN", "2024-03-01T10:00:02Z")?,
            ev("4", "email_open", "2024-03-01T10:00:03Z")?,
        ],
    );
    assert_eq!(points(&applied), vec![0, 0, 10, 0]);
    assert_eq!(state.score, 10);
    assert_eq!(state.events, 4);
    assert_eq!(
        state.event_counts,
        BTreeMap::from([
            ("EMAIL_OPEN".to_owned(), 1),
            ("PAGE_VIEW".to_owned(), 1),
            ("ad.click".to_owned(), 1),
            ("email_open".to_owned(), 1),
        ])
    );
    Ok(())
}

#[test]
fn timestamp_ties_are_ordered_by_event_id() -> TestResult {
    let rules = ScoreRules::defaults();
    let t = "2024-03-01T10:00:00Z";
    // Input order b, a: in fold order the refund "a" comes first and clamps at 0, then the
    // purchase gives 100 (input order would give 100 - 100 = 0).
    let (state, applied) =
        LeadScore::fold(&rules, vec![ev("b", "PURCHASE", t)?, ev("a", "REFUND", t)?]);
    assert_eq!(ids(&applied), vec!["a", "b"]);
    assert_eq!(state.score, 100);
    assert_eq!(state.last, Some((at(t)?, "b".to_owned())));
    assert_eq!(state.last_activity_at, Some(at(t)?));

    // Byte order, not numeric: "a10" < "a9".
    let (state, applied) = LeadScore::fold(
        &rules,
        vec![ev("a9", "REFUND", t)?, ev("a10", "PURCHASE", t)?],
    );
    assert_eq!(ids(&applied), vec!["a10", "a9"]);
    assert_eq!(state.score, 0);
    Ok(())
}

#[test]
fn duplicate_event_ids_are_folded_once() -> TestResult {
    let rules = ScoreRules::defaults();
    let (state, applied) = LeadScore::fold(
        &rules,
        vec![
            ev("x", "PURCHASE", "2024-03-01T10:00:00Z")?,
            ev("x", "PURCHASE", "2024-03-01T10:00:00Z")?,
            ev("y", "PAGE_VIEW", "2024-03-01T11:00:00Z")?,
            ev("x", "PURCHASE", "2024-03-01T12:00:00Z")?,
        ],
    );
    assert_eq!(ids(&applied), vec!["x", "y"]);
    assert_eq!(state.score, 105);
    assert_eq!(state.events, 2);
    Ok(())
}

#[test]
fn out_of_order_leaves_the_state_unchanged() -> TestResult {
    let rules = ScoreRules::defaults();
    let mut state = LeadScore::default();
    assert_eq!(
        state.apply(&rules, &ev("m", "PURCHASE", "2024-03-01T10:00:00Z")?),
        ApplyOutcome::Applied { points: 100 }
    );
    let before = state.clone();
    for older in [
        ev("z", "REFUND", "2024-03-01T09:59:59.999Z")?, // older timestamp
        ev("m", "REFUND", "2024-03-01T10:00:00Z")?,     // equal key
        ev("m", "PURCHASE", "2024-03-01T10:00:00Z")?,   // the same event again
        ev("l", "REFUND", "2024-03-01T10:00:00Z")?,     // same time, smaller id
    ] {
        assert_eq!(state.apply(&rules, &older), ApplyOutcome::OutOfOrder);
        assert_eq!(state, before);
    }
    assert_eq!(
        state.apply(&rules, &ev("n", "REFUND", "2024-03-01T10:00:00Z")?),
        ApplyOutcome::Applied { points: -100 }
    );
    assert_eq!(state.score, 0);
    assert_eq!(
        state.last,
        Some((at("2024-03-01T10:00:00Z")?, "n".to_owned()))
    );
    Ok(())
}

#[test]
fn apply_batch_is_incremental_only_strictly_after_the_last_event() -> TestResult {
    let rules = ScoreRules::defaults();
    let first = vec![
        ev("b", "PAGE_VIEW", "2024-03-01T10:00:01Z")?,
        ev("a", "EMAIL_OPEN", "2024-03-01T10:00:00Z")?,
    ];
    let BatchResult::Incremental(state, applied) = apply_batch(None, &rules, first) else {
        return Err("a first batch is always incremental".into());
    };
    assert_eq!(ids(&applied), vec!["a", "b"]);
    assert_eq!(points(&applied), vec![10, 5]);
    assert_eq!(state.score, 15);

    // Redelivery of the last applied event, an older event, or a tie with a smaller id.
    for batch in [
        vec![ev("b", "PAGE_VIEW", "2024-03-01T10:00:01Z")?],
        vec![
            ev("c", "PURCHASE", "2024-03-01T11:00:00Z")?,
            ev("0", "PURCHASE", "2024-03-01T09:00:00Z")?,
        ],
        vec![ev("a2", "PURCHASE", "2024-03-01T10:00:01Z")?],
    ] {
        assert_eq!(
            apply_batch(Some((*state).clone()), &rules, batch),
            BatchResult::NeedsRecompute
        );
    }

    let BatchResult::Incremental(same, none) = apply_batch(Some((*state).clone()), &rules, vec![])
    else {
        return Err("an empty batch changes nothing".into());
    };
    assert_eq!((same, none.len()), (state.clone(), 0));

    let later = vec![
        ev("d", "PURCHASE", "2024-03-01T12:00:00Z")?,
        ev("c", "PURCHASE", "2024-03-01T10:00:01Z")?,
        ev("d", "PURCHASE", "2024-03-01T12:00:00Z")?,
    ];
    let BatchResult::Incremental(state, applied) = apply_batch(Some(*state), &rules, later) else {
        return Err("events after the last one apply incrementally".into());
    };
    assert_eq!(ids(&applied), vec!["c", "d"]);
    assert_eq!(state.score, 215);
    assert_eq!(state.events, 4);
    Ok(())
}

/// xorshift64*: a tiny deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn property_rules() -> ScoreRules {
    let mut rules = ScoreRules::defaults()
        .with_rule(Rule {
            event_type: "PAGE_VIEW".into(),
            points: 5,
            active: true,
            max_per_day: Some(2),
        })
        .with_rule(Rule {
            event_type: "EMAIL_OPEN".into(),
            points: 10,
            active: false,
            max_per_day: None,
        })
        .with_rule(Rule {
            event_type: "PURCHASE".into(),
            points: 100,
            active: true,
            max_per_day: Some(1),
        });
    rules.max = 250;
    rules
}

fn random_events(rng: &mut Rng, n: usize) -> Result<Vec<ScoredEvent>, Box<dyn Error>> {
    const TYPES: [&str; 6] = [
        "PAGE_VIEW",
        "EMAIL_OPEN",
        "PURCHASE",
        "REFUND",
        "DEMO_REQUEST",
        "ad.click",
    ];
    let base = Utc
        .with_ymd_and_hms(2024, 3, 1, 22, 0, 0)
        .single()
        .ok_or("bad base time")?;
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        // Few distinct instants (ties on timestamp), spread over about three UTC days.
        let hours = i64::try_from(rng.below(60))?;
        let ms = i64::try_from(rng.below(3))?;
        let ts = base + Duration::hours(hours) + Duration::milliseconds(ms);
        let event_type = TYPES[rng.below(TYPES.len())];
        events.push(ScoredEvent::new(
            format!("e{}", rng.next() % 1000 + i as u64 * 1000),
            event_type,
            ts,
        ));
    }
    Ok(events)
}

/// The semantics written out directly, independent of `LeadScore`: per-event points and the
/// final score of events with unique ids.
fn reference_fold(rules: &ScoreRules, events: &[ScoredEvent]) -> (i64, Vec<i64>) {
    let mut sorted: Vec<&ScoredEvent> = events.iter().collect();
    sorted.sort_by(|a, b| (a.timestamp, &a.event_id).cmp(&(b.timestamp, &b.event_id)));
    let mut per_day: BTreeMap<(chrono::NaiveDate, &str), u32> = BTreeMap::new();
    let mut score = 0;
    let mut points = Vec::new();
    for e in sorted {
        let seen = per_day
            .entry((e.timestamp.date_naive(), e.event_type.as_str()))
            .or_insert(0);
        let p = match rules.rules.get(&e.event_type) {
            Some(r) if r.active && r.max_per_day.is_none_or(|max| *seen < max) => r.points,
            _ => 0,
        };
        *seen += 1;
        score = (score + p).clamp(rules.min, rules.max);
        points.push(p);
    }
    (score, points)
}

#[test]
fn incremental_application_over_any_split_equals_the_fold() -> TestResult {
    let rules = property_rules();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let n = 1 + rng.below(40);
        let events = random_events(&mut rng, n)?;
        let (expected, expected_applied) = LeadScore::fold(&rules, events.clone());
        assert_eq!(expected.events, n as u64, "round {round}: ids are unique");
        let (reference_score, reference_points) = reference_fold(&rules, &events);
        assert_eq!(expected.score, reference_score, "round {round}: reference");
        assert_eq!(
            points(&expected_applied),
            reference_points,
            "round {round}: reference"
        );

        // In fold order, split at random points, one `apply` per event.
        let mut sorted = events.clone();
        sorted.sort();
        let mut state = LeadScore::default();
        let mut applied = Vec::new();
        for e in &sorted {
            match state.apply(&rules, e) {
                ApplyOutcome::Applied { points } => applied.push((e.clone(), points)),
                ApplyOutcome::OutOfOrder => {
                    return Err(format!("round {round}: out of order").into())
                }
            }
            if rng.below(4) == 0 {
                // A stored-and-reloaded state continues identically.
                state = serde_json::from_str(&serde_json::to_string(&state)?)?;
            }
        }
        assert_eq!(state, expected, "round {round}: sequential apply");
        assert_eq!(applied, expected_applied, "round {round}: per-event points");

        // Sorted order split into random batches, each batch shuffled: always incremental.
        let mut state = None;
        let mut applied = Vec::new();
        let mut rest = sorted.as_slice();
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len());
            let mut batch = rest[..take].to_vec();
            rest = &rest[take..];
            rng.shuffle(&mut batch);
            match apply_batch(state.take(), &rules, batch) {
                BatchResult::Incremental(next, mut new) => {
                    state = Some(*next);
                    applied.append(&mut new);
                }
                BatchResult::NeedsRecompute => {
                    return Err(format!("round {round}: sorted batches need no recompute").into())
                }
            }
        }
        assert_eq!(
            state.as_ref(),
            Some(&expected),
            "round {round}: sorted batches"
        );
        assert_eq!(applied, expected_applied, "round {round}: batch points");

        // Any arrival order, random batches, redeliveries: recompute from history when asked.
        let mut arrivals = events.clone();
        rng.shuffle(&mut arrivals);
        let mut history: Vec<ScoredEvent> = Vec::new();
        let mut state: Option<LeadScore> = None;
        let mut rest = arrivals.as_slice();
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len().min(8));
            let mut batch = rest[..take].to_vec();
            rest = &rest[take..];
            if !history.is_empty() && rng.below(3) == 0 {
                batch.push(history[rng.below(history.len())].clone());
            }
            history.extend(batch.iter().cloned());
            state = Some(match apply_batch(state.take(), &rules, batch) {
                BatchResult::Incremental(next, _) => *next,
                BatchResult::NeedsRecompute => LeadScore::fold(&rules, history.clone()).0,
            });
        }
        assert_eq!(state.as_ref(), Some(&expected), "round {round}: any order");
    }
    Ok(())
}

fn lead_with(points: i64, last: DateTime<Utc>) -> LeadScore {
    let rules = ScoreRules::defaults().with_rule(Rule::new("X", points));
    LeadScore::fold(&rules, [ScoredEvent::new("x", "X", last)]).0
}

#[test]
fn decay_counts_whole_days_past_the_grace_period() -> TestResult {
    let decay = ScoreRules::defaults().decay;
    let last = at("2024-03-01T10:00:00Z")?;
    let lead = lead_with(100, last);
    assert_eq!(lead.score, 100);
    let day = Duration::days(1);
    let cases = [
        (Duration::zero(), 100),
        (day * 14, 100),                             // exactly 14 days: no decay
        (day * 15 - Duration::milliseconds(1), 100), // 14 whole days and a bit
        (day * 15, 98),                              // 100 × 0.98
        (day * 16, 96),                              // 100 × 0.9604 = 96.04
        (day * 20, 89),                              // 100 × 0.98^6 = 88.5842380864
        (day * 21 - Duration::milliseconds(1), 89),  // still 20 whole days
        (day * 21, 87),                              // 100 × 0.98^7 = 86.812553324672
        (-day, 100),                                 // a read "before" the last event
    ];
    for (elapsed, expected) in cases {
        assert_eq!(
            lead.decayed_score(&decay, last + elapsed),
            expected,
            "after {elapsed}"
        );
    }
    // Years of inactivity decay to 0 without overflow.
    assert_eq!(lead.decayed_score(&decay, last + day * 3650), 0);
    assert_eq!(
        lead_with(1000, last).decayed_score(&decay, last + day * 400),
        0
    );
    // No events: nothing to decay.
    assert_eq!(LeadScore::default().decayed_score(&decay, last), 0);
    Ok(())
}

#[test]
fn decay_rounds_once_half_away_from_zero() -> TestResult {
    let decay = ScoreRules::defaults().decay;
    let last = at("2024-03-01T00:00:00Z")?;
    let day = Duration::days(1);
    // 25 × 0.98 = 24.5 → 25 (half away from zero; banker's rounding would give 24).
    assert_eq!(
        lead_with(25, last).decayed_score(&decay, last + day * 15),
        25
    );
    // 75 × 0.98 = 73.5 → 74.
    assert_eq!(
        lead_with(75, last).decayed_score(&decay, last + day * 15),
        74
    );
    // Rounded once: 25 × 0.98² = 24.01 → 24, whereas rounding daily would give 25 → 24.5 → 25.
    assert_eq!(
        lead_with(25, last).decayed_score(&decay, last + day * 16),
        24
    );

    let custom = Decay {
        after_days: 0,
        percent_per_day: Decimal::new(25, 1),
    };
    // 100 × 0.975 = 97.5 → 98; 100 × 0.975² = 95.0625 → 95.
    assert_eq!(lead_with(100, last).decayed_score(&custom, last + day), 98);
    assert_eq!(
        lead_with(100, last).decayed_score(&custom, last + day * 2),
        95
    );
    let halving = Decay {
        after_days: 1,
        percent_per_day: Decimal::new(50, 0),
    };
    // 1000 × 0.5³ = 125.
    assert_eq!(
        lead_with(1000, last).decayed_score(&halving, last + day * 4),
        125
    );
    let total = Decay {
        after_days: 0,
        percent_per_day: Decimal::new(100, 0),
    };
    assert_eq!(lead_with(1000, last).decayed_score(&total, last + day), 0);
    Ok(())
}

#[test]
fn rules_serialize_as_the_api_body() -> TestResult {
    let expected = json!({
        "rules": [
            {"eventType": "DEMO_REQUEST", "points": 50, "active": true, "maxPerDay": null},
            {"eventType": "EMAIL_OPEN", "points": 10, "active": true, "maxPerDay": null},
            {"eventType": "FORM_SUBMISSION", "points": 20, "active": true, "maxPerDay": null},
            {"eventType": "PAGE_VIEW", "points": 5, "active": true, "maxPerDay": null},
            {"eventType": "PURCHASE", "points": 100, "active": true, "maxPerDay": null},
            {"eventType": "REFUND", "points": -100, "active": true, "maxPerDay": null}
        ],
        "score": {"min": 0, "max": 1000},
        "decay": {"afterDays": 14, "percentPerDay": 2}
    });
    let defaults = ScoreRules::defaults();
    assert_eq!(defaults.to_api_json(), expected);
    // Field order as docs/api.md writes it; the stored form adds the stages.
    assert_eq!(
        serde_json::to_string(&defaults)?,
        concat!(
            r#"{"rules":["#,
            r#"{"eventType":"DEMO_REQUEST","points":50,"active":true,"maxPerDay":null},"#,
            r#"{"eventType":"EMAIL_OPEN","points":10,"active":true,"maxPerDay":null},"#,
            r#"{"eventType":"FORM_SUBMISSION","points":20,"active":true,"maxPerDay":null},"#,
            r#"{"eventType":"PAGE_VIEW","points":5,"active":true,"maxPerDay":null},"#,
            r#"{"eventType":"PURCHASE","points":100,"active":true,"maxPerDay":null},"#,
            r#"{"eventType":"REFUND","points":-100,"active":true,"maxPerDay":null}],"#,
            r#""score":{"min":0,"max":1000},"decay":{"afterDays":14,"percentPerDay":2},"#,
            r#""stages":[{"name":"MQL","minScore":100},{"name":"SQL","minScore":300}]}"#
        )
    );
    // A set stored before stages existed reads back with the default stages its bounds allow.
    let back: ScoreRules = serde_json::from_value(expected.clone())?;
    assert_eq!(back, defaults);
    let mut narrow = expected;
    narrow["score"]["max"] = json!(200);
    let narrow: ScoreRules = serde_json::from_value(narrow)?;
    assert_eq!(narrow.stages, vec![Stage::new("MQL", 100)]);

    let mut custom = ScoreRules::defaults().with_rule(Rule {
        event_type: "ad.click".into(),
        points: -3,
        active: false,
        max_per_day: Some(4),
    });
    custom.decay.percent_per_day = Decimal::new(25, 1);
    let value = custom.to_api_json();
    assert_eq!(
        value["decay"],
        json!({"afterDays": 14, "percentPerDay": 2.5})
    );
    assert_eq!(
        value["rules"][6],
        json!({"eventType": "ad.click", "points": -3, "active": false, "maxPerDay": 4})
    );
    let back: ScoreRules = serde_json::from_str(&serde_json::to_string(&custom)?)?;
    assert_eq!(back, custom);

    // Input leniency: percentPerDay as a string, `active` and `maxPerDay` omitted.
    let lenient: ScoreRules = serde_json::from_value(json!({
        "rules": [{"eventType": "PAGE_VIEW", "points": 5}],
        "score": {"min": 0, "max": 1000},
        "decay": {"afterDays": 14, "percentPerDay": "0.1"}
    }))?;
    assert_eq!(lenient.rule("PAGE_VIEW"), Some(&Rule::new("PAGE_VIEW", 5)));
    assert_eq!(lenient.decay.percent_per_day, Decimal::new(1, 1));
    assert_eq!(lenient.to_api_json()["decay"]["percentPerDay"], json!(0.1));
    Ok(())
}

#[test]
fn invalid_rule_sets_do_not_deserialize() {
    let rule = |event_type: &str| json!({"eventType": event_type, "points": 1});
    let with = |rules: serde_json::Value, min: i64, max: i64, percent: serde_json::Value| {
        serde_json::from_value::<ScoreRules>(json!({
            "rules": rules,
            "score": {"min": min, "max": max},
            "decay": {"afterDays": 14, "percentPerDay": percent}
        }))
    };
    assert!(with(json!([rule("A"), rule("B")]), 0, 10, json!(2)).is_ok());
    assert!(with(json!([rule("A"), rule("A")]), 0, 10, json!(2)).is_err());
    assert!(with(json!([rule("1A")]), 0, 10, json!(2)).is_err());
    assert!(with(json!([]), 11, 10, json!(2)).is_err());
    assert!(with(json!([]), 0, 10, json!(100.5)).is_err());
    assert!(with(json!([]), 0, 10, json!(-1)).is_err());
    assert!(with(json!([]), 0, 10, json!("0.00001")).is_err());
    assert!(with(json!([]), 0, 10, json!("x")).is_err());
}

#[test]
fn validate_rule_reports_each_field() {
    let ok = |r: Rule| ScoreRules::validate_rule(&r);
    assert_eq!(ok(Rule::new("user.signup", 1_000_000)), Ok(()));
    assert_eq!(ok(Rule::new("a:b-c_d.e", -1_000_000)), Ok(()));
    assert_eq!(ok(Rule::new("A".repeat(64), 0)), Ok(()));

    let paths = |r: Rule| -> Vec<String> {
        ScoreRules::validate_rule(&r)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path.into_owned())
            .collect()
    };
    assert_eq!(paths(Rule::new("A".repeat(65), 0)), vec!["/eventType"]);
    assert_eq!(paths(Rule::new("1abc", 0)), vec!["/eventType"]);
    assert_eq!(paths(Rule::new("", 0)), vec!["/eventType"]);
    assert_eq!(paths(Rule::new("a b", 0)), vec!["/eventType"]);
    assert_eq!(paths(Rule::new("é", 0)), vec!["/eventType"]);
    assert_eq!(paths(Rule::new("A", 1_000_001)), vec!["/points"]);
    assert_eq!(paths(Rule::new("A", i64::MIN)), vec!["/points"]);
    let capped = |max| Rule {
        max_per_day: Some(max),
        ..Rule::new("A", 1)
    };
    assert_eq!(paths(capped(0)), vec!["/maxPerDay"]);
    assert_eq!(paths(capped(1)), Vec::<String>::new());
    assert_eq!(
        paths(Rule {
            event_type: "-".into(),
            points: -1_000_001,
            active: true,
            max_per_day: Some(0),
        }),
        vec!["/eventType", "/points", "/maxPerDay"]
    );
}

#[test]
fn lead_score_round_trips_through_json() -> TestResult {
    let rules = ScoreRules::defaults();
    let (state, _) = LeadScore::fold(
        &rules,
        vec![
            ev("a", "PAGE_VIEW", "2024-03-01T10:00:00.123Z")?,
            ev("b", "ad.click", "2024-03-01T10:00:00.123456789Z")?,
        ],
    );
    let value = serde_json::to_value(&state)?;
    assert_eq!(
        value,
        json!({
            "score": 5,
            "last": {"timestamp": "2024-03-01T10:00:00.123456789Z", "eventId": "b"},
            "dayCounts": {},
            "eventCounts": {"PAGE_VIEW": 1, "ad.click": 1},
            "events": 2,
            "lastActivityAt": "2024-03-01T10:00:00.123456789Z",
            "profile": {},
            "recentPoints": [5, 0]
        })
    );
    let back: LeadScore = serde_json::from_value(value)?;
    assert_eq!(back, state);

    let empty: LeadScore = serde_json::from_str(&serde_json::to_string(&LeadScore::default())?)?;
    assert_eq!(empty, LeadScore::default());

    let e = ev("a", "PAGE_VIEW", "2024-03-01T10:00:00Z")?;
    assert_eq!(
        serde_json::to_value(&e)?,
        json!({"eventId": "a", "type": "PAGE_VIEW", "timestamp": "2024-03-01T10:00:00.000Z"})
    );
    assert_eq!(
        serde_json::from_value::<ScoredEvent>(serde_json::to_value(&e)?)?,
        e
    );
    Ok(())
}

#[test]
fn one_lead_with_ten_thousand_distinct_types_stays_a_small_item() -> TestResult {
    let rules = ScoreRules::defaults().with_rule(Rule {
        event_type: "PAGE_VIEW".into(),
        points: 5,
        active: true,
        max_per_day: Some(2),
    });
    let start = at("2026-11-02T00:00:00Z")?;
    let mut events: Vec<ScoredEvent> = (0..10_000)
        .map(|i| {
            ScoredEvent::new(
                format!("e{i:05}"),
                format!("custom.type.{i:05}.{}", "x".repeat(40)),
                start + Duration::seconds(i),
            )
        })
        .collect();
    // Capped types are still counted per day, however many others there are.
    for i in 0..3 {
        events.push(ScoredEvent::new(
            format!("p{i}"),
            "PAGE_VIEW",
            start + Duration::seconds(20_000 + i),
        ));
    }
    let (state, applied) = LeadScore::fold(&rules, events);
    assert_eq!(state.events, 10_003);
    assert_eq!(points(&applied[10_000..]), vec![5, 5, 0]);
    assert_eq!(state.event_counts.len(), MAX_COUNTED_TYPES + 1);
    // 100 types one by one; the other 9,900 and the three page views together.
    assert_eq!(state.event_counts.get(OTHER_TYPES), Some(&(9_900 + 3)));
    assert_eq!(
        state.event_counts.get("PAGE_VIEW"),
        None,
        "counted under (other)"
    );
    assert_eq!(
        state.day_counts,
        BTreeMap::from([("PAGE_VIEW".to_owned(), 3)]),
        "only capped types are counted per day"
    );
    let bytes = serde_json::to_vec(&state)?.len();
    assert!(bytes < 16 * 1024, "{bytes} bytes");
    Ok(())
}

#[test]
fn a_rule_set_holds_at_most_max_rules() {
    let mut rules = ScoreRules::defaults();
    let mut i = 0;
    while rules.rules.len() < MAX_RULES {
        rules.set_rule(Rule::new(format!("T{i}"), 1));
        i += 1;
    }
    assert!(rules.validate().is_ok());
    rules.set_rule(Rule::new("ONE_TOO_MANY", 1));
    let errors = rules.validate().err().unwrap_or_default();
    assert!(errors.iter().any(|e| e.path == "/rules"), "{errors:?}");
}
