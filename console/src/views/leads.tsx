import { useCallback, useRef, useState } from 'preact/hooks';
import { api, query } from '../api';
import { href, useSession } from '../app';
import { ErrorBox, Loaded, Section, Table, Time } from '../components';
import { useInterval, useLoad } from '../data';
import { type LiveMessage, useLive } from '../live';

export interface LeadRow {
  /** Absent in search results. */
  rank?: number;
  leadId: string;
  score: number;
  stage?: string | null;
  email?: string | null;
  name?: string | null;
  company?: string | null;
  lastActivityAt?: string | null;
  eventCount: number;
}

interface Scoring {
  stages: { name: string; minScore: number }[];
  version: number;
}

const PAGE_SIZE = 20;
/** How often the board is read again when no live connection is up. */
const POLL_MS = 3000;
/** With a live connection, still read again now and then: pushes are best effort. */
const LIVE_REFRESH_MS = 30_000;

export function Leads() {
  const { keys } = useSession();
  if (!keys.read) return <p class="empty">Sign in with a read key to see leads.</p>;
  return (
    <>
      <div class="page-head">
        <h1>Leads</h1>
        <Search readKey={keys.read} />
      </div>
      <Leaderboard readKey={keys.read} />
    </>
  );
}

/** Finds a lead by id, or every lead with an email (whatever their ids). */
function Search({ readKey }: { readKey: string }) {
  const [text, setText] = useState('');
  const [found, setFound] = useState<LeadRow[] | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const go = async (e: Event) => {
    e.preventDefault();
    const value = text.trim();
    setFound(null);
    setError(null);
    if (!value) return;
    if (!value.includes('@') || value.startsWith('email:')) {
      location.hash = href('leads', value);
      return;
    }
    try {
      const body = await api<{ leads: LeadRow[] }>(`/v1/leads${query({ email: value })}`, readKey);
      if (body.leads.length === 1) location.hash = href('leads', body.leads[0].leadId);
      else setFound(body.leads);
    } catch (err) {
      setError(err instanceof Error ? err : new Error(String(err)));
    }
  };
  return (
    <div>
      <form class="search" role="search" onSubmit={go}>
        <label for="lead-search">Lead id or email</label>
        <input id="lead-search" type="search" value={text} onInput={(e) => setText(e.currentTarget.value)} maxLength={256} />
        <button type="submit">Find</button>
      </form>
      {error ? <ErrorBox error={error} /> : null}
      {found && found.length === 0 ? <p role="status">No lead has this email.</p> : null}
      {found && found.length > 1 ? (
        <ul class="found" aria-label="Leads with this email">
          {found.map((l) => (
            <li key={l.leadId}>
              <a href={href('leads', l.leadId)}>{l.name || l.leadId}</a> ({l.score}, {l.leadId})
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

function Leaderboard({ readKey }: { readKey: string }) {
  const [stage, setStage] = useState('');
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  const [scoring] = useLoad((signal) => api<Scoring>('/v1/scoring', readKey, { signal }), []);
  const [load, reload] = useLoad(
    (signal) => api<{ leads: LeadRow[]; nextCursor?: string }>(`/v1/leads${query({ limit: PAGE_SIZE, stage, cursor })}`, readKey, { signal }),
    [stage, cursor],
  );
  const [flash, setFlash] = useState<Set<string>>(new Set());
  const pending = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const onLive = useCallback(
    (message: LiveMessage) => {
      setFlash(new Set(message.leads.map((l) => l.leadId)));
      // Several messages in a burst make one read of the board.
      clearTimeout(pending.current);
      pending.current = setTimeout(reload, 150);
    },
    [reload],
  );
  const mode = useLive(onLive);
  useInterval(reload, mode === 'live' ? LIVE_REFRESH_MS : POLL_MS);
  const stages = scoring.state === 'ready' ? scoring.data.stages : [];
  return (
    <Section
      title="Leaderboard"
      actions={
        <label class="inline">
          Stage{' '}
          <select value={stage} onChange={(e) => { setStage(e.currentTarget.value); setCursors([]); }}>
            <option value="">All stages</option>
            {stages.map((s) => (
              <option key={s.name} value={s.name}>
                {s.name} ({s.minScore}+)
              </option>
            ))}
          </select>
        </label>
      }
    >
      <Loaded load={load} retry={reload} isEmpty={(d) => d.leads.length === 0} empty={stage ? `No lead is at ${stage} now.` : 'No lead has been scored yet.'}>
        {(data) => (
          <>
            <Table caption="Leads by score" rows={data.leads} rowKey={(r) => r.leadId} columns={[
              { label: 'Rank', cell: (r) => r.rank, numeric: true },
              { label: 'Lead', cell: (r) => <a href={href('leads', r.leadId)} class={flash.has(r.leadId) ? 'flash' : undefined}>{r.name || r.email || r.leadId}</a> },
              { label: 'Score', cell: (r) => <span data-lead-score={r.leadId}>{r.score}</span>, numeric: true },
              { label: 'Stage', cell: (r) => r.stage ?? <span class="muted">—</span> },
              { label: 'Company', cell: (r) => r.company ?? <span class="muted">—</span> },
              { label: 'Events', cell: (r) => r.eventCount, numeric: true },
              { label: 'Last activity', cell: (r) => <Time iso={r.lastActivityAt} /> },
            ]} />
            <div class="pager">
              <button type="button" disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>
                Previous page
              </button>
              <button type="button" disabled={!data.nextCursor} onClick={() => data.nextCursor && setCursors([...cursors, data.nextCursor])}>
                Next page
              </button>
            </div>
          </>
        )}
      </Loaded>
    </Section>
  );
}
