//! Hand-computed counters, UTC bucketing, merge laws against a seeded random event list, and the
//! compact encoding (round trips with hostile values, determinism, splitting).

use std::collections::BTreeMap;
use std::error::Error;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::event::{Demographics, FunnelStage, Money};

type TestResult = Result<(), Box<dyn Error>>;

fn at(ts: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("{ts}: {e}"),
    }
}

fn dec(s: &str) -> Decimal {
    match Decimal::from_str(s) {
        Ok(d) => d,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn money(amount: &str, currency: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: currency.to_owned(),
    })
}

fn ev(id: &str, ty: &str, ts: &str, source: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: ty.to_owned(),
        timestamp: at(ts),
        source: source.to_owned(),
        lead_id: None,
        user_id: None,
        lead: None,
        campaign_id: None,
        region_id: None,
        funnel_stage: None,
        revenue: None,
        user: None,
        payload: None,
        metadata: None,
    }
}

fn user(
    age: Option<u8>,
    gender: Option<&str>,
    country: Option<&str>,
    followers: Option<u64>,
) -> Option<Demographics> {
    Some(Demographics {
        age,
        gender: gender.map(str::to_owned),
        country: country.map(str::to_owned),
        city: Some("Springfield".to_owned()),
        followers,
    })
}

fn totals(count: u64, revenue_events: u64, revenue: &[(&str, &str)]) -> Totals {
    Totals {
        count,
        revenue_events,
        revenue: revenue
            .iter()
            .map(|(c, a)| ((*c).to_owned(), dec(a)))
            .collect(),
    }
}

fn key(dimension: Dimension, value: &str, ty: &str) -> AggregateKey {
    AggregateKey::new(dimension, value, ty)
}

fn demo(source: &str, facet: Facet, band: &str) -> DemographicKey {
    DemographicKey::new(source, facet, band)
}

/// One window: everything `rollup` holds, merged.
fn single_window(rollup: &Rollup) -> WindowAggregates {
    let mut all = WindowAggregates::default();
    for window in rollup.hours.values() {
        all.merge(window);
    }
    all
}

fn count_of(window: Option<&WindowAggregates>, ty: &str) -> u64 {
    window
        .and_then(|w| w.totals.get(&key(Dimension::All, "", ty)))
        .map_or(0, |t| t.count)
}

/// Purchases, a refund, two currencies, missing dimensions and demographics, a Facebook event
/// with a country name.
fn hand_events() -> Vec<Event> {
    vec![
        Event {
            campaign_id: Some("c1".into()),
            region_id: Some("eu".into()),
            funnel_stage: Some(FunnelStage::Bottom),
            revenue: money("12.50", "USD"),
            user: user(Some(30), Some("Female"), Some("US"), Some(1_500)),
            ..ev("e1", "PURCHASE", "2024-05-01T10:15:00Z", "web")
        },
        Event {
            campaign_id: Some("c1".into()),
            funnel_stage: Some(FunnelStage::Bottom),
            revenue: money("7.25", "EUR"),
            ..ev("e2", "PURCHASE", "2024-05-01T10:20:00Z", "web")
        },
        Event {
            campaign_id: Some("c1".into()),
            region_id: Some("eu".into()),
            revenue: money("-12.50", "USD"),
            user: user(Some(17), None, None, None),
            ..ev("e3", "REFUND", "2024-05-01T10:30:00Z", "web")
        },
        Event {
            campaign_id: Some("ad|1".into()),
            funnel_stage: Some(FunnelStage::Top),
            user: user(Some(65), Some("MALE"), Some("United States"), Some(100_000)),
            ..ev("e4", "PAGE_VIEW", "2024-05-01T10:40:00Z", "facebook")
        },
        Event {
            funnel_stage: Some(FunnelStage::Bottom),
            revenue: money("0.0001", "USD"),
            user: user(None, Some("female"), Some("US"), Some(0)),
            ..ev("e5", "PURCHASE", "2024-05-01T10:50:00Z", "web")
        },
        ev("e6", "PURCHASE", "2024-05-01T10:55:00Z", "web"),
    ]
}

