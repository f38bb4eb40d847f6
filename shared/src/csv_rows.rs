//! `text/csv` batches: a header row naming known columns, each later row one event. Rows are
//! numbered as a spreadsheet shows them: the header is row 1.

use serde_json::{json, Map, Value};

use crate::body::MAX_CSV_ROWS;
use crate::error::ApiError;
use crate::event::FieldError;

pub const COLUMNS: &[&str] = &[
    "eventId",
    "type",
    "timestamp",
    "source",
    "leadId",
    "email",
    "name",
    "company",
    "userId",
    "campaignId",
    "regionId",
    "funnelStage",
    "revenue",
    "currency",
];

/// One data row: its number and either the event JSON or why the row could not be read.
pub struct CsvRow {
    pub row: usize,
    pub item: Result<Value, FieldError>,
}

pub fn parse(body: &[u8]) -> Result<Vec<CsvRow>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|_| {
            ApiError::validation(vec![FieldError::new(
                "/row/1",
                "header row is not valid UTF-8 CSV",
            )])
        })?
        .clone();
    // Each known column at most once: a longer header cannot be valid, and is refused before
    // its columns are examined one by one.
    if headers.len() > COLUMNS.len() {
        return Err(ApiError::validation(vec![FieldError::new(
            "/row/1",
            format!(
                "the header has {} columns; at most {} are known: {}",
                headers.len(),
                COLUMNS.len(),
                COLUMNS.join(",")
            ),
        )]));
    }
    let mut problems = Vec::new();
    let mut columns = Vec::with_capacity(headers.len());
    for (i, name) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) if columns.contains(c) => {
                problems.push(format!("column {} ({c}) is repeated", i + 1))
            }
            Some(c) => columns.push(*c),
            None => problems.push(format!(
                "column {} is not one of {}",
                i + 1,
                COLUMNS.join(",")
            )),
        }
    }
    if !problems.is_empty() {
        let details = problems
            .into_iter()
            .map(|m| FieldError::new("/row/1", m))
            .collect();
        return Err(ApiError::validation(details));
    }
    if !columns.contains(&"type") {
        return Err(ApiError::validation(vec![FieldError::new(
            "/row/1",
            "a type column is required",
        )]));
    }

    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        if rows.len() == MAX_CSV_ROWS {
            return Err(ApiError::PayloadTooLarge(format!(
                "a CSV body holds at most {MAX_CSV_ROWS} rows"
            )));
        }
        let row = i + 2;
        let item = match record {
            Err(_) => Err(FieldError::new("", "row is not valid UTF-8 CSV")),
            Ok(r) if r.len() != columns.len() => Err(FieldError::new(
                "",
                format!(
                    "row has {} fields; the header has {}",
                    r.len(),
                    columns.len()
                ),
            )),
            Ok(r) => Ok(row_to_event(&columns, &r)),
        };
        rows.push(CsvRow { row, item });
    }
    if rows.is_empty() {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "the CSV has no data rows",
        )]));
    }
    Ok(rows)
}

/// Empty cells are absent fields; an all-digit timestamp is epoch milliseconds.
fn row_to_event(columns: &[&str], record: &csv::StringRecord) -> Value {
    let mut event = Map::new();
    let mut lead = Map::new();
    let mut revenue = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let text = Value::String(cell.to_owned());
        match *column {
            "email" | "name" | "company" => {
                lead.insert((*column).to_owned(), text);
            }
            "revenue" => {
                revenue.insert("amount".into(), text);
            }
            "currency" => {
                revenue.insert("currency".into(), text);
            }
            "timestamp" if cell.bytes().all(|b| b.is_ascii_digit()) => {
                let millis = cell.parse::<i64>().map(Value::from).unwrap_or(text);
                event.insert("timestamp".into(), millis);
            }
            _ => {
                event.insert((*column).to_owned(), text);
            }
        }
    }
    if !lead.is_empty() {
        event.insert("lead".into(), Value::Object(lead));
    }
    if !revenue.is_empty() {
        event.insert("revenue".into(), Value::Object(revenue));
    }
    json!(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_events_numbered_from_two() {
        let csv = "type,email,revenue,currency,timestamp\nPURCHASE,a@b.co,12.50,EUR,1700000000000\nPAGE_VIEW,,,,\nBAD,x\n";
        let rows = parse(csv.as_bytes()).unwrap_or_default();
        assert_eq!(
            rows.iter().map(|r| r.row).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(
            rows[0].item.as_ref().ok(),
            Some(
                &json!({"type": "PURCHASE", "lead": {"email": "a@b.co"}, "revenue": {"amount": "12.50", "currency": "EUR"}, "timestamp": 1_700_000_000_000_i64})
            )
        );
        assert_eq!(
            rows[1].item.as_ref().ok(),
            Some(&json!({"type": "PAGE_VIEW"}))
        );
        assert!(rows[2].item.is_err());
    }

    #[test]
    fn unknown_or_repeated_columns_reject_the_file() {
        assert_eq!(
            parse(b"type,colour\nA,red\n")
                .map(|_| ())
                .map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(
            parse(b"type,type\nA,A\n")
                .map(|_| ())
                .map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(
            parse(b"email\na@b.co\n")
                .map(|_| ())
                .map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(
            parse(b"type\n").map(|_| ()).map_err(|e| e.status()),
            Err(400)
        );
    }

    #[test]
    fn a_header_longer_than_the_known_columns_is_one_error() {
        let header = vec!["x"; 100_000].join(",");
        let error = parse(format!("{header}\nA\n").as_bytes()).err();
        let details = match &error {
            Some(ApiError::Validation { details, .. }) => details.clone(),
            _ => Vec::new(),
        };
        assert_eq!(details.len(), 1, "{error:?}");
        assert!(details[0].message.contains("100000 columns"), "{details:?}");
        // Every known column once is still fine.
        let all = format!(
            "{}\n{}\n",
            COLUMNS.join(","),
            vec![""; COLUMNS.len()].join(",")
        );
        assert!(parse(all.as_bytes()).is_ok());
    }

    #[test]
    fn row_limit_is_enforced() {
        let csv = format!("type\n{}", "A\n".repeat(MAX_CSV_ROWS + 1));
        assert_eq!(
            parse(csv.as_bytes()).map(|_| ()).map_err(|e| e.status()),
            Err(413)
        );
    }
}
