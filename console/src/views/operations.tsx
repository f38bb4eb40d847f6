import { useState } from 'preact/hooks';
import { api, path, query } from '../api';
import { NeedsKey } from '../app';
import { ErrorBox, Loaded, Section, Table, Time } from '../components';
import { useInterval, useLoad } from '../data';

interface AdminMetrics {
  summary: Record<string, number>;
  queues: { workDepth: number; deadLetterDepth: number };
  processingStats: { averageProcessingTimeSeconds?: number | null; p95ProcessingTimeSeconds?: number | null; totalProcessed: number };
  scoring?: { failedLeads: number };
}

interface FailedEvent {
  eventId: string;
  type: string;
  status: string;
  failureReason?: string | null;
  attempts: number;
  failedAt?: string | null;
}

interface StoredEvent {
  eventId: string;
  status: string;
  attempts: number;
  receivedAt?: string | null;
  processedAt?: string | null;
  failureReason?: string | null;
  correlationId?: string | null;
  history: { status: string; at: string; attempts?: number; reason?: string; correlationId?: string }[];
  historyOmitted: number;
}

interface RedriveReport {
  moved: number;
  remaining: number;
  failed: number;
  dryRun: boolean;
}

export function Operations() {
  return (
    <>
      <div class="page-head">
        <h1>Operations</h1>
      </div>
      <NeedsKey need="admin" purpose="Admin key (operations change the pipeline)">
        {(key) => <OperationsFor adminKey={key} />}
      </NeedsKey>
    </>
  );
}

function OperationsFor({ adminKey }: { adminKey: string }) {
  const [metrics, reloadMetrics] = useLoad((signal) => api<AdminMetrics>('/v1/admin/metrics', adminKey, { signal }), []);
  useInterval(reloadMetrics, 10_000);
  const [selected, setSelected] = useState<string | null>(null);
  const [failedVersion, setFailedVersion] = useState(0);
  const changed = () => {
    reloadMetrics();
    setFailedVersion((v) => v + 1);
  };
  return (
    <div class="grid">
      <Section title="Queues and counters">
        <Loaded load={metrics} retry={reloadMetrics}>
          {(m) => (
            <dl class="counters">
              <div><dt>Work queue</dt><dd data-testid="work-depth">{m.queues.workDepth}</dd></div>
              <div><dt>Dead-letter queue</dt><dd data-testid="dlq-depth">{m.queues.deadLetterDepth}</dd></div>
              {Object.entries(m.summary).map(([name, value]) => (
                <div key={name}><dt>{name}</dt><dd>{value.toLocaleString()}</dd></div>
              ))}
              <div><dt>p95 processing</dt><dd>{m.processingStats.p95ProcessingTimeSeconds == null ? '—' : `${m.processingStats.p95ProcessingTimeSeconds.toFixed(2)} s`}</dd></div>
              {m.scoring ? <div><dt>Leads not written</dt><dd>{m.scoring.failedLeads}</dd></div> : null}
            </dl>
          )}
        </Loaded>
      </Section>
      <Redrive adminKey={adminKey} onDone={changed} />
      <FailedList adminKey={adminKey} version={failedVersion} onSelect={setSelected} />
      {selected ? <EventDetail adminKey={adminKey} eventId={selected} onReplayed={changed} onClose={() => setSelected(null)} /> : null}
      <Recompute adminKey={adminKey} />
    </div>
  );
}

function FailedList({ adminKey, version, onSelect }: { adminKey: string; version: number; onSelect: (id: string) => void }) {
  const [status, setStatus] = useState('');
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  const [load, reload] = useLoad(
    (signal) => api<{ events: FailedEvent[]; nextCursor?: string }>(`/v1/admin/events/failed${query({ limit: 20, status, cursor })}`, adminKey, { signal }),
    [status, cursor, version],
  );
  return (
    <Section
      title="Failed events"
      actions={
        <label class="inline">
          Status{' '}
          <select value={status} onChange={(e) => { setStatus(e.currentTarget.value); setCursors([]); }}>
            <option value="">All</option>
            <option>DEAD_LETTER</option>
            <option>FAILED</option>
            <option>REJECTED</option>
          </select>
        </label>
      }
    >
      <Loaded load={load} retry={reload} isEmpty={(d) => d.events.length === 0} empty="No failed events.">
        {(data) => (
          <>
            <Table caption="Failed events, dead-lettered first" rows={data.events} rowKey={(e) => e.eventId} columns={[
              { label: 'Event', cell: (e) => <button type="button" class="link" onClick={() => onSelect(e.eventId)}>{e.eventId}</button> },
              { label: 'Type', cell: (e) => e.type },
              { label: 'Status', cell: (e) => <span class="bad">{e.status}</span> },
              { label: 'Reason', cell: (e) => e.failureReason ?? '—' },
              { label: 'Attempts', cell: (e) => e.attempts, numeric: true },
              { label: 'Failed', cell: (e) => <Time iso={e.failedAt} /> },
            ]} />
            <div class="pager">
              <button type="button" disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>Previous page</button>
              <button type="button" disabled={!data.nextCursor} onClick={() => data.nextCursor && setCursors([...cursors, data.nextCursor])}>Next page</button>
            </div>
          </>
        )}
      </Loaded>
    </Section>
  );
}

