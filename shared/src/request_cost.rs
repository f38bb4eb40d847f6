//! What one request or batch cost in DynamoDB: the requests sent (retries included) and the
//! capacity units DynamoDB reports consumed. The DynamoDB adapters' clients record into the cost
//! of the task running inside [`RequestCost::measure`]; outside it they record nothing.

use std::cell::Cell;
use std::future::Future;

use crate::observability::{Metrics, Unit};

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RequestCost {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
}

tokio::task_local! {
    static CURRENT: Cell<RequestCost>;
}

impl RequestCost {
    /// Runs `work` and returns what its DynamoDB calls cost. Concurrent calls inside `work` are
    /// counted as long as they run on its task (joined or buffered futures, not spawned tasks).
    /// Measurements nest: an enclosing measurement includes this one's cost too.
    pub async fn measure<F: Future>(work: F) -> (F::Output, RequestCost) {
        let (output, cost) = CURRENT
            .scope(Cell::new(RequestCost::default()), async move {
                let output = work.await;
                (output, CURRENT.with(Cell::get))
            })
            .await;
        RequestCost::record(|outer| {
            outer.requests += cost.requests;
            outer.read_units += cost.read_units;
            outer.write_units += cost.write_units;
        });
        (output, cost)
    }

    /// Whether the current task is being measured (only then is capacity asked for).
    pub(crate) fn is_measured() -> bool {
        CURRENT.try_with(|_| ()).is_ok()
    }

    pub(crate) fn record(change: impl FnOnce(&mut RequestCost)) {
        // Outside a measured task there is nothing to record into.
        let _ = CURRENT.try_with(|cell| {
            let mut cost = cell.get();
            change(&mut cost);
            cell.set(cost);
        });
    }

    /// Adds the figures to an invocation's EMF metrics, when it called DynamoDB at all (so the
    /// metrics' averages are per request that reads or writes, not diluted by refusals).
    pub fn add_to(&self, metrics: &mut Metrics) {
        if self.requests == 0 {
            return;
        }
        metrics.count("DynamoRequests", self.requests);
        metrics.put("DynamoReadUnits", self.read_units, Unit::Count);
        metrics.put("DynamoWriteUnits", self.write_units, Unit::Count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_only_inside_a_measured_task() {
        RequestCost::record(|c| c.requests += 1);
        assert!(!RequestCost::is_measured());
        let ((), cost) = RequestCost::measure(async {
            assert!(RequestCost::is_measured());
            let a = async { RequestCost::record(|c| c.read_units += 0.5) };
            let b = async { RequestCost::record(|c| c.requests += 2) };
            futures::join!(a, b);
        })
        .await;
        assert_eq!(
            cost,
            RequestCost {
                requests: 2,
                read_units: 0.5,
                write_units: 0.0
            }
        );
    }

    #[tokio::test]
    async fn an_enclosing_measurement_includes_the_nested_one() {
        let ((inner, ()), outer) = RequestCost::measure(async {
            let ((), inner) = RequestCost::measure(async {
                RequestCost::record(|c| c.requests += 3);
            })
            .await;
            (inner, RequestCost::record(|c| c.write_units += 1.0))
        })
        .await;
        assert_eq!(inner.requests, 3);
        assert_eq!((outer.requests, outer.write_units), (3, 1.0));
    }
}