#[test]
fn hand_computed_counters() {
    let mut rollup = Rollup::default();
    for e in hand_events() {
        rollup.add(&e);
    }
    assert_eq!(rollup.hours.keys().collect::<Vec<_>>(), ["2024-05-01T10"]);

    use Dimension::*;
    let purchases_all = totals(4, 3, &[("USD", "12.5001"), ("EUR", "7.25")]);
    let purchases_bottom = totals(3, 3, &[("USD", "12.5001"), ("EUR", "7.25")]);
    let refund = totals(1, 1, &[("USD", "-12.50")]);
    let view = totals(1, 0, &[]);
    let expected_totals = BTreeMap::from([
        (key(All, "", "PURCHASE"), purchases_all.clone()),
        (key(All, "", "REFUND"), refund.clone()),
        (key(All, "", "PAGE_VIEW"), view.clone()),
        (
            key(CampaignId, "c1", "PURCHASE"),
            totals(2, 2, &[("USD", "12.50"), ("EUR", "7.25")]),
        ),
        (key(CampaignId, "c1", "REFUND"), refund.clone()),
        (key(CampaignId, "ad|1", "PAGE_VIEW"), view.clone()),
        (
            key(RegionId, "eu", "PURCHASE"),
            totals(1, 1, &[("USD", "12.50")]),
        ),
        (key(RegionId, "eu", "REFUND"), refund.clone()),
        (key(Source, "web", "PURCHASE"), purchases_all),
        (key(Source, "web", "REFUND"), refund.clone()),
        (key(Source, "facebook", "PAGE_VIEW"), view.clone()),
        // Revenue-bearing events only: e4 (a campaign, no revenue) is not counted here.
        (
            key(SourceCampaign, "web|c1", "PURCHASE"),
            totals(2, 2, &[("USD", "12.50"), ("EUR", "7.25")]),
        ),
        (key(SourceCampaign, "web|c1", "REFUND"), refund),
        (
            key(FunnelStage, "bottom", "PURCHASE"),
            purchases_bottom.clone(),
        ),
        (key(FunnelStage, "top", "PAGE_VIEW"), view.clone()),
        (
            key(SourceFunnelStage, "web|bottom", "PURCHASE"),
            purchases_bottom,
        ),
        (key(SourceFunnelStage, "facebook|top", "PAGE_VIEW"), view),
    ]);
    let expected_demographics = BTreeMap::from([
        (demo("web", Facet::Age, "25-34"), 1),
        (demo("web", Facet::Age, "<18"), 1),
        (demo("web", Facet::Age, "unknown"), 3),
        (demo("web", Facet::Gender, "female"), 2),
        (demo("web", Facet::Gender, "unknown"), 3),
        (demo("web", Facet::Country, "US"), 2),
        (demo("web", Facet::Country, "unknown"), 3),
        (demo("web", Facet::Followers, "1k-10k"), 1),
        (demo("web", Facet::Followers, "<1k"), 1),
        (demo("web", Facet::Followers, "unknown"), 3),
        (demo("facebook", Facet::Age, "65+"), 1),
        (demo("facebook", Facet::Gender, "male"), 1),
        (demo("facebook", Facet::Country, "United States"), 1),
        (demo("facebook", Facet::Followers, "100k+"), 1),
    ]);
    let window = single_window(&rollup);
    assert_eq!(window.totals, expected_totals);
    assert_eq!(window.demographics, expected_demographics);
    assert_eq!(window.len(), 17 + 14);

    // Scales are kept exactly, not just numerically equal.
    let usd = window
        .totals
        .get(&key(All, "", "PURCHASE"))
        .map(|t| t.revenue_in("USD").to_string());
    assert_eq!(usd.as_deref(), Some("12.5001"));

    // The documented encoding, member for member.
    assert_eq!(
        window.to_json(),
        json!({
            "t": {
                "a": {"": {
                    "PAGE_VIEW": 1,
                    "PURCHASE": [4, {"EUR": "7.25", "USD": "12.5001"}, 3],
                    "REFUND": [1, {"USD": "-12.50"}]
                }},
                "c": {
                    "ad|1": {"PAGE_VIEW": 1},
                    "c1": {"PURCHASE": [2, {"EUR": "7.25", "USD": "12.50"}], "REFUND": [1, {"USD": "-12.50"}]}
                },
                "f": {
                    "bottom": {"PURCHASE": [3, {"EUR": "7.25", "USD": "12.5001"}]},
                    "top": {"PAGE_VIEW": 1}
                },
                "r": {"eu": {"PURCHASE": [1, {"USD": "12.50"}], "REFUND": [1, {"USD": "-12.50"}]}},
                "s": {
                    "facebook": {"PAGE_VIEW": 1},
                    "web": {"PURCHASE": [4, {"EUR": "7.25", "USD": "12.5001"}, 3], "REFUND": [1, {"USD": "-12.50"}]}
                },
                "sc": {
                    "web|c1": {"PURCHASE": [2, {"EUR": "7.25", "USD": "12.50"}], "REFUND": [1, {"USD": "-12.50"}]}
                },
                "sf": {
                    "facebook|top": {"PAGE_VIEW": 1},
                    "web|bottom": {"PURCHASE": [3, {"EUR": "7.25", "USD": "12.5001"}]}
                }
            },
            "d": {
                "facebook": {"a": {"65+": 1}, "c": {"United States": 1}, "f": {"100k+": 1}, "g": {"male": 1}},
                "web": {
                    "a": {"25-34": 1, "<18": 1, "unknown": 3},
                    "c": {"US": 2, "unknown": 3},
                    "f": {"1k-10k": 1, "<1k": 1, "unknown": 3},
                    "g": {"female": 2, "unknown": 3}
                }
            }
        })
    );
}

