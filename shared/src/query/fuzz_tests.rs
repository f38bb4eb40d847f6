//! Every query parameter parser fuzzed through the real routes: whatever the query string
//! (ranges near the clock's limits, huge limits, garbage cursors, unknown and repeated names),
//! an answer is a success or a 4xx in the error shape, never a panic or a 5xx.

use crate::error::is_error_shape;
use proptest::prelude::*;
use serde_json::Value;

use super::tests::{api, CountingReader};
use crate::http::HttpRequest;

const ROUTES: [&str; 9] = [
    "/v1/aggregations",
    "/v1/aggregations/top",
    "/v1/reports/events",
    "/v1/reports/revenue",
    "/v1/reports/demographics",
    "/v1/leads",
    "/v1/leads/email%3Aa%40b.co",
    "/v1/rules",
    "/metrics",
];

const NAMES: [&str; 22] = [
    "window",
    "start",
    "end",
    "startTime",
    "endTime",
    "from",
    "to",
    "type",
    "campaignId",
    "regionId",
    "source",
    "funnelStage",
    "metric",
    "dimension",
    "limit",
    "currency",
    "cursor",
    "stage",
    "x",
    "",
    "start ",
    "LIMIT",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("hour".to_owned()),
        Just("day".to_owned()),
        Just("2026-11-01".to_owned()),
        Just("2026-11-01T00:00:00Z".to_owned()),
        Just("+262143-12-31T23:59:59Z".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0i64..=8_210_298_412_799_999).prop_map(|n| n.to_string()),
        "[ -~]{0,40}",
        "\\PC{0,20}",
        forged_cursor(),
    ]
}

/// A cursor in the API's own encoding with any numbers in it (a forged one).
fn forged_cursor() -> impl Strategy<Value = String> {
    use base64::Engine as _;
    (
        any::<i64>(),
        prop::collection::vec(any::<u64>(), 30..34),
        any::<i64>(),
        "\\PC{0,20}",
    )
        .prop_map(|(t, v, s, l)| {
            let json = serde_json::json!({"t": t, "v": v, "s": s, "l": l});
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_query_string_is_answered_without_a_panic_or_a_5xx(
        route in 0..ROUTES.len(),
        params in prop::collection::vec((0..NAMES.len(), value()), 0..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let fixture = api(CountingReader::default()).map_err(TestCaseError::fail)?;
        let query: Vec<(&str, &str)> = params.iter().map(|(n, v)| (NAMES[*n], v.as_str())).collect();
        let request = HttpRequest::new("GET", ROUTES[route]).with_query(&query).with_bearer("r");
        let response = runtime.block_on(fixture.api.handle(request));
        prop_assert!(
            response.status < 500,
            "{} {query:?}: {} {}", ROUTES[route], response.status, response.body
        );
        if response.status >= 400 {
            let body: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
            prop_assert!(is_error_shape(&body), "{}", response.body);
        }
    }
}
