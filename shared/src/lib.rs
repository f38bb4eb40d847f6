//! Tally's library: the event model and its rules, the HTTP and queue boundaries, the ports
//! (`EventQueue`, `EventStore`, `CounterSink`) and their AWS adapters.

pub mod admin;
pub mod aggregation;
pub mod archive;
pub mod auth;
pub mod aws;
pub mod body;
pub mod config;
pub mod console;
pub mod counters;
pub mod csv_rows;
pub mod error;
pub mod event;
#[cfg(feature = "faults")]
pub mod faults;
pub mod http;
pub mod ingest;
pub mod live;
pub mod observability;
pub mod ops;
pub mod process;
pub mod query;
pub mod queue;
pub mod redrive;
pub mod repair;
pub mod request_cost;
pub mod request_latency;
pub mod retry;
pub mod rollup;
pub mod scoring;
pub mod secrets;
pub mod shards;
pub mod signature;
pub mod store;
pub mod stream_window;