#[test]
fn bands_at_their_edges() {
    let ages = [
        (None, "unknown"),
        (Some(0), "<18"),
        (Some(17), "<18"),
        (Some(18), "18-24"),
        (Some(24), "18-24"),
        (Some(25), "25-34"),
        (Some(34), "25-34"),
        (Some(35), "35-44"),
        (Some(44), "35-44"),
        (Some(45), "45-54"),
        (Some(54), "45-54"),
        (Some(55), "55-64"),
        (Some(64), "55-64"),
        (Some(65), "65+"),
        (Some(150), "65+"),
    ];
    for (age, band) in ages {
        assert_eq!(age_band(age), band, "{age:?}");
        assert!(AGE_BANDS.contains(&band));
    }
    let followers = [
        (None, "unknown"),
        (Some(0), "<1k"),
        (Some(999), "<1k"),
        (Some(1_000), "1k-10k"),
        (Some(9_999), "1k-10k"),
        (Some(10_000), "10k-100k"),
        (Some(99_999), "10k-100k"),
        (Some(100_000), "100k+"),
        (Some(u64::MAX), "100k+"),
    ];
    for (n, band) in followers {
        assert_eq!(followers_band(n), band, "{n:?}");
        assert!(FOLLOWER_BANDS.contains(&band));
    }
    assert_eq!(gender_band(Some(" Non-Binary ")), "non-binary");
    assert_eq!(gender_band(Some("")), "unknown");
    assert_eq!(gender_band(None), "unknown");
    assert_eq!(country_band(Some("Côte d'Ivoire")), "Côte d'Ivoire");
    assert_eq!(country_band(None), "unknown");
}

#[test]
fn codes_sort_like_their_keys() {
    // Sorted maps of keys and the encoded objects (keys sorted as strings) agree on order.
    for pair in Dimension::EVERY.windows(2) {
        assert!(pair[0] < pair[1] && pair[0].code() < pair[1].code());
    }
    for pair in Facet::EVERY.windows(2) {
        assert!(pair[0] < pair[1] && pair[0].code() < pair[1].code());
    }
    for d in Dimension::EVERY {
        assert_eq!(Dimension::parse(d.as_str()), Some(d));
        assert_eq!(Dimension::from_code(d.code()), Some(d));
    }
    for f in Facet::EVERY {
        assert_eq!(Facet::parse(f.as_str()), Some(f));
        assert_eq!(Facet::from_code(f.code()), Some(f));
    }
}

#[test]
fn utc_hour_and_day_boundaries() {
    let mut rollup = Rollup::default();
    for (id, ts) in [
        ("a", "2024-05-01T23:59:59.999Z"),
        ("b", "2024-05-02T00:00:00Z"),
        // 23:30Z on the 1st, written with an offset.
        ("c", "2024-05-02T01:30:00+02:00"),
        ("d", "2024-12-31T23:59:59.999Z"),
        ("e", "2025-01-01T00:00:00.000Z"),
    ] {
        rollup.add(&ev(id, "PAGE_VIEW", ts, "web"));
    }
    let hours: Vec<(&str, u64)> = rollup
        .hours
        .iter()
        .map(|(h, w)| (h.as_str(), count_of(Some(w), "PAGE_VIEW")))
        .collect();
    assert_eq!(
        hours,
        [
            ("2024-05-01T23", 2),
            ("2024-05-02T00", 1),
            ("2024-12-31T23", 1),
            ("2025-01-01T00", 1)
        ]
    );
    let days = rollup.days();
    let days: Vec<(&str, u64)> = days
        .iter()
        .map(|(d, w)| (d.as_str(), count_of(Some(w), "PAGE_VIEW")))
        .collect();
    assert_eq!(
        days,
        [
            ("2024-05-01", 2),
            ("2024-05-02", 1),
            ("2024-12-31", 1),
            ("2025-01-01", 1)
        ]
    );
}

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const HOSTILE: [&str; 12] = [
    "a|b",
    "|",
    "||",
    "%",
    "%7C",
    "%25|%",
    "日本",
    "😀|x",
    "\"q\"",
    "back\\slash",
    "/~1",
    "",
];

