//! `GET /v1/reports/events`, `/v1/reports/revenue` and `/v1/reports/demographics`: the hourly
//! aggregates of a range merged into one window, then broken down.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::aggregations::{currency, dimension_value, event_type, read_total, revenue_json, Range};
use super::params::QueryParams;
use crate::aggregation::AggregateReader;
use crate::error::ApiError;
use crate::event::{format_utc, FunnelStage};
use crate::http::{HttpRequest, HttpResponse};
use crate::rollup::{
    source_campaign_value, split_source_pair, Dimension, Facet, Filter, Totals, AGE_BANDS,
    FOLLOWER_BANDS, UNKNOWN,
};

/// `byCampaign` lists at most this many campaigns.
const MAX_CAMPAIGNS: usize = 100;
/// `countries` lists at most this many (country names from publishers make the set open).
const MAX_COUNTRIES: usize = 250;

fn stage_param(params: &mut QueryParams<'_>) -> Option<Option<FunnelStage>> {
    match dimension_value(params, "funnelStage") {
        None => Some(None),
        Some(value) => match FunnelStage::parse(value) {
            Some(stage) => Some(Some(stage)),
            None => {
                params.error("funnelStage", "must be one of top, middle, bottom");
                None
            }
        },
    }
}

fn range_fields(body: &mut Map<String, Value>, range: &Range) {
    body.insert("from".into(), json!(format_utc(range.start)));
    body.insert("to".into(), json!(format_utc(range.end)));
}

