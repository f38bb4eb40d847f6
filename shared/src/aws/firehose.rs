//! The archive's delivery stream: `PutRecordBatch`, answered record by record.

use async_trait::async_trait;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;

use crate::archive::ArchiveSink;
use crate::store::StoreError;

pub struct FirehoseArchive {
    client: aws_sdk_firehose::Client,
    delivery_stream: String,
}

impl FirehoseArchive {
    pub fn new(config: &aws_config::SdkConfig, delivery_stream: String) -> Self {
        Self {
            client: aws_sdk_firehose::Client::new(config),
            delivery_stream,
        }
    }
}

#[async_trait]
impl ArchiveSink for FirehoseArchive {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        let count = records.len();
        let records = records
            .into_iter()
            .map(|data| Record::builder().data(Blob::new(data)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("archive record: {e}")))?;
        let output = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.delivery_stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let answers: Vec<Option<String>> = output
            .request_responses()
            .iter()
            .map(|r| {
                r.error_code()
                    .map(str::to_owned)
                    .or_else(|| r.record_id().is_none().then(|| "NoRecordId".to_owned()))
            })
            .collect();
        // `FailedPutCount` and the per-record answers must agree; if they do not, trust neither
        // for the records in doubt: the archiver resends what is not answered as accepted.
        let refused = answers.iter().filter(|a| a.is_some()).count();
        if answers.len() != count || refused != output.failed_put_count().max(0) as usize {
            tracing::warn!(
                answers = answers.len(),
                count,
                refused,
                failed_put_count = output.failed_put_count(),
                "PutRecordBatch answers disagree; resending all"
            );
            return Ok(vec![Some("InconsistentAnswer".to_owned()); count]);
        }
        Ok(answers)
    }
}
