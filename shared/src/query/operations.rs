//! `GET /health/ready` and `GET /metrics`.

use futures::future::try_join_all;
use serde_json::json;

use super::params::QueryParams;
use crate::counters::CounterSink;
use crate::error::ApiError;
use crate::event::FieldError;
use crate::http::{HttpRequest, HttpResponse};
use crate::ops::{prometheus, NamedDependency, NamedQueue, ReadinessCache};
use crate::request_latency::LatencyStore;

/// `200 {"status": "ok", "checks": {...}}` when every dependency answers; otherwise `503` naming
/// the first that does not, with every failing one in `details`. The answer is at most the
/// cache's time to live old.
pub(crate) async fn ready(
    dependencies: &[NamedDependency],
    cache: &ReadinessCache,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    QueryParams::new(request, &[]).finish(Some(()))?;
    let failed = cache.unready(dependencies).await;
    if let Some(first) = failed.first() {
        return Err(ApiError::Unavailable {
            dependency: first,
            details: failed
                .iter()
                .map(|name| FieldError::new((*name).to_owned(), "does not answer".to_owned()))
                .collect(),
        });
    }
    let checks: serde_json::Map<String, serde_json::Value> = dependencies
        .iter()
        .map(|d| (d.name.to_owned(), json!("ok")))
        .collect();
    Ok(HttpResponse::json(
        200,
        &json!({"status": "ok", "checks": checks}),
    ))
}

/// The pipeline counters, request times and queue depths in the Prometheus text format.
pub(crate) async fn metrics(
    counters: &dyn CounterSink,
    latencies: &dyn LatencyStore,
    queues: &[NamedQueue],
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    QueryParams::new(request, &[]).finish(Some(()))?;
    let depths = try_join_all(queues.iter().map(|q| async move {
        q.stats
            .depth()
            .await
            .map(|depth| (q.label, depth))
            .map_err(|_| ApiError::unavailable(q.name))
    }));
    let (totals, routes, depths) = futures::join!(counters.totals(), latencies.totals(), depths);
    let totals = totals.map_err(ApiError::analytics_down)?;
    let routes = routes.map_err(ApiError::analytics_down)?;
    let depths = depths?;
    Ok(HttpResponse::text_as(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        prometheus(&totals, &routes, &depths),
    ))
}
