import { useState } from 'preact/hooks';
import { call, errorOf, type FieldDetail } from '../api';
import { NeedsKey } from '../app';
import { ErrorBox, Section, Table } from '../components';

interface RowResult {
  row: number;
  status: 'queued' | 'rejected';
  eventId?: string;
  error?: { code: string; message: string; details?: FieldDetail[] };
}

interface UploadResult {
  accepted: number;
  rejected: number;
  results: RowResult[];
}

/** The API's limits for one CSV upload. */
const MAX_BYTES = 5 * 1024 * 1024;

export function Upload() {
  return (
    <>
      <div class="page-head">
        <h1>Upload events</h1>
      </div>
      <NeedsKey need="ingest" purpose="Ingest key (uploads post events)">
        {(key) => <UploadForm ingestKey={key} />}
      </NeedsKey>
    </>
  );
}

function UploadForm({ ingestKey }: { ingestKey: string }) {
  const [file, setFile] = useState<File | null>(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<UploadResult | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!file) return;
    setResult(null);
    setError(null);
    if (file.size > MAX_BYTES) {
      setError(new Error(`The file is ${(file.size / 1048576).toFixed(1)} MiB; one upload takes at most 5 MiB (10,000 rows). Split it.`));
      return;
    }
    setBusy(true);
    try {
      const response = await call('/v1/events/csv', ingestKey, { method: 'POST', text: await file.text(), contentType: 'text/csv' });
      if (response.status === 202 || response.status === 207) setResult((await response.json()) as UploadResult);
      else throw await errorOf(response);
    } catch (err) {
      setError(err instanceof Error ? err : new Error(String(err)));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <Section title="CSV file">
        <form onSubmit={submit} class="upload">
          <p>
            One event per row, with a header row. Columns: <code>eventId, type, timestamp, source, leadId, email, name, company, userId, campaignId, regionId, funnelStage, revenue, currency</code>{' '}
            (any order; only <code>type</code> is required). <a href="/assets/sample.csv" download="tally-sample.csv">Download a sample file</a>.
          </p>
          <label for="csv-file">File</label>
          <input id="csv-file" type="file" accept=".csv,text/csv" onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
          <button type="submit" disabled={!file || busy}>
            {busy ? 'Uploading…' : 'Upload'}
          </button>
        </form>
        {error ? <ErrorBox error={error} /> : null}
      </Section>
      {result ? (
        <Section title="Result">
          <p role="status" class="total">
            <strong>{result.accepted}</strong> accepted, <strong>{result.rejected}</strong> rejected.
          </p>
          <Table caption="Every row's result (rows are numbered from 2, after the header)" rows={result.results} rowKey={(r) => String(r.row)} columns={[
            { label: 'Row', cell: (r) => r.row, numeric: true },
            { label: 'Result', cell: (r) => <span class={r.status === 'rejected' ? 'bad' : 'good'} data-row-status={r.row}>{r.status}</span> },
            { label: 'Event id or error', cell: (r) => (r.status === 'queued' ? <code>{r.eventId}</code> : <RowError error={r.error} />) },
          ]} />
        </Section>
      ) : null}
    </>
  );
}

function RowError({ error }: { error?: RowResult['error'] }) {
  if (!error) return null;
  return (
    <span class="row-error">
      {error.message}
      {error.details?.map((d) => (
        <span key={d.path} class="detail">
          {' '}
          <code>{d.path}</code> {d.message}
        </span>
      ))}
    </span>
  );
}
