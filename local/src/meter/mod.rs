//! Billable units, counted as AWS would bill them, for `tally-local cost`.
//!
//! Metering proxies ([`proxy`]) stand between each caller (a function, the SQS pollers, the
//! clients) and the emulator it talks to. Each proxy knows its caller and reads every request and
//! answer ([`classify`]): DynamoDB capacity units per table and index, SQS requests per 64 KB
//! chunk, Firehose bytes rounded up per record, S3 requests, EventBridge entries, Secrets
//! Manager calls and HTTP API requests. Lambda's own units (invocations, GB-seconds, log bytes)
//! come from the Runtime API emulator's reports, which the cost command adds.

pub mod classify;
pub mod proxy;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

pub use proxy::{MeteringProxy, Upstream};

/// One billable unit of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    /// HTTP API requests, each 512 KB of a request counted as one.
    ApiRequests,
    /// Bytes the HTTP API's access log writes to CloudWatch Logs.
    AccessLogBytes,
    LambdaRequests,
    /// Billed duration (init included) times configured memory, in GB-seconds.
    LambdaGbSeconds,
    /// Bytes a function writes to CloudWatch Logs (its own lines and Lambda's platform lines).
    LambdaLogBytes,
    /// SQS requests, each 64 KB chunk of a payload counted as one.
    SqsRequests,
    /// `ReceiveMessage` calls that found the queue empty: what a poller costs while idle, by the
    /// hour rather than by the event.
    SqsEmptyReceives,
    /// DynamoDB read request units of a table, or of one index as `table/index`.
    DynamoRead(String),
    /// DynamoDB write request units of a table, or of one index as `table/index`.
    DynamoWrite(String),
    /// Firehose ingestion, each record rounded up to 5 KB.
    FirehoseBytes,
    /// S3 PUT, COPY, POST and LIST requests.
    S3Tier1,
    /// S3 GET and other requests.
    S3Tier2,
    /// EventBridge custom events, each 64 KB chunk counted as one.
    EventBridgeEvents,
    SecretsManagerCalls,
    /// X-Ray traces recorded (derived from the invocations: the default sampling rule).
    XRayTraces,
    /// A call of no listed price (a control-plane call such as `DescribeTable`), by name.
    Unpriced(String),
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::ApiRequests => f.write_str("HTTP API requests"),
            Unit::AccessLogBytes => f.write_str("HTTP API access log bytes"),
            Unit::LambdaRequests => f.write_str("Lambda requests"),
            Unit::LambdaGbSeconds => f.write_str("Lambda GB-seconds"),
            Unit::LambdaLogBytes => f.write_str("Lambda log bytes"),
            Unit::SqsRequests => f.write_str("SQS requests"),
            Unit::SqsEmptyReceives => f.write_str("SQS empty receives (idle polling)"),
            Unit::DynamoRead(t) => write!(f, "DynamoDB read units {t}"),
            Unit::DynamoWrite(t) => write!(f, "DynamoDB write units {t}"),
            Unit::FirehoseBytes => f.write_str("Firehose billed bytes"),
            Unit::S3Tier1 => f.write_str("S3 PUT/LIST requests"),
            Unit::S3Tier2 => f.write_str("S3 GET requests"),
            Unit::EventBridgeEvents => f.write_str("EventBridge events"),
            Unit::SecretsManagerCalls => f.write_str("Secrets Manager calls"),
            Unit::XRayTraces => f.write_str("X-Ray traces"),
            Unit::Unpriced(name) => write!(f, "unpriced {name}"),
        }
    }
}

/// Units counted per caller (a function's logical id, the SQS pollers, the clients).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage(BTreeMap<(String, Unit), f64>);

impl Usage {
    pub fn add(&mut self, caller: &str, unit: Unit, amount: f64) {
        if amount != 0.0 {
            *self.0.entry((caller.to_owned(), unit)).or_default() += amount;
        }
    }

    /// What was counted after `before` was read.
    pub fn since(&self, before: &Usage) -> Usage {
        let mut delta = Usage::default();
        for ((caller, unit), amount) in &self.0 {
            let earlier = before
                .0
                .get(&(caller.clone(), unit.clone()))
                .copied()
                .unwrap_or(0.0);
            delta.add(caller, unit.clone(), amount - earlier);
        }
        delta
    }

    /// Every (caller, unit, amount), by caller then unit.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Unit, f64)> {
        self.0.iter().map(|((c, u), a)| (c.as_str(), u, *a))
    }

    /// The amount of `unit` over every caller.
    pub fn total(&self, unit: &Unit) -> f64 {
        self.entries()
            .filter(|(_, u, _)| *u == unit)
            .map(|(_, _, a)| a)
            .sum()
    }

    /// The usage without the units `drop` picks.
    pub fn without(&self, drop: impl Fn(&str, &Unit) -> bool) -> Usage {
        let mut kept = Usage::default();
        for (caller, unit, amount) in self.entries() {
            if !drop(caller, unit) {
                kept.add(caller, unit.clone(), amount);
            }
        }
        kept
    }
}

/// The running count, shared by every proxy.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<Usage>>);

impl Meter {
    pub fn record(&self, caller: &str, units: impl IntoIterator<Item = (Unit, f64)>) {
        let mut usage = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (unit, amount) in units {
            usage.add(caller, unit, amount);
        }
    }

    pub fn snapshot(&self) -> Usage {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_keeps_only_what_grew() {
        let meter = Meter::default();
        meter.record("ProcessFunction", [(Unit::SqsRequests, 2.0)]);
        let before = meter.snapshot();
        meter.record(
            "ProcessFunction",
            [
                (Unit::SqsRequests, 3.0),
                (Unit::DynamoWrite("events".into()), 1.5),
            ],
        );
        meter.record("IngestFunction", [(Unit::SqsRequests, 1.0)]);
        let delta = meter.snapshot().since(&before);
        assert_eq!(delta.total(&Unit::SqsRequests), 4.0);
        assert_eq!(delta.total(&Unit::DynamoWrite("events".into())), 1.5);
        assert_eq!(delta.entries().count(), 3);
    }
}
