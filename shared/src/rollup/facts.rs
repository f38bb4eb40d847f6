//! What aggregation reads of an event, borrowed, and the one definition of which counters an
//! event is counted under. Both the per-event path ([`super::WindowAggregates::add`]) and the
//! batch path ([`super::RollupAccumulator`]) go through [`visit_counters`], so they cannot
//! disagree.

use chrono::{DateTime, Utc};

use super::keys::{demographic_bands, source_campaign_value, Dimension, Facet};
use crate::event::{Event, FunnelStage, Money};

/// The fields of an event that aggregation reads.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub event_type: &'a str,
    pub timestamp: DateTime<Utc>,
    pub source: &'a str,
    pub campaign_id: Option<&'a str>,
    pub region_id: Option<&'a str>,
    pub funnel_stage: Option<FunnelStage>,
    pub revenue: Option<&'a Money>,
    pub user: UserFacts<'a>,
}

/// The acting user's demographics; every field absent when the event has no user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserFacts<'a> {
    pub age: Option<u8>,
    pub gender: Option<&'a str>,
    pub country: Option<&'a str>,
    pub followers: Option<u64>,
}

impl<'a> From<&'a Event> for EventFacts<'a> {
    fn from(e: &'a Event) -> Self {
        let user = e.user.as_ref();
        EventFacts {
            event_type: &e.event_type,
            timestamp: e.timestamp,
            source: &e.source,
            campaign_id: e.campaign_id.as_deref(),
            region_id: e.region_id.as_deref(),
            funnel_stage: e.funnel_stage,
            revenue: e.revenue.as_ref(),
            user: UserFacts {
                age: user.and_then(|u| u.age),
                gender: user.and_then(|u| u.gender.as_deref()),
                country: user.and_then(|u| u.country.as_deref()),
                followers: user.and_then(|u| u.followers),
            },
        }
    }
}

/// Calls `total` with each `(dimension, value)` the event's type is counted under, and
/// `demographic` with each `(facet, band)` its source is counted under. An event without a value
/// for a dimension is not counted under it (it always is under [`Dimension::All`]).
pub(crate) fn visit_counters(
    facts: &EventFacts<'_>,
    mut total: impl FnMut(Dimension, &str),
    mut demographic: impl FnMut(Facet, &str),
) {
    total(Dimension::All, "");
    let campaign = non_empty(facts.campaign_id);
    if let Some(campaign) = campaign {
        total(Dimension::CampaignId, campaign);
    }
    if let Some(region) = non_empty(facts.region_id) {
        total(Dimension::RegionId, region);
    }
    let source = non_empty(Some(facts.source));
    if let Some(source) = source {
        total(Dimension::Source, source);
        // Only revenue-bearing events: few, so the pair costs little to count and store.
        if let (Some(campaign), Some(_)) = (campaign, facts.revenue) {
            with_pair(source, campaign, |pair| {
                total(Dimension::SourceCampaign, pair)
            });
        }
    }
    if let Some(stage) = facts.funnel_stage {
        total(Dimension::FunnelStage, stage.as_str());
        if let Some(source) = source {
            with_pair(source, stage.as_str(), |pair| {
                total(Dimension::SourceFunnelStage, pair)
            });
        }
    }
    for (facet, band) in demographic_bands(&facts.user) {
        demographic(facet, &band);
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// `"<source>|<rest>"`, the value of both pair dimensions (see
/// [`super::keys::source_funnel_value`] and [`source_campaign_value`]), built on the stack: this
/// runs for most events of a batch.
fn with_pair(source: &str, rest: &str, f: impl FnOnce(&str)) {
    let len = source.len() + 1 + rest.len();
    let mut buf = [0u8; 192];
    if let Some(slot) = buf.get_mut(..len) {
        let (head, tail) = slot.split_at_mut(source.len());
        head.copy_from_slice(source.as_bytes());
        tail[0] = b'|';
        tail[1..].copy_from_slice(rest.as_bytes());
        // Joined UTF-8 strings are UTF-8; the check is what keeps this free of `unsafe`.
        if let Ok(pair) = std::str::from_utf8(slot) {
            return f(pair);
        }
    }
    f(&source_campaign_value(source, rest))
}
