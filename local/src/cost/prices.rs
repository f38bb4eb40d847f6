//! List prices, us-east-1, on-demand, without free tiers. The README's cost section prints the
//! same table with its date; change both together.

use crate::meter::Unit;

/// When the prices below were taken from AWS's public price lists.
pub const PRICES_AS_OF: &str = "2026-12-06";

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MILLION: f64 = 1_000_000.0;

/// The Lambda architecture the template deploys (its `Architecture` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Arm64,
    X86_64,
}

impl std::str::FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" => Ok(Architecture::Arm64),
            "x86_64" => Ok(Architecture::X86_64),
            other => Err(format!("unknown architecture {other} (arm64 or x86_64)")),
        }
    }
}

/// Share of invocations X-Ray's default sampling rule records once past its one a second.
pub const XRAY_SAMPLED: f64 = 0.05;

/// The service a unit is billed by, for the bill's grouping.
pub fn service(unit: &Unit) -> &'static str {
    match unit {
        Unit::ApiRequests => "API Gateway",
        Unit::AccessLogBytes | Unit::LambdaLogBytes => "CloudWatch Logs",
        Unit::LambdaRequests | Unit::LambdaGbSeconds => "Lambda",
        Unit::SqsRequests | Unit::SqsEmptyReceives => "SQS",
        Unit::DynamoRead(_) | Unit::DynamoWrite(_) => "DynamoDB",
        Unit::FirehoseBytes => "Firehose",
        Unit::S3Tier1 | Unit::S3Tier2 => "S3",
        Unit::EventBridgeEvents => "EventBridge",
        Unit::SecretsManagerCalls => "Secrets Manager",
        Unit::XRayTraces => "X-Ray",
        Unit::Unpriced(_) => "unpriced",
    }
}

/// US dollars per unit, and how the price list states it.
pub fn price(unit: &Unit, architecture: Architecture) -> (f64, &'static str) {
    match unit {
        Unit::ApiRequests => (1.00 / MILLION, "$1.00 per million requests (HTTP API)"),
        Unit::AccessLogBytes | Unit::LambdaLogBytes => (0.50 / GIB, "$0.50 per GB ingested"),
        Unit::LambdaRequests => (0.20 / MILLION, "$0.20 per million requests"),
        Unit::LambdaGbSeconds => match architecture {
            Architecture::Arm64 => (0.000_013_333_4, "$0.0000133334 per GB-second (arm64)"),
            Architecture::X86_64 => (0.000_016_666_7, "$0.0000166667 per GB-second (x86_64)"),
        },
        Unit::SqsRequests => (0.40 / MILLION, "$0.40 per million requests (standard)"),
        // Billed like any request, but by the hour a poller idles, not by the event; the local
        // pollers wait 2 s where Lambda's wait 20 s.
        Unit::SqsEmptyReceives => (0.0, "idle polling: by the hour, not per event"),
        Unit::DynamoRead(_) => (0.125 / MILLION, "$0.125 per million read request units"),
        Unit::DynamoWrite(_) => (0.625 / MILLION, "$0.625 per million write request units"),
        Unit::FirehoseBytes => (0.029 / GIB, "$0.029 per GB ingested (Direct PUT)"),
        Unit::S3Tier1 => (0.005 / 1_000.0, "$0.005 per 1,000 PUT/COPY/POST/LIST"),
        Unit::S3Tier2 => (0.0004 / 1_000.0, "$0.0004 per 1,000 GET"),
        Unit::EventBridgeEvents => (1.00 / MILLION, "$1.00 per million custom events"),
        Unit::SecretsManagerCalls => (0.05 / 10_000.0, "$0.05 per 10,000 API calls"),
        Unit::XRayTraces => (5.00 / MILLION, "$5.00 per million traces recorded"),
        Unit::Unpriced(_) => (0.0, "not billed per call"),
    }
}