function EventDetail({ adminKey, eventId, onReplayed, onClose }: { adminKey: string; eventId: string; onReplayed: () => void; onClose: () => void }) {
  const [load, reload] = useLoad((signal) => api<StoredEvent>(path('/v1/admin/events', eventId), adminKey, { signal }), [eventId]);
  const [outcome, setOutcome] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const replay = async () => {
    setError(null);
    setOutcome(null);
    try {
      await api(`${path('/v1/admin/events', eventId)}/replay`, adminKey, { method: 'POST' });
      setOutcome(`${eventId} was queued again.`);
      onReplayed();
      reload();
    } catch (e) {
      setError(e instanceof Error ? e : new Error(String(e)));
    }
  };
  return (
    <Section title={`Event ${eventId}`} actions={<button type="button" onClick={onClose}>Close</button>}>
      <Loaded load={load} retry={reload}>
        {(e) => (
          <>
            <dl class="facts">
              <div><dt>Status</dt><dd data-testid="event-status">{e.status}</dd></div>
              <div><dt>Attempts</dt><dd>{e.attempts}</dd></div>
              <div><dt>Received</dt><dd><Time iso={e.receivedAt} /></dd></div>
              <div><dt>Reason</dt><dd>{e.failureReason ?? '—'}</dd></div>
              <div><dt>Correlation id</dt><dd><code>{e.correlationId ?? '—'}</code></dd></div>
            </dl>
            <Table caption="Status history" rows={e.history} rowKey={(_, i) => `${i}`} columns={[
              { label: 'When', cell: (h) => <Time iso={h.at} /> },
              { label: 'Status', cell: (h) => h.status },
              { label: 'Attempts', cell: (h) => h.attempts ?? '', numeric: true },
              { label: 'Reason', cell: (h) => h.reason ?? '' },
            ]} />
            {e.historyOmitted > 0 ? <p class="muted">{e.historyOmitted} earlier changes are not shown.</p> : null}
            <button type="button" disabled={e.status === 'PROCESSED'} onClick={replay}>
              Replay {e.eventId}
            </button>
          </>
        )}
      </Loaded>
      {outcome ? <p role="status">{outcome}</p> : null}
      {error ? <ErrorBox error={error} /> : null}
    </Section>
  );
}

function Redrive({ adminKey, onDone }: { adminKey: string; onDone: () => void }) {
  const [max, setMax] = useState('1000');
  const [dry, setDry] = useState<RedriveReport | null>(null);
  const [done, setDone] = useState<RedriveReport | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  // A dry run counts the queue; a run moves at most the limit.
  const wouldMove = dry ? Math.min(dry.remaining, Number(max) || 0) : 0;
  const run = async (dryRun: boolean) => {
    setBusy(true);
    setError(null);
    try {
      const report = await api<RedriveReport>('/v1/admin/redrive', adminKey, { method: 'POST', json: { maxMessages: Number(max), dryRun } });
      if (dryRun) {
        setDry(report);
        setDone(null);
      } else {
        setDone(report);
        setDry(null);
        onDone();
      }
    } catch (e) {
      setError(e instanceof Error ? e : new Error(String(e)));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Section title="Redrive the dead-letter queue">
      <p>Moves dead-lettered messages back to the work queue. Try it dry first: it counts what would move and moves nothing.</p>
      <div class="row">
        <label>
          At most <input type="number" min={1} max={10000} value={max} onInput={(e) => { setMax(e.currentTarget.value); setDry(null); }} /> messages
        </label>
        <button type="button" disabled={busy} onClick={() => run(true)}>Dry run</button>
        <button type="button" disabled={busy || wouldMove === 0} onClick={() => run(false)}>
          {dry ? `Redrive ${wouldMove} messages` : 'Redrive (after a dry run)'}
        </button>
      </div>
      {dry ? (
        <p role="status" data-testid="redrive-dry">
          Dry run: {dry.remaining} dead-lettered, {wouldMove} would move. Nothing was moved.
        </p>
      ) : null}
      {done ? <p role="status" data-testid="redrive-done">Moved {done.moved}; {done.remaining} remain{done.failed ? `; ${done.failed} failed` : ''}.</p> : null}
      {error ? <ErrorBox error={error} /> : null}
    </Section>
  );
}

function Recompute({ adminKey }: { adminKey: string }) {
  const [leadId, setLeadId] = useState('');
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const run = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setResult(null);
    if (!leadId && !confirm('Recompute every lead under the current rules? It runs in the background.')) return;
    try {
      const body = await api<{ leads: number }>('/v1/admin/leads/recompute', adminKey, { method: 'POST', json: leadId ? { leadId } : {} });
      setResult(leadId ? `${leadId} recomputed.` : `Recomputing ${body.leads} leads in the background.`);
    } catch (err) {
      setError(err instanceof Error ? err : new Error(String(err)));
    }
  };
  return (
    <Section title="Recompute scores">
      <form class="row" onSubmit={run}>
        <label>
          Lead id (empty: every lead) <input value={leadId} maxLength={128} onInput={(e) => setLeadId(e.currentTarget.value.trim())} />
        </label>
        <button type="submit">Recompute</button>
      </form>
      {result ? <p role="status">{result}</p> : null}
      {error ? <ErrorBox error={error} /> : null}
    </Section>
  );
}
