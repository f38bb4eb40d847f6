import { useCallback } from 'preact/hooks';
import { api, isNotFound, path, query } from '../api';
import { href, useSession } from '../app';
import { ChartView } from '../chart';
import { ErrorBox, Loaded, Section, Table, Time } from '../components';
import { useLoad } from '../data';
import { type LiveMessage, useLive } from '../live';
import { formatAxis } from '../time';

interface Lead {
  leadId: string;
  score: number;
  stage?: string | null;
  profile: { email?: string | null; name?: string | null; company?: string | null };
  lastActivityAt?: string | null;
  eventCount: number;
  eventCounts: Record<string, number>;
}

interface TimelineEvent {
  eventId: string;
  type: string;
  timestamp: string;
  points: number;
  removed?: { points: number; by: string };
  score: number;
  stage?: string | null;
}

interface Timeline {
  events: TimelineEvent[];
  decay?: { asOf: string; points: number };
  score: number;
  nextCursor?: string;
}

/** Timeline pages read for the chart and table at most (100 events each). */
const MAX_TIMELINE_PAGES = 10;

export function LeadPage({ leadId }: { leadId: string }) {
  const { keys } = useSession();
  const readKey = keys.read ?? '';
  const [lead, reloadLead] = useLoad((signal) => api<Lead>(path('/v1/leads', leadId), readKey, { signal }), [leadId]);
  const [timeline, reloadTimeline] = useLoad(async (signal) => {
    const events: TimelineEvent[] = [];
    let page: Timeline | undefined;
    let cursor: string | undefined;
    for (let i = 0; i < MAX_TIMELINE_PAGES; i++) {
      page = await api<Timeline>(`${path('/v1/leads', leadId)}/timeline${query({ limit: 100, cursor })}`, readKey, { signal });
      events.push(...page.events);
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    return { events, decay: page?.decay, score: page?.score ?? 0, more: Boolean(cursor) };
  }, [leadId]);
  const onLive = useCallback(
    (message: LiveMessage) => {
      if (message.truncated || message.leads.some((l) => l.leadId === leadId)) {
        reloadLead();
        reloadTimeline();
      }
    },
    [leadId, reloadLead, reloadTimeline],
  );
  useLive(onLive);
  if (lead.state === 'error' && isNotFound(lead.error)) {
    return (
      <div class="card">
        <h1>No such lead</h1>
        <p>
          No lead has the id <code>{leadId}</code>. <a href={href('leads')}>Back to the leaderboard</a>.
        </p>
      </div>
    );
  }
  return (
    <>
      <p>
        <a href={href('leads')}>← Leaderboard</a>
      </p>
      <Loaded load={lead} retry={reloadLead}>
        {(l) => (
          <div class="page-head">
            <h1>{l.profile.name || l.profile.email || l.leadId}</h1>
            <dl class="facts">
              <div><dt>Score</dt><dd data-testid="lead-score">{l.score}</dd></div>
              <div><dt>Stage</dt><dd>{l.stage ?? '—'}</dd></div>
              <div><dt>Lead id</dt><dd><code>{l.leadId}</code></dd></div>
              <div><dt>Email</dt><dd>{l.profile.email ?? '—'}</dd></div>
              <div><dt>Company</dt><dd>{l.profile.company ?? '—'}</dd></div>
              <div><dt>Events</dt><dd>{l.eventCount}</dd></div>
              <div><dt>Last activity</dt><dd><Time iso={l.lastActivityAt} /></dd></div>
            </dl>
          </div>
        )}
      </Loaded>
      <Section title="Score over time">
        <Loaded load={timeline} retry={reloadTimeline} isEmpty={(t) => t.events.length === 0} empty="This lead has no events yet.">
          {(t) => (
            <>
              <ChartView kind="line" label="The lead's score after each event" labels={t.events.map((e) => formatAxis(e.timestamp, false))} series={[{ label: 'Score', values: t.events.map((e) => e.score) }]} />
              {t.decay && t.decay.points !== 0 ? (
                <p>
                  Decay as of <Time iso={t.decay.asOf} />: {t.decay.points} points, so the score is now {t.score}.
                </p>
              ) : null}
              {t.more ? <p class="muted">Showing the first {t.events.length} events.</p> : null}
            </>
          )}
        </Loaded>
      </Section>
      <Section title="Explained events">
        {timeline.state === 'error' && timeline.data ? <ErrorBox error={timeline.error} /> : null}
        <Loaded load={timeline} retry={reloadTimeline} isEmpty={(t) => t.events.length === 0} empty="No events.">
          {(t) => (
            <Table caption="Every event with the points it gave, in scoring order" rows={t.events} rowKey={(e) => e.eventId} columns={[
              { label: 'Time', cell: (e) => <Time iso={e.timestamp} /> },
              { label: 'Type', cell: (e) => e.type },
              { label: 'Points', cell: (e) => signed(e.points), numeric: true },
              { label: 'Removed', cell: (e) => (e.removed ? `${signed(-e.removed.points)} (${e.removed.by})` : '') },
              { label: 'Score', cell: (e) => e.score, numeric: true },
              { label: 'Stage', cell: (e) => e.stage ?? '—' },
              { label: 'Event id', cell: (e) => <code>{e.eventId}</code> },
            ]} />
          )}
        </Loaded>
      </Section>
    </>
  );
}

function signed(n: number): string {
  return n > 0 ? `+${n}` : String(n);
}