/// Values of a `source|rest` pair dimension whose source (`Left`) or rest (`Right`) is `fixed`,
/// keyed by the other half.
fn pair_half<'a>(
    pairs: BTreeMap<&'a str, Totals>,
    fixed: PairSide<'_>,
) -> BTreeMap<&'a str, Totals> {
    pairs
        .into_iter()
        .filter_map(|(value, totals)| {
            let (source, rest) = split_source_pair(value)?;
            match fixed {
                PairSide::Source(s) if s == source => Some((rest, totals)),
                PairSide::Rest(r) if r == rest => Some((source, totals)),
                _ => None,
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
enum PairSide<'a> {
    Source(&'a str),
    Rest(&'a str),
}

fn counts<K: AsRef<str>>(values: impl IntoIterator<Item = (K, Totals)>) -> Value {
    Value::Object(
        values
            .into_iter()
            .filter(|(_, t)| t.count > 0)
            .map(|(value, t)| (value.as_ref().to_owned(), json!(t.count)))
            .collect(),
    )
}

/// `GET /v1/reports/events`: events of the range by source, funnel stage and type.
pub(crate) async fn events<R: AggregateReader + ?Sized>(
    reader: &R,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["from", "to", "source", "funnelStage", "type"]);
    let range = Range::read_report(&mut params);
    let source = dimension_value(&mut params, "source");
    let stage = stage_param(&mut params);
    let event_type = event_type(&mut params);
    let (range, stage) = params.finish(range.zip(stage))?;
    let stage_str = stage.map(FunnelStage::as_str);

    let all = read_total(reader, &range).await?;
    let filter = match (source, stage) {
        (None, None) => Filter::All,
        (Some(s), None) => Filter::Is(Dimension::Source, s.to_owned()),
        (None, Some(f)) => Filter::Is(Dimension::FunnelStage, f.as_str().to_owned()),
        (Some(s), Some(f)) => Filter::SourceFunnelStage {
            source: s.to_owned(),
            funnel_stage: f,
        },
    };
    let mut by_type = all.buckets_for(&filter);
    by_type.retain(|ty, t| t.count > 0 && event_type.is_none_or(|wanted| wanted == ty));
    let total: u64 = by_type.values().map(|t| t.count).sum();

    let mut by_source = match stage_str {
        None => all.by_value(Dimension::Source, event_type),
        Some(f) => pair_half(
            all.by_value(Dimension::SourceFunnelStage, event_type),
            PairSide::Rest(f),
        ),
    };
    by_source.retain(|s, _| source.is_none_or(|wanted| wanted == *s));
    let mut by_stage = match source {
        None => all.by_value(Dimension::FunnelStage, event_type),
        Some(s) => pair_half(
            all.by_value(Dimension::SourceFunnelStage, event_type),
            PairSide::Source(s),
        ),
    };
    by_stage.retain(|f, _| stage_str.is_none_or(|wanted| wanted == *f));
    let staged: u64 = by_stage.values().map(|t| t.count).sum();
    let mut by_stage = counts(by_stage);
    if total > staged {
        // Events that name no funnel stage, so the breakdown adds up to the total.
        by_stage[UNKNOWN] = json!(total - staged);
    }

    let mut body = Map::new();
    range_fields(&mut body, &range);
    body.insert("total".into(), json!(total));
    body.insert("bySource".into(), counts(by_source));
    body.insert("byFunnelStage".into(), by_stage);
    body.insert("byType".into(), counts(by_type));
    Ok(HttpResponse::json(200, &Value::Object(body)))
}

/// `GET /v1/reports/revenue`: revenue-bearing events of the range, in total, by source and by
/// campaign.
pub(crate) async fn revenue<R: AggregateReader + ?Sized>(
    reader: &R,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["from", "to", "source", "campaignId", "currency"]);
    let range = Range::read_report(&mut params);
    let source = dimension_value(&mut params, "source");
    let campaign = dimension_value(&mut params, "campaignId");
    let currency = currency(&mut params);
    let (range, currency) = params.finish(range.zip(currency))?;

    let all = read_total(reader, &range).await?;
    let filter = match (source, campaign) {
        (None, None) => Filter::All,
        (Some(s), None) => Filter::Is(Dimension::Source, s.to_owned()),
        (None, Some(c)) => Filter::Is(Dimension::CampaignId, c.to_owned()),
        (Some(s), Some(c)) => Filter::Is(Dimension::SourceCampaign, source_campaign_value(s, c)),
    };
    let mut total = Totals::default();
    for totals in all.buckets_for(&filter).values() {
        total.merge(totals);
    }

    let mut by_source = match campaign {
        None => all.by_value(Dimension::Source, None),
        Some(c) => pair_half(
            all.by_value(Dimension::SourceCampaign, None),
            PairSide::Rest(c),
        ),
    };
    by_source.retain(|s, t| t.revenue_events > 0 && source.is_none_or(|wanted| wanted == *s));
    let by_source: Map<String, Value> = by_source
        .into_iter()
        .map(|(s, t)| (s.to_owned(), revenue_json(&t.revenue)))
        .collect();

    let mut by_campaign: Vec<(&str, Totals)> = match source {
        None => all.by_value(Dimension::CampaignId, None),
        Some(s) => pair_half(
            all.by_value(Dimension::SourceCampaign, None),
            PairSide::Source(s),
        ),
    }
    .into_iter()
    .filter(|(c, t)| t.revenue_events > 0 && campaign.is_none_or(|wanted| wanted == *c))
    .collect();
    by_campaign.sort_by(|(a_id, a), (b_id, b)| {
        b.revenue_in(&currency)
            .cmp(&a.revenue_in(&currency))
            .then_with(|| b.revenue_events.cmp(&a.revenue_events))
            .then_with(|| a_id.cmp(b_id))
    });
    let by_campaign: Vec<Value> = by_campaign
        .into_iter()
        .take(MAX_CAMPAIGNS)
        .map(|(id, t)| {
            json!({
                "campaignId": id,
                "revenue": revenue_json(&t.revenue),
                "purchases": t.revenue_events,
            })
        })
        .collect();

    let mut body = Map::new();
    range_fields(&mut body, &range);
    body.insert("currency".into(), json!(currency));
    body.insert("total".into(), revenue_json(&total.revenue));
    body.insert("purchases".into(), json!(total.revenue_events));
    body.insert("bySource".into(), Value::Object(by_source));
    body.insert("byCampaign".into(), Value::Array(by_campaign));
    Ok(HttpResponse::json(200, &Value::Object(body)))
}

/// `GET /v1/reports/demographics`: events of the range by the acting user's age, gender,
/// country and followers.
pub(crate) async fn demographics<R: AggregateReader + ?Sized>(
    reader: &R,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["from", "to", "source"]);
    let range = Range::read_report(&mut params);
    let source = dimension_value(&mut params, "source");
    let range = params.finish(range)?;

    let all = read_total(reader, &range).await?;
    let filter = match source {
        None => Filter::All,
        Some(s) => Filter::Is(Dimension::Source, s.to_owned()),
    };
    let events: u64 = all.buckets_for(&filter).values().map(|t| t.count).sum();
    let bands = |facet: Facet, order: &[&str]| -> Value {
        let found = all.facet_counts(source, facet);
        Value::Object(
            order
                .iter()
                .map(|band| {
                    (
                        (*band).to_owned(),
                        json!(found.get(*band).copied().unwrap_or(0)),
                    )
                })
                .collect(),
        )
    };
    let age = bands(Facet::Age, &AGE_BANDS);
    let followers = bands(Facet::Followers, &FOLLOWER_BANDS);
    let gender: Map<String, Value> = all
        .facet_counts(source, Facet::Gender)
        .into_iter()
        .map(|(g, n)| (g, json!(n)))
        .collect();
    let mut countries: Vec<(String, u64)> = all
        .facet_counts(source, Facet::Country)
        .into_iter()
        .collect();
    countries.sort_by(|(a, an), (b, bn)| bn.cmp(an).then_with(|| a.cmp(b)));
    let countries: Vec<Value> = countries
        .into_iter()
        .take(MAX_COUNTRIES)
        .map(|(country, count)| json!({"country": country, "count": count}))
        .collect();

    let mut body = Map::new();
    range_fields(&mut body, &range);
    body.insert("events".into(), json!(events));
    body.insert("age".into(), age);
    body.insert("gender".into(), Value::Object(gender));
    body.insert("countries".into(), Value::Array(countries));
    body.insert("followers".into(), followers);
    Ok(HttpResponse::json(200, &body.into()))
}
