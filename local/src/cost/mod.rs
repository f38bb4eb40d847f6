//! `tally-local cost`: a reference workload through the real local pipeline, every billable unit
//! counted ([`crate::meter`]), priced at list prices ([`prices`]) per million events.

pub mod prices;
pub mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::meter::{Unit, Usage};
pub use prices::{Architecture, PRICES_AS_OF};
pub use run::{run, CostOptions, Profile};

/// One billed unit, scaled to a million events.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub service: &'static str,
    pub unit: Unit,
    pub units_per_million: f64,
    pub usd_per_million: f64,
    pub price: &'static str,
}

/// What a million events of one profile cost, item by item and caller by caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Bill {
    pub profile: String,
    /// Events the workload posted and the HTTP API accepted.
    pub events: u64,
    /// Most expensive first.
    pub lines: Vec<Line>,
    /// US dollars per million events by caller (a function, the SQS pollers, the clients).
    pub by_caller: Vec<(String, f64)>,
}

impl Bill {
    pub fn new(profile: &str, events: u64, usage: &Usage, architecture: Architecture) -> Bill {
        let scale = 1_000_000.0 / events.max(1) as f64;
        let mut units: BTreeMap<Unit, f64> = BTreeMap::new();
        let mut callers: BTreeMap<String, f64> = BTreeMap::new();
        for (caller, unit, amount) in usage.entries() {
            *units.entry(unit.clone()).or_default() += amount;
            let (price, _) = prices::price(unit, architecture);
            *callers.entry(caller.to_owned()).or_default() += amount * price * scale;
        }
        let mut lines: Vec<Line> = units
            .into_iter()
            .map(|(unit, amount)| {
                let (price, stated) = prices::price(&unit, architecture);
                Line {
                    service: prices::service(&unit),
                    units_per_million: amount * scale,
                    usd_per_million: amount * price * scale,
                    price: stated,
                    unit,
                }
            })
            .collect();
        lines.sort_by(|a, b| b.usd_per_million.total_cmp(&a.usd_per_million));
        let mut by_caller: Vec<(String, f64)> = callers.into_iter().collect();
        by_caller.sort_by(|a, b| b.1.total_cmp(&a.1));
        Bill {
            profile: profile.to_owned(),
            events,
            lines,
            by_caller,
        }
    }

    /// US dollars per million events.
    pub fn total(&self) -> f64 {
        self.lines.iter().map(|l| l.usd_per_million).sum()
    }

    /// US dollars per million events of one service.
    pub fn service_total(&self, service: &str) -> f64 {
        self.lines
            .iter()
            .filter(|l| l.service == service)
            .map(|l| l.usd_per_million)
            .sum()
    }

    /// The bill as a text table: every item with its units and dollars per million events.
    pub fn render(&self) -> String {
        let total = self.total();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} events measured; per million events, at list prices of {PRICES_AS_OF}",
            self.profile, self.events
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<46} {:>14} {:>10} {:>6}",
            "service", "unit", "units", "USD", "share"
        );
        for line in &self.lines {
            let _ = writeln!(
                out,
                "  {:<16} {:<46} {:>14} {:>10.4} {:>5.1}%",
                line.service,
                line.unit.to_string(),
                format!("{:.0}", line.units_per_million),
                line.usd_per_million,
                100.0 * line.usd_per_million / total.max(1e-12),
            );
        }
        let _ = writeln!(
            out,
            "  {:<16} {:<46} {:>14} {:>10.4}",
            "total", "", "", total
        );
        let _ = writeln!(out, "  by caller:");
        for (caller, usd) in &self.by_caller {
            let _ = writeln!(out, "    {caller:<40} {usd:>10.4}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_scales_to_a_million_events_and_ranks_its_items() {
        let mut usage = Usage::default();
        usage.add(
            "ProcessFunction",
            Unit::DynamoWrite("events".into()),
            2_000.0,
        );
        usage.add("ProcessFunction", Unit::SqsRequests, 30.0);
        usage.add("IngestFunction", Unit::SqsRequests, 10.0);
        usage.add("IngestFunction", Unit::LambdaGbSeconds, 1.5);
        let bill = Bill::new("batch", 1_000, &usage, Architecture::Arm64);
        // 2 write units an event: $1.25 per million events.
        assert_eq!(bill.lines[0].unit, Unit::DynamoWrite("events".into()));
        assert!((bill.lines[0].usd_per_million - 1.25).abs() < 1e-9);
        assert!((bill.service_total("SQS") - 40_000.0 * 0.4 / 1e6).abs() < 1e-12);
        let lambda = 1_500.0 * 0.000_013_333_4;
        assert!((bill.service_total("Lambda") - lambda).abs() < 1e-9);
        assert!((bill.total() - (1.25 + 0.016 + lambda)).abs() < 1e-9);
        assert_eq!(bill.by_caller[0].0, "ProcessFunction");
        assert!(bill.render().contains("DynamoDB write units events"));
    }
}