fn random_event(rng: &mut Rng, i: usize) -> Event {
    let start = at("2024-05-01T00:00:00Z");
    let offset = TimeDelta::milliseconds(rng.below(3 * 86_400_000) as i64);
    let ty = *rng.pick(&["PAGE_VIEW", "PURCHASE", "REFUND", "ad.click", "user.signup"]);
    let source = *rng.pick(&["web", "facebook", "tiktok", "api"]);
    let mut e = ev(&format!("e{i}"), ty, "2024-05-01T00:00:00Z", source);
    e.timestamp = start + offset;
    if rng.chance(70) {
        e.campaign_id = Some((*rng.pick(&["c1", "c2", "c3", "a|b", "%", "日本"])).to_owned());
    }
    if rng.chance(50) {
        e.region_id = Some((*rng.pick(&["eu", "us", "ap"])).to_owned());
    }
    if rng.chance(60) {
        e.funnel_stage =
            Some(*rng.pick(&[FunnelStage::Top, FunnelStage::Middle, FunnelStage::Bottom]));
    }
    if rng.chance(40) {
        let units = rng.below(2_000_000) as i64 - 1_000_000;
        let scale = rng.below(5) as u32;
        e.revenue = Some(Money {
            amount: Decimal::new(units, scale),
            currency: (*rng.pick(&["USD", "EUR", "JPY"])).to_owned(),
        });
    }
    if rng.chance(70) {
        let age = rng.chance(80).then(|| rng.below(100) as u8);
        let gender = rng.chance(70).then(|| *rng.pick(&["Female", "male", "NB"]));
        let country = rng
            .chance(70)
            .then(|| *rng.pick(&["US", "DE", "United States"]));
        let followers = rng.chance(50).then(|| rng.next() % 1_000_000);
        e.user = user(age, gender, country, followers);
    }
    e
}

fn random_events(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = Rng(seed);
    (0..n).map(|i| random_event(&mut rng, i)).collect()
}

fn rollup_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Rollup {
    let mut rollup = Rollup::default();
    for e in events {
        rollup.add(e);
    }
    rollup
}

#[test]
fn merge_is_independent_of_order_and_partition() {
    let events = random_events(7, 600);
    let reference = rollup_of(&events);
    let reference_bytes = reference.encode();
    let mut rng = Rng(42);
    for _ in 0..25 {
        // Shuffle (Fisher-Yates), cut into random parts, merge the parts in a random tree.
        let mut order: Vec<&Event> = events.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut cuts: Vec<usize> = (0..rng.below(8))
            .map(|_| rng.below(order.len() + 1))
            .collect();
        cuts.extend([0, order.len()]);
        cuts.sort_unstable();
        let mut parts: Vec<Rollup> = cuts
            .windows(2)
            .map(|w| rollup_of(order[w[0]..w[1]].iter().copied()))
            .collect();
        while parts.len() > 1 {
            let b = parts.swap_remove(rng.below(parts.len()));
            let a = rng.below(parts.len());
            parts[a].merge(&b);
        }
        let merged = parts.pop().unwrap_or_default();
        assert_eq!(merged, reference);
        assert_eq!(merged.encode(), reference_bytes);
    }

    // The laws, spelled out.
    let (a, b, c) = (
        rollup_of(&events[..100]),
        rollup_of(&events[100..350]),
        rollup_of(&events[350..]),
    );
    let merged = |x: &Rollup, y: &Rollup| {
        let mut m = x.clone();
        m.merge(y);
        m
    };
    assert_eq!(merged(&a, &b).encode(), merged(&b, &a).encode());
    assert_eq!(
        merged(&merged(&a, &b), &c).encode(),
        merged(&a, &merged(&b, &c)).encode()
    );
    assert_eq!(merged(&a, &Rollup::default()), a);
    assert_eq!(merged(&Rollup::default(), &a), a);
}

#[test]
fn a_batch_accumulator_counts_like_adding_events_one_by_one() {
    let mut events = random_events(11, 800);
    // Hostile values, a pair of source and stage too long for the stack buffer, and times on
    // both sides of the epoch (hours index by floor division).
    let long_source = "s".repeat(70);
    for (i, e) in events.iter_mut().enumerate().take(40) {
        e.campaign_id = Some(HOSTILE[i % HOSTILE.len()].to_owned());
        e.funnel_stage = Some(FunnelStage::Middle);
        if i % 3 == 0 {
            e.source = long_source.clone();
        }
        if i % 4 == 0 {
            e.timestamp = at("1969-12-31T23:59:59.999Z") - TimeDelta::hours(i as i64);
        }
    }
    let reference = rollup_of(&events);

    let mut batch = RollupAccumulator::default();
    events.iter().for_each(|e| batch.add(&EventFacts::from(e)));
    let mut absorbed = Rollup::default();
    absorbed.absorb(batch);
    assert_eq!(absorbed, reference);
    assert_eq!(absorbed.encode(), reference.encode());

    // Absorbing into a rollup that already holds counters adds to them, as merge does.
    let (head, tail) = events.split_at(300);
    let mut state = rollup_of(head);
    let mut batch = RollupAccumulator::default();
    tail.iter().for_each(|e| batch.add(&EventFacts::from(e)));
    state.absorb(batch);
    assert_eq!(state.encode(), reference.encode());
}

