//! The DynamoDB client's interceptor that measures [`RequestCost`]: it counts every attempt sent,
//! asks for `ConsumedCapacity` (TOTAL) on the operations that report it, and adds what comes back.

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::{
    batch_get_item::{BatchGetItemInput, BatchGetItemOutput},
    batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput},
    delete_item::{DeleteItemInput, DeleteItemOutput},
    get_item::{GetItemInput, GetItemOutput},
    put_item::{PutItemInput, PutItemOutput},
    query::{QueryInput, QueryOutput},
    scan::{ScanInput, ScanOutput},
    transact_get_items::{TransactGetItemsInput, TransactGetItemsOutput},
    transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput},
    update_item::{UpdateItemInput, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};

use crate::request_cost::RequestCost;

/// A DynamoDB client for `config` whose calls are measured.
pub(crate) fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .interceptor(CostInterceptor)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

#[derive(Debug)]
struct CostInterceptor;

/// Sets `ReturnConsumedCapacity` to TOTAL on the operation's input when it is one of the listed
/// types, unless the caller chose already. (The SDK's type-erased input is not nameable here.)
macro_rules! ask_for_capacity {
    ($input:expr, $($t:ty),+) => {
        $(if let Some(input) = $input.downcast_mut::<$t>() {
            input.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Total);
        })+
    };
}

/// The units the operation's output reports, as (read, write), for the listed read and write
/// output types.
macro_rules! consumed {
    ($output:expr; reads: $($r:ty),+; writes: $($w:ty),+) => {{
        let mut found = (0.0, 0.0);
        $(if let Some(o) = $output.downcast_ref::<$r>() {
            found.0 = units(o.consumed_capacity());
        })+
        $(if let Some(o) = $output.downcast_ref::<$w>() {
            found.1 = units(o.consumed_capacity());
        })+
        found
    }};
}

fn units<'a>(capacity: impl IntoIterator<Item = &'a ConsumedCapacity>) -> f64 {
    capacity
        .into_iter()
        .filter_map(ConsumedCapacity::capacity_units)
        .sum()
}

impl Intercept for CostInterceptor {
    fn name(&self) -> &'static str {
        "RequestCost"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if RequestCost::is_measured() {
            ask_for_capacity!(
                context.input_mut(),
                QueryInput,
                ScanInput,
                GetItemInput,
                BatchGetItemInput,
                TransactGetItemsInput,
                PutItemInput,
                UpdateItemInput,
                DeleteItemInput,
                BatchWriteItemInput,
                TransactWriteItemsInput
            );
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        RequestCost::record(|c| c.requests += 1);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(output) = context.output_or_error() {
            let (read, write) = consumed!(output;
                reads: QueryOutput, ScanOutput, GetItemOutput, BatchGetItemOutput,
                    TransactGetItemsOutput;
                writes: PutItemOutput, UpdateItemOutput, DeleteItemOutput, BatchWriteItemOutput,
                    TransactWriteItemsOutput);
            RequestCost::record(|c| {
                c.read_units += read;
                c.write_units += write;
            });
        }
        Ok(())
    }
}
