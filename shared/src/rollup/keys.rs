//! What a counter is keyed by: the dimensions of the per-type totals, the demographic facets, and
//! the bands events fall into.

use std::borrow::Cow;

use super::facts::UserFacts;
use crate::event::FunnelStage;

/// A breakdown of the per-type totals.
///
/// Variants are declared in the order of their compact codes, so a sorted map of keys and the
/// encoded JSON object (whose keys sort as strings) list them the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Every event; the value is `""`.
    All,
    CampaignId,
    FunnelStage,
    RegionId,
    Source,
    /// `source` and `campaignId` together, counting **revenue-bearing events only** (what the
    /// revenue report filters and breaks down by); the value is [`source_campaign_value`].
    SourceCampaign,
    /// `source` and `funnelStage` together; the value is [`source_funnel_value`].
    SourceFunnelStage,
}

impl Dimension {
    pub const EVERY: [Dimension; 7] = [
        Self::All,
        Self::CampaignId,
        Self::FunnelStage,
        Self::RegionId,
        Self::Source,
        Self::SourceCampaign,
        Self::SourceFunnelStage,
    ];

    /// The stable name, as the query API spells the dimension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::CampaignId => "campaignId",
            Self::FunnelStage => "funnelStage",
            Self::RegionId => "regionId",
            Self::Source => "source",
            Self::SourceCampaign => "sourceCampaign",
            Self::SourceFunnelStage => "sourceFunnelStage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|d| d.as_str() == s)
    }

    /// The code in the compact encoding.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::All => "a",
            Self::CampaignId => "c",
            Self::FunnelStage => "f",
            Self::RegionId => "r",
            Self::Source => "s",
            Self::SourceCampaign => "sc",
            Self::SourceFunnelStage => "sf",
        }
    }

    pub(crate) fn from_code(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|d| d.code() == s)
    }
}

/// The value of [`Dimension::SourceFunnelStage`]: `"<source>|<stage>"`, e.g. `"web|top"`. Sources
/// are `[a-z0-9_-]` and stages fixed words, so the pair is unambiguous; the encoding does not rely
/// on it (values are JSON object keys, never joined with other parts).
pub fn source_funnel_value(source: &str, stage: FunnelStage) -> String {
    format!("{source}|{}", stage.as_str())
}

/// The value of [`Dimension::SourceCampaign`]: `"<source>|<campaignId>"`. A source has no `|`,
/// so the first `|` splits the pair ([`split_source_pair`]) whatever the campaign id holds.
pub fn source_campaign_value(source: &str, campaign: &str) -> String {
    format!("{source}|{campaign}")
}

/// `(source, rest)` of a [`Dimension::SourceCampaign`] or [`Dimension::SourceFunnelStage`] value.
pub fn split_source_pair(value: &str) -> Option<(&str, &str)> {
    value.split_once('|')
}

/// One counter of the per-type totals. Sorted by dimension, then value, then type, so all types of
/// one `(dimension, value)` are adjacent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    pub dimension: Dimension,
    /// `""` for [`Dimension::All`].
    pub value: String,
    pub event_type: String,
}

impl AggregateKey {
    pub fn new(
        dimension: Dimension,
        value: impl Into<String>,
        event_type: impl Into<String>,
    ) -> Self {
        Self {
            dimension,
            value: value.into(),
            event_type: event_type.into(),
        }
    }
}

/// A demographic breakdown. Declared in the order of their compact codes (see [`Dimension`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Facet {
    Age,
    Country,
    Followers,
    Gender,
}

impl Facet {
    pub const EVERY: [Facet; 4] = [Self::Age, Self::Country, Self::Followers, Self::Gender];

    /// The stable name, as the demographics report spells the facet.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Country => "country",
            Self::Followers => "followers",
            Self::Gender => "gender",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|f| f.as_str() == s)
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Age => "a",
            Self::Country => "c",
            Self::Followers => "f",
            Self::Gender => "g",
        }
    }

    pub(crate) fn from_code(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|f| f.code() == s)
    }
}

/// One demographic counter: events of `source` whose user falls in `band` of `facet`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DemographicKey {
    pub source: String,
    pub facet: Facet,
    pub band: String,
}

impl DemographicKey {
    pub fn new(source: impl Into<String>, facet: Facet, band: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            facet,
            band: band.into(),
        }
    }
}

/// The band of a missing value, in every facet.
pub const UNKNOWN: &str = "unknown";

/// Age bands in report order.
pub const AGE_BANDS: [&str; 8] = [
    "<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", UNKNOWN,
];

/// Follower bands in report order.
pub const FOLLOWER_BANDS: [&str; 5] = ["<1k", "1k-10k", "10k-100k", "100k+", UNKNOWN];

pub fn age_band(age: Option<u8>) -> &'static str {
    match age {
        None => UNKNOWN,
        Some(0..=17) => "<18",
        Some(18..=24) => "18-24",
        Some(25..=34) => "25-34",
        Some(35..=44) => "35-44",
        Some(45..=54) => "45-54",
        Some(55..=64) => "55-64",
        Some(_) => "65+",
    }
}

pub fn followers_band(followers: Option<u64>) -> &'static str {
    match followers {
        None => UNKNOWN,
        Some(0..=999) => "<1k",
        Some(1_000..=9_999) => "1k-10k",
        Some(10_000..=99_999) => "10k-100k",
        Some(_) => "100k+",
    }
}

/// Gender lowercased (and trimmed); `unknown` when absent or blank. Borrowed when already so.
pub fn gender_band(gender: Option<&str>) -> Cow<'_, str> {
    match gender.map(str::trim) {
        Some(g) if !g.is_empty() => {
            if g.chars().any(char::is_uppercase) {
                Cow::Owned(g.to_lowercase())
            } else {
                Cow::Borrowed(g)
            }
        }
        _ => Cow::Borrowed(UNKNOWN),
    }
}

/// Country as stored (a code, or a publisher's country name); `unknown` when absent or empty.
pub fn country_band(country: Option<&str>) -> &str {
    match country {
        Some(c) if !c.is_empty() => c,
        _ => UNKNOWN,
    }
}

/// The band of each facet for an event's user (every facet `unknown` when there is no user).
pub(crate) fn demographic_bands<'a>(user: &UserFacts<'a>) -> [(Facet, Cow<'a, str>); 4] {
    [
        (Facet::Age, Cow::Borrowed(age_band(user.age))),
        (Facet::Country, Cow::Borrowed(country_band(user.country))),
        (
            Facet::Followers,
            Cow::Borrowed(followers_band(user.followers)),
        ),
        (Facet::Gender, gender_band(user.gender)),
    ]
}
