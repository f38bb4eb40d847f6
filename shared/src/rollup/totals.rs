//! One counter of the per-type totals: how many events, and their exact revenue per currency.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::event::Money;

/// Event count and exact revenue per currency. Adding and merging are exact and commutative, so
/// any order or partition of the same events gives the same totals, down to the decimal scale
/// (a sum has the largest scale of its terms: `1.0000` from ten thousand `0.0001`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events counted.
    pub count: u64,
    /// Of those, the events that carried revenue (the revenue report's `purchases`).
    pub revenue_events: u64,
    /// Sum of the revenue per ISO 4217 currency, refunds negative. Only currencies that some
    /// counted event carried appear, even when they sum to zero.
    pub revenue: BTreeMap<String, Decimal>,
}

impl Totals {
    /// Counts one event with its revenue, if any.
    pub fn record(&mut self, revenue: Option<&Money>) {
        self.count = self.count.saturating_add(1);
        if let Some(money) = revenue {
            self.revenue_events = self.revenue_events.saturating_add(1);
            self.add_revenue(&money.currency, money.amount);
        }
    }

    pub fn merge(&mut self, other: &Totals) {
        self.count = self.count.saturating_add(other.count);
        self.revenue_events = self.revenue_events.saturating_add(other.revenue_events);
        for (currency, amount) in &other.revenue {
            self.add_revenue(currency, *amount);
        }
    }

    /// Revenue in one currency, zero when none was counted.
    pub fn revenue_in(&self, currency: &str) -> Decimal {
        self.revenue.get(currency).copied().unwrap_or(Decimal::ZERO)
    }

    fn add_revenue(&mut self, currency: &str, amount: Decimal) {
        match self.revenue.get_mut(currency) {
            Some(sum) => *sum = exact_sum(*sum, amount),
            None => {
                self.revenue
                    .insert(currency.to_owned(), exact_sum(Decimal::ZERO, amount));
            }
        }
    }
}

/// `a + b`, exact for every sum the domain can reach (amounts are below 10^12 with at most 4
/// fraction digits; a `Decimal` holds 28 digits), saturating instead of panicking beyond that.
/// A zero is always positive, so `12.50 + -12.50` reads `0.00` whichever term came first.
fn exact_sum(a: Decimal, b: Decimal) -> Decimal {
    let mut sum = a.saturating_add(b);
    if sum.is_zero() {
        sum.set_sign_positive(true);
    }
    sum
}
