use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;

fn ctx() -> NormalizeContext<'static> {
    NormalizeContext {
        received_at: Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .single()
            .unwrap_or_default(),
        limits: Limits::default(),
        default_source: "api",
    }
}

fn ok(v: Value) -> Event {
    match normalize(v, &ctx()) {
        Ok(e) => e,
        Err(errors) => panic!("expected valid, got {errors:?}"),
    }
}

fn paths(v: Value) -> Vec<String> {
    match normalize(v, &ctx()) {
        Ok(e) => panic!("expected invalid, got {e:?}"),
        Err(errors) => errors.into_iter().map(|e| e.path.into_owned()).collect(),
    }
}

#[test]
fn canonical_event_is_normalized() {
    let e = ok(json!({
        "eventId": "evt-1", "type": "PURCHASE", "timestamp": "2026-11-25T12:30:00+01:00",
        "source": "web", "lead": {"email": "Ann@Example.com", "name": "Ann", "company": "Acme"},
        "campaignId": "c1", "regionId": "r1", "funnelStage": "bottom",
        "revenue": {"amount": "12.50", "currency": "eur"},
        "user": {"age": 30, "gender": "f", "country": "de", "city": "Berlin", "followers": 12},
        "payload": {"sku": "x"}, "metadata": {"k": 1}
    }));
    assert_eq!(e.event_id, "evt-1");
    assert_eq!(
        e.timestamp,
        Utc.with_ymd_and_hms(2026, 11, 25, 11, 30, 0)
            .single()
            .unwrap_or_default()
    );
    assert_eq!(e.lead_id.as_deref(), Some("email:ann@example.com"));
    assert_eq!(
        e.revenue,
        Some(Money {
            amount: Decimal::new(1250, 2),
            currency: "EUR".into()
        })
    );
    assert_eq!(
        e.user.as_ref().and_then(|u| u.country.as_deref()),
        Some("DE")
    );
    assert_eq!(e.funnel_stage, Some(FunnelStage::Bottom));
    let json = e.to_canonical_json().unwrap_or_default();
    assert!(
        json.contains(r#""timestamp":"2026-11-25T11:30:00.000Z""#),
        "{json}"
    );
    assert!(json.contains(r#""amount":"12.50""#), "{json}");
}

#[test]
fn defaults_generate_id_time_and_source() {
    let e = ok(json!({"type": "PAGE_VIEW"}));
    assert_eq!(e.source, "api");
    assert_eq!(e.timestamp, ctx().received_at);
    assert_eq!(
        Uuid::parse_str(&e.event_id)
            .map(|u| u.get_version_num())
            .ok(),
        Some(7)
    );
    assert_eq!(e.lead_id, None);
}

#[test]
fn accepted_spellings_resolve_to_the_canonical_fields() {
    let millis = ctx().received_at.timestamp_millis() - 1_000;
    let e = ok(json!({"eventType": "A", "occurredAt": millis}));
    assert_eq!(e.event_type, "A");
    assert_eq!(e.timestamp.timestamp_millis(), millis);
    assert_eq!(ok(json!({"event_type": "B"})).event_type, "B");
    let e = ok(
        json!({"type": "A", "payload": {"userId": "u1", "campaignId": "c9", "regionId": "eu", "funnelStage": "top"}}),
    );
    assert_eq!(
        (
            e.user_id.as_deref(),
            e.campaign_id.as_deref(),
            e.region_id.as_deref(),
            e.funnel_stage
        ),
        (Some("u1"), Some("c9"), Some("eu"), Some(FunnelStage::Top))
    );
    assert_eq!(e.lead_id.as_deref(), Some("user:u1"));
    let e = ok(json!({"type": "A", "userId": "top", "payload": {"userId": "inner"}}));
    assert_eq!(e.user_id.as_deref(), Some("top"));
    let e =
        ok(json!({"type": "A", "metadata": {"email": "Bo@X.io", "name": "Bo", "company": "X"}}));
    assert_eq!(
        e.lead.as_ref().and_then(|l| l.company.as_deref()),
        Some("X")
    );
    assert_eq!(e.lead_id.as_deref(), Some("email:bo@x.io"));
    // An explicit lead id wins over derivation.
    assert_eq!(
        ok(json!({"type": "A", "leadId": "L1", "userId": "u"}))
            .lead_id
            .as_deref(),
        Some("L1")
    );
    // Equal values under two spellings are fine; different ones are not.
    assert_eq!(ok(json!({"type": "A", "eventType": "A"})).event_type, "A");
    assert_eq!(
        paths(json!({"type": "A", "eventType": "B"})),
        vec!["/eventType"]
    );
}

#[test]
fn marketing_publisher_format_is_mapped() {
    let e = ok(json!({
        "eventId": "tt-1", "timestamp": "2026-11-25T11:00:00Z", "source": "tiktok", "funnelStage": "middle",
        "eventType": "ad.click",
        "data": {
            "user": {"userId": "u77", "age": 24, "gender": "male", "location": {"country": "Germany", "city": "Köln"}, "followers": 15000},
            "engagement": {"campaignId": "camp-3", "purchaseAmount": "19.99", "likes": 3}
        }
    }));
    assert_eq!(e.user_id.as_deref(), Some("u77"));
    assert_eq!(e.lead_id.as_deref(), Some("user:u77"));
    assert_eq!(e.campaign_id.as_deref(), Some("camp-3"));
    assert_eq!(
        e.revenue,
        Some(Money {
            amount: Decimal::new(1999, 2),
            currency: "USD".into()
        })
    );
    let user = e.user.clone().unwrap_or_default();
    assert_eq!(
        (user.age, user.country.as_deref(), user.followers),
        (Some(24), Some("Germany"), Some(15000))
    );
    assert_eq!(
        e.payload
            .as_ref()
            .and_then(|p| p.get("engagement"))
            .and_then(|g| g.get("likes")),
        Some(&json!(3))
    );
    assert_eq!(e.funnel_stage, Some(FunnelStage::Middle));
    // Errors point at the publisher paths.
    let errors = paths(
        json!({"type": "A", "source": "facebook", "data": {"user": {"age": 200}, "engagement": {"purchaseAmount": "x"}}}),
    );
    assert_eq!(
        errors,
        vec!["/data/engagement/purchaseAmount", "/data/user/age"]
    );
    // `data` on a non-publisher source is just an unknown field.
    assert_eq!(
        paths(json!({"type": "A", "source": "web", "data": {}})),
        vec!["/data"]
    );
    // Country names are refused outside publisher events.
    assert_eq!(
        paths(json!({"type": "A", "user": {"country": "Germany"}})),
        vec!["/user/country"]
    );
}

#[test]
fn every_failing_field_is_reported_with_its_path() {
    let errors = paths(json!({
        "eventId": "bad id", "timestamp": "yesterday", "source": "Web", "leadId": "",
        "lead": {"email": "nope", "phone": "1"}, "funnelStage": "side",
        "revenue": {"amount": "1.23456", "currency": "XYZ"},
        "user": {"age": -1, "followers": -5, "country": "ZZ"}, "payload": [], "colour": "red"
    }));
    let mut expected = vec![
        "/colour",
        "/eventId",
        "/type",
        "/timestamp",
        "/payload",
        "/funnelStage",
        "/lead/email",
        "/lead/phone",
        "/leadId",
        "/revenue/amount",
        "/revenue/currency",
        "/user/age",
        "/user/country",
        "/user/followers",
        "/source",
    ];
    let mut got = errors.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn timestamps_outside_the_window_are_rejected() {
    let now = ctx().received_at;
    let future = (now + Duration::minutes(6)).to_rfc3339();
    let old = (now - Duration::days(31)).timestamp_millis();
    assert_eq!(
        paths(json!({"type": "A", "timestamp": future})),
        vec!["/timestamp"]
    );
    assert_eq!(
        paths(json!({"type": "A", "occurredAt": old})),
        vec!["/occurredAt"]
    );
    assert_eq!(
        paths(json!({"type": "A", "timestamp": 1.5})),
        vec!["/timestamp"]
    );
    ok(json!({"type": "A", "timestamp": (now + Duration::minutes(4)).to_rfc3339()}));
}

#[test]
fn non_objects_and_oversized_events_are_refused() {
    assert_eq!(paths(json!([1])), vec![""]);
    let e = ok(json!({"type": "A", "payload": {"blob": "x".repeat(40_000)}}));
    assert!(e.to_canonical_json().is_err());
}

#[test]
fn canonical_output_round_trips_and_revalidates() {
    let e = ok(
        json!({"type": "A", "source": "facebook", "data": {"user": {"location": {"country": "Deutschland"}}}}),
    );
    let json = e.to_canonical_json().unwrap_or_default();
    let back: Event = serde_json::from_str(&json).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(back, e);
    assert_eq!(
        back.revalidate(&Limits::default(), ctx().received_at),
        Ok(())
    );
    // The same event read back a month later is measured against its receive time, not now.
    let late = ctx().received_at + Duration::days(40);
    assert!(back.revalidate(&Limits::default(), late).is_err());
}

#[test]
fn a_derived_lead_id_over_128_characters_names_its_source_field() {
    // `email:` (6) + 123 characters = 129: the address itself is valid, the derived id is not.
    let email = format!("{}@{}.example.com", "a".repeat(60), "b".repeat(50));
    assert_eq!(email.len(), 123);
    assert_eq!(
        paths(json!({"type": "PAGE_VIEW", "lead": {"email": email}})),
        vec!["/lead/email"]
    );
    let user_id = "u".repeat(124);
    assert_eq!(
        paths(json!({"type": "PAGE_VIEW", "userId": user_id})),
        vec!["/userId"]
    );
    // One character less fits.
    let fits = format!("{}@{}.example.com", "a".repeat(60), "b".repeat(49));
    assert_eq!(
        ok(json!({"type": "PAGE_VIEW", "lead": {"email": fits}}))
            .lead_id
            .map(|id| id.len()),
        Some(128)
    );
    // An explicit leadId makes the long address fine.
    let long = format!("{}@{}.example.com", "a".repeat(60), "b".repeat(50));
    assert!(normalize(
        json!({"type": "PAGE_VIEW", "leadId": "L1", "lead": {"email": long}}),
        &ctx()
    )
    .is_ok());
}
