//! A stored canonical event as the rollup reads it: only what aggregation and scoring need,
//! borrowed from the stream record where the JSON has no escapes. Payloads and metadata are
//! skipped unparsed, which halves the parse time of a batch.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::event::{FunnelStage, LeadProfile, Money};
use crate::rollup::{EventFacts, UserFacts};
use crate::scoring::{LeadEvent, ScoredEvent};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default, borrow)]
    campaign_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    region_id: Option<Cow<'a, str>>,
    #[serde(default)]
    funnel_stage: Option<FunnelStage>,
    #[serde(default)]
    revenue: Option<Money>,
    #[serde(default, borrow)]
    user: Option<StoredUser<'a>>,
    #[serde(default, borrow)]
    lead_id: Option<Cow<'a, str>>,
    #[serde(default)]
    lead: Option<LeadProfile>,
}

#[derive(Deserialize)]
struct StoredUser<'a> {
    #[serde(default)]
    age: Option<u8>,
    #[serde(default, borrow)]
    gender: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    country: Option<Cow<'a, str>>,
    #[serde(default)]
    followers: Option<u64>,
}

/// One stored event, parsed: its time, and the rest borrowed from the record.
pub(crate) struct ParsedEvent<'a> {
    stored: StoredEvent<'a>,
    timestamp: DateTime<Utc>,
}

impl<'a> ParsedEvent<'a> {
    pub(crate) fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        let stored: StoredEvent<'a> = serde_json::from_str(json)?;
        let timestamp = DateTime::parse_from_rfc3339(&stored.timestamp)
            .map_err(serde::de::Error::custom)?
            .with_timezone(&Utc);
        Ok(Self { stored, timestamp })
    }

    pub(crate) fn facts(&self) -> EventFacts<'_> {
        let s = &self.stored;
        let user = s.user.as_ref();
        EventFacts {
            event_type: &s.event_type,
            timestamp: self.timestamp,
            source: &s.source,
            campaign_id: s.campaign_id.as_deref(),
            region_id: s.region_id.as_deref(),
            funnel_stage: s.funnel_stage,
            revenue: s.revenue.as_ref(),
            user: UserFacts {
                age: user.and_then(|u| u.age),
                gender: user.and_then(|u| u.gender.as_deref()),
                country: user.and_then(|u| u.country.as_deref()),
                followers: user.and_then(|u| u.followers),
            },
        }
    }

    /// The lead's scored event, when the event has a lead.
    pub(crate) fn into_lead_event(self) -> Option<LeadEvent> {
        let s = self.stored;
        let lead_id = s.lead_id?.into_owned();
        Some(LeadEvent {
            lead_id,
            event: ScoredEvent::new(s.event_id.into_owned(), s.event_type, self.timestamp)
                .with_profile(s.lead),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use chrono::TimeZone;
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::event::{Demographics, Event};
    use crate::rollup::{Rollup, RollupAccumulator};

    fn event(id: &str, campaign: &str, gender: &str, lead: Option<&str>) -> Event {
        Event {
            event_id: id.to_owned(),
            event_type: "PURCHASE".to_owned(),
            timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 59).unwrap(),
            source: "web".to_owned(),
            lead_id: lead.map(str::to_owned),
            user_id: Some("u1".to_owned()),
            lead: lead.map(|_| LeadProfile {
                email: Some("a@example.com".to_owned()),
                name: Some("A \"Quoted\" Name".to_owned()),
                company: None,
            }),
            campaign_id: Some(campaign.to_owned()),
            region_id: None,
            funnel_stage: Some(FunnelStage::Bottom),
            revenue: Some(Money {
                amount: Decimal::new(-1250, 2),
                currency: "EUR".to_owned(),
            }),
            user: Some(Demographics {
                age: Some(30),
                gender: Some(gender.to_owned()),
                country: Some("United States".to_owned()),
                city: Some("Springfield".to_owned()),
                followers: Some(12_000),
            }),
            payload: json!({"nested": {"skipped": ["unparsed", 1]}})
                .as_object()
                .cloned(),
            metadata: None,
        }
    }

    /// The borrowed parse of the stored form reads what the event says, escapes included.
    #[test]
    fn the_stored_form_reads_as_the_event() -> Result<(), Box<dyn Error>> {
        let events = [
            event("e1", "plain", "female", Some("lead-1")),
            event(
                "e\"2",
                "back\\slash \u{65e5}\n",
                "Non-Binary",
                Some("lead\\2"),
            ),
            event("e3", "c3", "", None),
        ];
        for e in &events {
            let json = e.to_canonical_json().map_err(|err| format!("{err:?}"))?;
            let parsed = ParsedEvent::parse(&json)?;
            let (mut from_stored, mut from_event) =
                (RollupAccumulator::default(), RollupAccumulator::default());
            from_stored.add(&parsed.facts());
            from_event.add(&EventFacts::from(e));
            let (mut a, mut b) = (Rollup::default(), Rollup::default());
            a.absorb(from_stored);
            b.absorb(from_event);
            assert_eq!(a, b, "{json}");
            let lead = parsed.into_lead_event();
            assert_eq!(
                lead.as_ref().map(|l| l.lead_id.as_str()),
                e.lead_id.as_deref()
            );
            if let Some(lead) = lead {
                assert_eq!(lead.event.event_id, e.event_id);
                assert_eq!(lead.event.event_type, e.event_type);
                assert_eq!(lead.event.timestamp, e.timestamp);
                assert_eq!(lead.event.profile, e.lead);
            }
        }
        assert!(ParsedEvent::parse(
            r#"{"eventId":"x","type":"T","timestamp":"yesterday","source":"web"}"#
        )
        .is_err());
        Ok(())
    }
}
