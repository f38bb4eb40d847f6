//! Structured JSON logs through `tracing`, and CloudWatch embedded-metric-format (EMF) lines.

use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

/// JSON logs with the current span's fields (the correlation id lives on the span).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Collects metric values for one invocation and prints them as one EMF document.
#[derive(Debug)]
pub struct Metrics {
    function: &'static str,
    values: Vec<(&'static str, f64, Unit)>,
    properties: Map<String, Value>,
}

pub const NAMESPACE: &str = "Tally";

impl Metrics {
    pub fn new(function: &'static str) -> Self {
        Self {
            function,
            values: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn count(&mut self, name: &'static str, n: u64) {
        self.put(name, n as f64, Unit::Count);
    }

    pub fn put(&mut self, name: &'static str, value: f64, unit: Unit) {
        match self.values.iter_mut().find(|(n, _, _)| *n == name) {
            Some(entry) => entry.1 += value,
            None => self.values.push((name, value, unit)),
        }
    }

    /// The time since `started`, in milliseconds.
    pub fn duration(&mut self, name: &'static str, started: std::time::Instant) {
        self.put(
            name,
            started.elapsed().as_secs_f64() * 1000.0,
            Unit::Milliseconds,
        );
    }

    pub fn property(&mut self, key: &str, value: impl Into<Value>) {
        self.properties.insert(key.to_owned(), value.into());
    }

    /// A property set as text.
    pub fn text_property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }

    pub fn document(&self, timestamp_millis: i64) -> Value {
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut doc = self.properties.clone();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_millis,
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}],
            }),
        );
        doc.insert("Function".into(), json!(self.function));
        for (name, value, _) in &self.values {
            doc.insert((*name).to_owned(), json!(value));
        }
        Value::Object(doc)
    }

    /// Prints the document to stdout, where Lambda's log capture hands it to CloudWatch.
    pub fn flush(self) {
        if self.values.is_empty() {
            return;
        }
        println!("{}", self.document(chrono::Utc::now().timestamp_millis()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_every_metric_it_carries() {
        let mut m = Metrics::new("process");
        m.count("EventsProcessed", 3);
        m.count("EventsProcessed", 2);
        m.put("BatchDuration", 12.5, Unit::Milliseconds);
        m.property("correlationId", "abc");
        let doc = m.document(1_700_000_000_000);
        assert_eq!(doc["EventsProcessed"], json!(5.0));
        assert_eq!(doc["Function"], json!("process"));
        assert_eq!(doc["correlationId"], json!("abc"));
        let declared = &doc["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(
            declared,
            &json!([{"Name": "EventsProcessed", "Unit": "Count"}, {"Name": "BatchDuration", "Unit": "Milliseconds"}])
        );
    }
}
