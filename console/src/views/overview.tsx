import { useState } from 'preact/hooks';
import { api, call, errorOf, query } from '../api';
import { useSession } from '../app';
import { ChartView } from '../chart';
import { Loaded, Money, Section, Table } from '../components';
import { useInterval, useLoad } from '../data';
import { presetRange, type Range, RangePicker } from '../range';
import { formatAxis } from '../time';

interface Bucket {
  windowStart: string;
  type: string;
  count: number;
  revenue: Record<string, string>;
}

interface TopResult {
  rank: number;
  value: string;
  count: number;
  revenue: Record<string, string>;
}

export function Overview() {
  const { keys } = useSession();
  const [range, setRange] = useState<Range>(() => presetRange('24h'));
  const key = keys.read;
  return (
    <>
      <div class="page-head">
        <h1>Overview</h1>
        {key ? <RangePicker value={range} onChange={setRange} idPrefix="overview" initial="24h" /> : null}
      </div>
      {key ? (
        <div class="grid">
          <EventsByHour range={range} readKey={key} />
          <Counters readKey={key} />
          <Top range={range} readKey={key} dimension="campaignId" title="Top campaigns" />
          <Top range={range} readKey={key} dimension="regionId" title="Top regions" />
          <Revenue range={range} readKey={key} />
        </div>
      ) : (
        <p class="empty">This key may only post events: use Upload, or sign in with a read key to see the overview.</p>
      )}
    </>
  );
}

function EventsByHour({ range, readKey }: { range: Range; readKey: string }) {
  const window = range.byDay ? 'day' : 'hour';
  const [load, reload] = useLoad(
    (signal) => api<{ buckets: Bucket[] }>(`/v1/aggregations${query({ window, start: range.start, end: range.end })}`, readKey, { signal }),
    [range.start, range.end, window],
  );
  return (
    <Section title={range.byDay ? 'Events per day by type' : 'Events per hour by type'}>
      <Loaded load={load} retry={reload} isEmpty={(d) => d.buckets.length === 0} empty="No events in this range.">
        {(data) => {
          const windows = [...new Set(data.buckets.map((b) => b.windowStart))].sort();
          const types = [...new Set(data.buckets.map((b) => b.type))].sort();
          const count = new Map(data.buckets.map((b) => [`${b.windowStart} ${b.type}`, b.count]));
          const series = types.map((type) => ({ label: type, values: windows.map((w) => count.get(`${w} ${type}`) ?? 0) }));
          const totals = types.map((type, i) => ({ type, count: series[i].values.reduce((a, b) => a + b, 0) }));
          return (
            <>
              <ChartView kind="stacked" label="Events over time, stacked by type" labels={windows.map((w) => formatAxis(w, range.byDay))} series={series} />
              <Table caption="Events by type in this range" rows={totals} rowKey={(r) => r.type} columns={[
                { label: 'Type', cell: (r) => r.type },
                { label: 'Events', cell: (r) => r.count.toLocaleString(), numeric: true },
              ]} />
            </>
          );
        }}
      </Loaded>
    </Section>
  );
}

function Top({ range, readKey, dimension, title }: { range: Range; readKey: string; dimension: string; title: string }) {
  const [load, reload] = useLoad(
    (signal) => api<{ results: TopResult[] }>(`/v1/aggregations/top${query({ metric: 'count', dimension, start: range.start, end: range.end, limit: 5 })}`, readKey, { signal }),
    [range.start, range.end, dimension],
  );
  return (
    <Section title={title}>
      <Loaded load={load} retry={reload} isEmpty={(d) => d.results.length === 0} empty="None in this range.">
        {(data) => (
          <Table caption={`${title} by events`} rows={data.results} rowKey={(r) => r.value} columns={[
            { label: '#', cell: (r) => r.rank, numeric: true },
            { label: dimension === 'campaignId' ? 'Campaign' : 'Region', cell: (r) => r.value },
            { label: 'Events', cell: (r) => r.count.toLocaleString(), numeric: true },
            { label: 'Revenue', cell: (r) => <Money amounts={r.revenue} /> },
          ]} />
        )}
      </Loaded>
    </Section>
  );
}

function Revenue({ range, readKey }: { range: Range; readKey: string }) {
  const [load, reload] = useLoad(
    (signal) => api<{ total: Record<string, string> }>(`/v1/reports/revenue${query({ from: range.start, to: range.end })}`, readKey, { signal }),
    [range.start, range.end],
  );
  return (
    <Section title="Revenue by currency">
      <Loaded load={load} retry={reload} isEmpty={(d) => Object.keys(d.total).length === 0} empty="No revenue in this range.">
        {(data) => (
          <Table caption="Revenue by currency" rows={Object.entries(data.total)} rowKey={([c]) => c} columns={[
            { label: 'Currency', cell: ([c]) => c },
            { label: 'Revenue', cell: ([, amount]) => amount, numeric: true },
          ]} />
        )}
      </Loaded>
    </Section>
  );
}

/** Sums of each sample of a Prometheus text page, by metric name. */
export function parseMetrics(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) sums.set(match[1], (sums.get(match[1]) ?? 0) + value);
  }
  return sums;
}

const COUNTERS: [string, string][] = [
  ['tally_events_accepted_total', 'Accepted'],
  ['tally_events_processed_total', 'Processed'],
  ['tally_events_duplicate_total', 'Duplicates'],
  ['tally_events_rejected_total', 'Rejected'],
  ['tally_events_failed_total', 'Failed'],
  ['tally_events_dead_lettered_total', 'Dead-lettered'],
  ['tally_queue_depth', 'Queued now'],
];

function Counters({ readKey }: { readKey: string }) {
  const [load, reload] = useLoad(async (signal) => {
    const response = await call('/metrics', readKey, { signal });
    if (!response.ok) throw await errorOf(response);
    return parseMetrics(await response.text());
  }, []);
  // Counters poll: they change with every event and nobody needs them sooner.
  useInterval(reload, 10_000);
  return (
    <Section title="Pipeline">
      <Loaded load={load} retry={reload}>
        {(metrics) => (
          <dl class="counters">
            {COUNTERS.map(([name, label]) => (
              <div key={name}>
                <dt>{label}</dt>
                <dd data-metric={name}>{(metrics.get(name) ?? 0).toLocaleString()}</dd>
              </div>
            ))}
          </dl>
        )}
      </Loaded>
    </Section>
  );
}