#[test]
fn days_are_the_sum_of_their_hours() {
    let events = random_events(11, 500);
    let rollup = rollup_of(&events);
    let days = rollup.days();
    assert_eq!(
        days.keys().collect::<Vec<_>>(),
        ["2024-05-01", "2024-05-02", "2024-05-03"]
    );
    for (day, window) in &days {
        let mut sum = WindowAggregates::default();
        for (hour, w) in &rollup.hours {
            if hour.starts_with(day.as_str()) {
                sum.merge(w);
            }
        }
        assert_eq!(window.encode(), sum.encode(), "{day}");
    }
    // And all days together are every event in one window.
    let mut everything = WindowAggregates::default();
    for e in &events {
        everything.add(e);
    }
    let mut all_days = WindowAggregates::default();
    for w in days.values() {
        all_days.merge(w);
    }
    assert_eq!(all_days.encode(), everything.encode());
    assert!(count_of(Some(&everything), "PAGE_VIEW") > 0);
}

#[test]
fn exact_decimal_sums() {
    let purchase = |id: &str, amount: &str| Event {
        revenue: money(amount, "USD"),
        ..ev(id, "PURCHASE", "2024-05-01T10:00:00Z", "web")
    };
    let usd = |w: &WindowAggregates| {
        w.totals
            .get(&key(Dimension::All, "", "PURCHASE"))
            .map(|t| t.revenue_in("USD").to_string())
    };

    let mut w = WindowAggregates::default();
    w.add(&purchase("a", "0.1"));
    w.add(&purchase("b", "0.2"));
    assert_eq!(usd(&w).as_deref(), Some("0.3"));

    let mut w = WindowAggregates::default();
    for i in 0..10_000 {
        w.add(&purchase(&format!("p{i}"), "0.0001"));
    }
    assert_eq!(usd(&w).as_deref(), Some("1.0000"));
    assert_eq!(count_of(Some(&w), "PURCHASE"), 10_000);

    // A refund cancelling a purchase is a positive zero in either order.
    for pair in [["12.50", "-12.50"], ["-12.50", "12.50"]] {
        let mut w = WindowAggregates::default();
        w.add(&purchase("x", pair[0]));
        w.add(&purchase("y", pair[1]));
        assert_eq!(usd(&w).as_deref(), Some("0.00"));
        assert!(
            w.encode().contains(r#"[2,{"USD":"0.00"}]"#),
            "{}",
            w.encode()
        );
    }
}

/// A window with hostile strings in every free-form place, and extreme amounts.
fn hostile_window() -> WindowAggregates {
    let mut w = WindowAggregates::default();
    let amounts = [
        "-0.0001",
        "0.0001",
        "999999999999.9999",
        "-999999999999.9999",
        "0",
        "1.0000",
        "0.00",
    ];
    for (i, value) in HOSTILE.iter().enumerate() {
        for dimension in Dimension::EVERY {
            let revenue = [
                ("USD", amounts[i % amounts.len()]),
                ("EUR", amounts[(i + 3) % amounts.len()]),
            ];
            let counter = match i % 3 {
                0 => totals(i as u64, 0, &[]),
                1 => totals(i as u64 + 1, i as u64 + 1, &revenue),
                _ => totals(i as u64 + 5, 2, &revenue[..1]),
            };
            w.totals
                .insert(key(dimension, value, &format!("T{value}")), counter);
        }
        for facet in Facet::EVERY {
            w.demographics.insert(
                demo(value, facet, HOSTILE[(i + 1) % HOSTILE.len()]),
                i as u64,
            );
        }
    }
    w.totals.insert(
        key(Dimension::CampaignId, "ctl\u{1}\n\t\u{7f}", "x"),
        totals(1, 0, &[]),
    );
    w
}

#[test]
fn encoding_round_trips_hostile_values_exactly() -> TestResult {
    let w = hostile_window();
    let text = w.encode();
    assert_eq!(text, serde_json::to_string(&w.to_json())?);
    assert_eq!(w.encoded_len(), text.len());
    assert!(text.contains(r#""-0.0001""#) && text.contains(r#""999999999999.9999""#));

    let back = WindowAggregates::decode(&text)?;
    assert_eq!(back, w);
    assert_eq!(back.encode(), text, "scales and bytes survive");
    assert_eq!(WindowAggregates::from_json(&w.to_json())?, w);

    let mut rollup = Rollup::default();
    rollup.hours.insert("2024-05-01T23".into(), w.clone());
    rollup
        .hours
        .insert("2024-05-02T00".into(), hostile_window());
    let text = rollup.encode();
    let back = Rollup::decode(&text)?;
    assert_eq!(back, rollup);
    assert_eq!(back.encode(), text);
    assert_eq!(rollup.encoded_len(), text.len());

    // Events from the stream with hostile dimension values, too.
    let events: Vec<Event> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, v)| Event {
            campaign_id: Some((*v).to_owned()),
            region_id: Some(format!("{v}|{v}")),
            user: user(Some(20), Some(v), Some(v), None),
            revenue: money("-0.0001", "USD"),
            ..ev(&format!("h{i}"), "PURCHASE", "2024-05-01T10:00:00Z", "web")
        })
        .collect();
    let rollup = rollup_of(&events);
    assert_eq!(Rollup::decode(&rollup.encode())?, rollup);
    Ok(())
}

#[test]
fn encoding_is_deterministic() -> TestResult {
    let events = random_events(3, 300);
    let forward = rollup_of(&events);
    let backward = rollup_of(events.iter().rev());
    assert_eq!(forward.encode(), backward.encode());
    assert_eq!(forward.encode(), forward.clone().encode());
    let decoded = Rollup::decode(&forward.encode())?;
    assert_eq!(decoded.encode(), forward.encode());
    assert_eq!(WindowAggregates::default().encode(), "{}");
    assert_eq!(Rollup::default().encode(), "{}");
    Ok(())
}

#[test]
fn decoding_rejects_malformed_state() {
    let bad_windows = [
        "[]",
        "not json",
        r#"{"x":{}}"#,
        r#"{"t":[]}"#,
        r#"{"t":{"z":{}}}"#,
        r#"{"t":{"a":{"":[]}}}"#,
        r#"{"t":{"a":{"":{"T":1.5}}}}"#,
        r#"{"t":{"a":{"":{"T":-1}}}}"#,
        r#"{"t":{"a":{"":{"T":"1"}}}}"#,
        r#"{"t":{"a":{"":{"T":[]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"1"},1,1]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,["USD","1"]]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":12.5}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"01.5"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"+1.5"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"1e3"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"1_000"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":".5"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":"-0.00"}]}}}}"#,
        r#"{"t":{"a":{"":{"T":[1,{"USD":" 1"}]}}}}"#,
        r#"{"d":{"web":{"q":{}}}}"#,
        r#"{"d":{"web":{"a":{"<18":"1"}}}}"#,
        r#"{"d":{"web":{"a":[]}}}"#,
    ];
    for text in bad_windows {
        assert!(WindowAggregates::decode(text).is_err(), "{text}");
    }
    let bad_rollups = [
        "[]",
        r#"{"2024-5-1T3":{}}"#,
        r#"{"2024-05-01T24":{}}"#,
        r#"{"2024-05-01":{}}"#,
        r#"{"2024-05-01T10:00":{}}"#,
        r#"{"2024-05-01T10":[]}"#,
        r#"{"2024-05-01T10":{"t":{"q":{}}}}"#,
    ];
    for text in bad_rollups {
        assert!(Rollup::decode(text).is_err(), "{text}");
    }
    // The error points at the member.
    assert_eq!(
        Rollup::decode(r#"{"2024-05-01T10":{"t":{"c":{"a/b~":{"T":"x"}}}}}"#)
            .err()
            .map(|e| e.path),
        Some("/2024-05-01T10/t/c/a~1b~0/T".to_owned())
    );
    // Lenient where it costs nothing: `[n]` is a count.
    assert_eq!(
        WindowAggregates::decode(r#"{"t":{"a":{"":{"T":[5]}}}}"#).ok(),
        WindowAggregates::decode(r#"{"t":{"a":{"":{"T":5}}}}"#).ok()
    );
}

/// The first counter of a chunk, as a window of its own.
fn first_counter(w: &WindowAggregates) -> WindowAggregates {
    let mut one = WindowAggregates::default();
    if let Some((k, t)) = w.totals.iter().next() {
        one.totals.insert(k.clone(), t.clone());
    } else if let Some((k, n)) = w.demographics.iter().next() {
        one.demographics.insert(k.clone(), *n);
    }
    one
}

fn check_split(w: &WindowAggregates, max_bytes: usize) -> Result<usize, SplitError> {
    let chunks = w.clone().split(max_bytes)?;
    let mut merged = WindowAggregates::default();
    for (i, chunk) in chunks.iter().enumerate() {
        assert!(!chunk.is_empty());
        assert!(
            chunk.encoded_len() <= max_bytes,
            "chunk {i} over {max_bytes}"
        );
        if let Some(next) = chunks.get(i + 1) {
            // Greedy and exact: the next counter would not have fit.
            let mut fuller = chunk.clone();
            fuller.merge(&first_counter(next));
            assert!(fuller.encoded_len() > max_bytes, "chunk {i} not full");
        }
        merged.merge(chunk);
    }
    assert_eq!(merged, *w);
    assert_eq!(merged.encode(), w.encode());
    Ok(chunks.len())
}

#[test]
fn split_respects_the_limit_and_merges_back() -> TestResult {
    for w in [sizing_window(true), hostile_window(), {
        let events = random_events(5, 400);
        single_window(&rollup_of(&events))
    }] {
        let len = w.encoded_len();
        assert_eq!(check_split(&w, len)?, 1);
        assert_eq!(check_split(&w, len + 1000)?, 1);
        assert!(check_split(&w, len - 1)? >= 2);
        for max in [len / 2, len / 3, len / 10, 1_000, 400] {
            let chunks = check_split(&w, max)?;
            assert!(
                chunks >= len.div_ceil(max),
                "{chunks} chunks for {len}/{max}"
            );
        }
    }
    assert!(sizing_window(true).split(20).is_err());
    assert_eq!(WindowAggregates::default().split(2)?, vec![]);
    Ok(())
}

#[test]
fn query_helpers() {
    let w = single_window(&rollup_of(&hand_events()));
    let types = |b: BTreeMap<String, Totals>| -> Vec<(String, u64)> {
        b.into_iter().map(|(t, v)| (t, v.count)).collect()
    };
    let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    };
    assert_eq!(
        types(w.buckets_for(&Filter::All)),
        owned(&[("PAGE_VIEW", 1), ("PURCHASE", 4), ("REFUND", 1)])
    );
    assert_eq!(
        types(w.buckets_for(&Filter::Is(Dimension::CampaignId, "c1".into()))),
        owned(&[("PURCHASE", 2), ("REFUND", 1)])
    );
    assert_eq!(
        types(w.buckets_for(&Filter::SourceFunnelStage {
            source: "web".into(),
            funnel_stage: FunnelStage::Bottom,
        })),
        owned(&[("PURCHASE", 3)])
    );
    assert!(w
        .buckets_for(&Filter::Is(Dimension::CampaignId, "c".into()))
        .is_empty());

    let ranked = |r: Vec<(String, Totals)>| -> Vec<(String, u64)> {
        r.into_iter().map(|(v, t)| (v, t.count)).collect()
    };
    assert_eq!(
        ranked(w.top(Dimension::Source, None, &Metric::Count)),
        owned(&[("web", 5), ("facebook", 1)])
    );
    let by_usd = w.top(
        Dimension::CampaignId,
        Some("PURCHASE"),
        &Metric::Revenue("USD".into()),
    );
    assert_eq!(by_usd.len(), 1);
    assert_eq!(
        by_usd
            .first()
            .map(|(v, t)| (v.as_str(), t.revenue_in("USD"))),
        Some(("c1", dec("12.50")))
    );

    // Ties by value ascending; refunds rank below.
    let mut w = WindowAggregates::default();
    for (i, (campaign, amount)) in [
        ("b", "5"),
        ("a", "2"),
        ("a", "3"),
        ("c", "-1"),
        ("c", "1"),
        ("c", "1"),
        ("d", "-4"),
    ]
    .into_iter()
    .enumerate()
    {
        w.add(&Event {
            campaign_id: Some(campaign.into()),
            revenue: money(amount, "USD"),
            ..ev(&format!("t{i}"), "PURCHASE", "2024-05-01T10:00:00Z", "web")
        });
    }
    let values =
        |r: Vec<(String, Totals)>| -> Vec<String> { r.into_iter().map(|(v, _)| v).collect() };
    assert_eq!(
        values(w.top(Dimension::CampaignId, None, &Metric::Count)),
        ["c", "a", "b", "d"]
    );
    assert_eq!(
        values(w.top(Dimension::CampaignId, None, &Metric::Revenue("USD".into()))),
        ["a", "b", "c", "d"]
    );
    assert!(w
        .top(Dimension::CampaignId, None, &Metric::Revenue("EUR".into()))
        .is_empty());

    let w = single_window(&rollup_of(&hand_events()));
    assert_eq!(
        w.facet_counts(None, Facet::Gender),
        BTreeMap::from([
            ("female".to_owned(), 2),
            ("male".to_owned(), 1),
            ("unknown".to_owned(), 3)
        ])
    );
    assert_eq!(
        w.facet_counts(Some("facebook"), Facet::Age),
        BTreeMap::from([("65+".to_owned(), 1)])
    );
}

#[test]
fn emptiness_and_size() {
    let mut rollup = Rollup::default();
    assert!(rollup.is_empty());
    assert_eq!(rollup.len(), 0);
    rollup.merge(&Rollup {
        hours: BTreeMap::from([("2024-05-01T10".to_owned(), WindowAggregates::default())]),
    });
    assert!(
        rollup.hours.is_empty(),
        "merging an empty hour adds nothing"
    );
    rollup.add(&ev("a", "PAGE_VIEW", "2024-05-01T10:00:00Z", "web"));
    // all + source, and four demographic facets.
    assert_eq!(rollup.len(), 6);
    assert!(!rollup.is_empty());
}

const SIZING_TYPES: [&str; 8] = [
    "PAGE_VIEW",
    "EMAIL_OPEN",
    "FORM_SUBMISSION",
    "DEMO_REQUEST",
    "PURCHASE",
    "REFUND",
    "ad.click",
    "user.signup",
];

/// One busy hour: 8 types × (all + 20 campaigns + 5 regions + 2 sources + 3 stages + 6 pairs),
/// revenue on PURCHASE and REFUND when `with_revenue`, and demographics for two sources.
fn sizing_window(with_revenue: bool) -> WindowAggregates {
    use Dimension::*;
    let mut rng = Rng(2024);
    let mut values: Vec<(Dimension, String)> = vec![(All, String::new())];
    values.extend((1..=20).map(|i| (CampaignId, format!("campaign-{i:02}"))));
    values.extend(
        ["us-east", "us-west", "eu-west", "eu-central", "ap-south"]
            .map(|r| (RegionId, r.to_owned())),
    );
    let stages = [
        crate::event::FunnelStage::Top,
        crate::event::FunnelStage::Middle,
        crate::event::FunnelStage::Bottom,
    ];
    for source in ["web", "facebook"] {
        values.push((Source, source.to_owned()));
        for stage in stages {
            values.push((SourceFunnelStage, source_funnel_value(source, stage)));
        }
    }
    values.extend(stages.map(|s| (FunnelStage, s.as_str().to_owned())));
    let mut w = WindowAggregates::default();
    for ty in SIZING_TYPES {
        for (dimension, value) in &values {
            let count = 1 + rng.below(9_999) as u64;
            let counter = match ty {
                "PURCHASE" if with_revenue => {
                    let cents = Decimal::new(100 + rng.below(10_000_000) as i64, 2);
                    totals(count, count, &[("USD", &cents.to_string())])
                }
                "REFUND" if with_revenue => {
                    let cents = Decimal::new(-100 - rng.below(1_000_000) as i64, 2);
                    totals(count, count, &[("USD", &cents.to_string())])
                }
                _ => totals(count, 0, &[]),
            };
            w.totals.insert(key(*dimension, value, ty), counter);
        }
    }
    let countries = [
        (
            "web",
            [
                "US", "GB", "DE", "FR", "IN", "BR", "CA", "AU", "JP", "unknown",
            ],
        ),
        (
            "facebook",
            [
                "United States",
                "United Kingdom",
                "Germany",
                "France",
                "India",
                "Brazil",
                "Canada",
                "Australia",
                "Japan",
                "unknown",
            ],
        ),
    ];
    for (source, names) in countries {
        let mut add = |facet, band: &str| {
            w.demographics
                .insert(demo(source, facet, band), 1 + rng.below(9_999) as u64);
        };
        for band in AGE_BANDS {
            add(Facet::Age, band);
        }
        for band in FOLLOWER_BANDS {
            add(Facet::Followers, band);
        }
        for band in ["female", "male", "non-binary", "unknown"] {
            add(Facet::Gender, band);
        }
        for band in names {
            add(Facet::Country, band);
        }
    }
    w
}

#[test]
fn sizing_of_a_busy_hour() -> TestResult {
    let with_revenue = sizing_window(true);
    let plain = sizing_window(false);
    assert_eq!(with_revenue.totals.len(), 8 * 37);
    assert_eq!(with_revenue.demographics.len(), 2 * 27);
    let mut rollup = Rollup::default();
    rollup
        .hours
        .insert("2024-05-01T10".to_owned(), with_revenue.clone());
    let as_state_string = serde_json::to_string(&rollup.encode())?.len();
    println!(
        "one hour, {} counters: {} bytes with revenue on 2 types, {} bytes without; \
         as a rollup {} bytes, {} bytes as an escaped string value",
        with_revenue.len(),
        with_revenue.encoded_len(),
        plain.encoded_len(),
        rollup.encoded_len(),
        as_state_string,
    );
    assert!(with_revenue.encoded_len() < 16 * 1024);
    Ok(())
}
