//! `GET /v1/reports/companies?from&to[&limit]`: the leads active in a range, grouped by their
//! profile's `company` — per company the leads, their events and their scores summed — the top
//! `limit` by leads (ties by company).
//!
//! A lead counts in the range when its last event falls in it; its events are all it has, and
//! its score is as of now, decay included. The report reads the leaderboard index, which holds
//! each lead's company, event count, score and last activity, so it costs the same whatever the
//! range.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::aggregations::Range;
use super::params::QueryParams;
use crate::error::ApiError;
use crate::event::format_utc;
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{load_or_init, LeadReader, RuleStore};

/// The group of leads without a company.
pub const NO_COMPANY: &str = "(none)";

#[derive(Default)]
struct Company {
    leads: u64,
    events: u64,
    score: i64,
}

pub(crate) async fn companies(
    leads: &dyn LeadReader,
    rule_store: &dyn RuleStore,
    request: &HttpRequest,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(request, &["from", "to", "limit"]);
    let range = Range::read_report(&mut params);
    let limit = params.integer("limit", 1, 100, 20);
    let (range, limit) = params.finish(range.zip(limit))?;
    let (rules, board) = futures::join!(load_or_init(rule_store), leads.board_leads());
    let rules = rules.map_err(ApiError::analytics_down)?.rules;
    let board = board.map_err(ApiError::analytics_down)?;
    let mut by_company: BTreeMap<String, Company> = BTreeMap::new();
    for lead in board {
        let active = lead.entry.last_activity();
        if active < range.start || active >= range.end {
            continue;
        }
        let name = lead
            .company
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| NO_COMPANY.to_owned());
        let company = by_company.entry(name).or_default();
        company.leads += 1;
        company.events = company.events.saturating_add(lead.events);
        company.score = company
            .score
            .saturating_add(lead.entry.score_at(&rules.decay, now));
    }
    let mut ranked: Vec<(String, Company)> = by_company.into_iter().collect();
    ranked.sort_by(|a, b| b.1.leads.cmp(&a.1.leads).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit as usize);
    let rows: Vec<Value> = ranked
        .into_iter()
        .map(|(company, c)| {
            json!({"company": company, "leads": c.leads, "events": c.events, "score": c.score})
        })
        .collect();
    Ok(HttpResponse::json(
        200,
        &json!({"from": format_utc(range.start), "to": format_utc(range.end), "companies": rows}),
    ))
}
