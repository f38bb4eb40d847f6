//! How the local stack's front ends (HTTP API, event-source mappings, schedules) reach a function.

use async_trait::async_trait;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    #[error("no function named {0}")]
    UnknownFunction(String),
    /// The handler returned an error through the Runtime API (`/invocation/{id}/error`).
    #[error("function error {error_type}: {error_message}")]
    FunctionError {
        error_type: String,
        error_message: String,
    },
    /// The invocation ran past the function's timeout; the process was killed and restarted.
    #[error("task timed out after {seconds} seconds")]
    Timeout { seconds: u64 },
    /// The process exited (or failed init) before answering; it is restarted for the next call.
    #[error("runtime exited before answering: {0}")]
    Crashed(String),
}

/// Synchronous (RequestResponse) invocation of a named function with a JSON event.
#[async_trait]
pub trait Invoker: Send + Sync {
    async fn invoke(&self, function: &str, event: Value) -> Result<Value, InvokeError>;
}
