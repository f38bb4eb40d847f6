//! Scoring rules in the analytics table (DynamoDB Local): defaults on first use, concurrent first
//! uses agree, rule changes are versioned and never lost to a concurrent writer.

use anyhow::Result;
use tally::aws::DynamoRules;
use tally::request_cost::RequestCost;
use tally::scoring::{load_or_init, put_rule, Rule, RuleStore, RuleStoreError, ScoreRules};
use tally_tests::{sdk_config, Stack};

async fn store(name: &str) -> Result<(Stack, DynamoRules)> {
    let stack = Stack::provision(name).await?;
    let rules = DynamoRules::new(
        &sdk_config(&stack.dynamodb_endpoint),
        stack.table("AnalyticsTable")?.to_owned(),
    );
    Ok((stack, rules))
}

#[tokio::test]
async fn defaults_are_written_on_first_use() -> Result<()> {
    let (_stack, rules) = store("rules_defaults").await?;
    assert!(rules.load().await?.is_none());
    let first = load_or_init(&rules).await?;
    assert_eq!(
        (first.rules.clone(), first.version),
        (ScoreRules::defaults(), 1)
    );
    assert_eq!(rules.load().await?, Some(first));
    Ok(())
}

#[tokio::test]
async fn concurrent_first_uses_agree() -> Result<()> {
    let (_stack, rules) = store("rules_race").await?;
    let (a, b, c) = tokio::join!(
        load_or_init(&rules),
        load_or_init(&rules),
        load_or_init(&rules)
    );
    let (a, b, c) = (a?, b?, c?);
    assert_eq!((a.version, b.version, c.version), (1, 1, 1));
    Ok(())
}

#[tokio::test]
async fn rule_changes_are_versioned_and_none_is_lost() -> Result<()> {
    let (_stack, rules) = store("rules_change").await?;
    let stale = load_or_init(&rules).await?;
    let mut capped = Rule::new("PAGE_VIEW", 7);
    capped.max_per_day = Some(3);
    let saved = put_rule(&rules, capped.clone()).await?;
    assert_eq!(saved.version, 2);
    assert_eq!(saved.rules.rule("PAGE_VIEW"), Some(&capped));
    // A writer holding the old version is refused instead of overwriting the change.
    assert!(matches!(
        rules.save(&stale.rules, stale.version).await,
        Err(RuleStoreError::Conflict)
    ));
    // Concurrent changes of different rules both land.
    let (x, y) = tokio::join!(
        put_rule(&rules, Rule::new("WEBINAR", 30)),
        put_rule(&rules, Rule::new("PURCHASE", 150))
    );
    x?;
    y?;
    let current = load_or_init(&rules).await?;
    assert_eq!(current.version, 4);
    assert_eq!(current.rules.rule("WEBINAR").map(|r| r.points), Some(30));
    assert_eq!(current.rules.rule("PURCHASE").map(|r| r.points), Some(150));
    assert_eq!(current.rules.rule("PAGE_VIEW"), Some(&capped));
    Ok(())
}

#[tokio::test]
async fn a_measured_task_counts_its_dynamodb_requests_and_units() -> Result<()> {
    let (_stack, rules) = store("rules_cost").await?;
    // Outside a measured task the adapters work as before and nothing is asked or recorded.
    assert!(rules.load().await?.is_none());

    // First use: a consistent GetItem that finds nothing, then the conditional PutItem.
    let (first, cost) = RequestCost::measure(load_or_init(&rules)).await;
    first?;
    assert_eq!(cost.requests, 2, "{cost:?}");
    assert!(cost.read_units > 0.0, "{cost:?}");
    assert!(cost.write_units >= 1.0, "{cost:?}");

    // A read alone costs one request and read units only.
    let (again, cost) = RequestCost::measure(load_or_init(&rules)).await;
    again?;
    assert_eq!(cost.requests, 1, "{cost:?}");
    assert!(cost.read_units > 0.0, "{cost:?}");
    assert_eq!(cost.write_units, 0.0, "{cost:?}");

    // Concurrent calls on the measured task are all counted.
    let (_, cost) =
        RequestCost::measure(async { tokio::join!(rules.load(), rules.load(), rules.load()) })
            .await;
    assert_eq!(cost.requests, 3, "{cost:?}");
    Ok(())
}
