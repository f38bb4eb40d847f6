import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { api, query } from '../api';
import { href, useSession } from '../app';
import { ChartView } from '../chart';
import { Loaded, Money, Section, Table } from '../components';
import { useLoad } from '../data';
import { presetRange, type Range, RangePicker } from '../range';

const TABS = [
  { id: 'events', label: 'Events' },
  { id: 'revenue', label: 'Revenue' },
  { id: 'demographics', label: 'Demographics' },
  { id: 'companies', label: 'Companies' },
] as const;

export function Reports({ tab }: { tab?: string }) {
  const { keys } = useSession();
  const [range, setRange] = useState<Range>(() => presetRange('7d'));
  const current = TABS.find((t) => t.id === tab)?.id ?? 'events';
  if (!keys.read) return <p class="empty">Sign in with a read key to see reports.</p>;
  const readKey = keys.read;
  return (
    <>
      <div class="page-head">
        <h1>Reports</h1>
        <RangePicker value={range} onChange={setRange} idPrefix="reports" initial="7d" />
      </div>
      <nav class="tabs" aria-label="Reports">
        {TABS.map((t) => (
          <a key={t.id} href={href('reports', t.id)} aria-current={current === t.id ? 'page' : undefined}>
            {t.label}
          </a>
        ))}
      </nav>
      {current === 'events' ? <EventsReport range={range} readKey={readKey} /> : null}
      {current === 'revenue' ? <RevenueReport range={range} readKey={readKey} /> : null}
      {current === 'demographics' ? <DemographicsReport range={range} readKey={readKey} /> : null}
      {current === 'companies' ? <CompaniesReport range={range} readKey={readKey} /> : null}
    </>
  );
}

const FILTER_LABELS: Record<string, string> = {
  source: 'Source',
  funnelStage: 'Funnel stage',
  type: 'Event type',
  campaignId: 'Campaign',
};

function Filters({ names, onApply }: { names: string[]; onApply: (values: Record<string, string>) => void }) {
  const [values, setValues] = useState<Record<string, string>>({});
  return (
    <form class="filters row" onSubmit={(e) => { e.preventDefault(); onApply(values); }}>
      {names.map((name) => (
        <span key={name} class="field">
          <label for={`filter-${name}`}>{FILTER_LABELS[name] ?? name}</label>{' '}
          {name === 'funnelStage' ? (
            <select id={`filter-${name}`} value={values[name] ?? ''} onChange={(e) => setValues({ ...values, [name]: e.currentTarget.value })}>
              <option value="">any</option>
              <option>top</option>
              <option>middle</option>
              <option>bottom</option>
            </select>
          ) : (
            <input id={`filter-${name}`} value={values[name] ?? ''} maxLength={128} onInput={(e) => setValues({ ...values, [name]: e.currentTarget.value.trim() })} />
          )}
        </span>
      ))}
      <button type="submit">Filter</button>
    </form>
  );
}

/** A chart of one count map, then its numbers. */
function Counts({ title, counts, unit = 'Events' }: { title: string; counts: Record<string, number>; unit?: string }) {
  const entries = Object.entries(counts);
  if (entries.length === 0) return <p class="empty">No {title.toLowerCase()} in this range.</p>;
  return (
    <div>
      <h3>{title}</h3>
      <ChartView kind="bar" label={`${unit} by ${title.toLowerCase()}`} labels={entries.map(([k]) => k)} series={[{ label: unit, values: entries.map(([, v]) => v) }]} height={200} />
      <Table caption={`${unit} by ${title.toLowerCase()}`} rows={entries} rowKey={([k]) => k} columns={[
        { label: title, cell: ([k]) => k },
        { label: unit, cell: ([, v]) => v.toLocaleString(), numeric: true },
      ]} />
    </div>
  );
}

function Report<T>({ title, route, params, filters, readKey, children, isEmpty }: { title: string; route: string; params: Record<string, string>; filters: string[]; readKey: string; children: (data: T) => ComponentChildren; isEmpty: (data: T) => boolean }) {
  const [filter, setFilter] = useState<Record<string, string>>({});
  const url = `${route}${query({ ...params, ...filter })}`;
  const [load, reload] = useLoad((signal) => api<T>(url, readKey, { signal }), [url]);
  return (
    <Section title={title}>
      {filters.length ? <Filters names={filters} onApply={setFilter} /> : null}
      <Loaded load={load} retry={reload} isEmpty={isEmpty} empty="No events match in this range.">
        {children}
      </Loaded>
    </Section>
  );
}

interface EventsBody {
  total: number;
  bySource: Record<string, number>;
  byFunnelStage: Record<string, number>;
  byType: Record<string, number>;
}

function EventsReport({ range, readKey }: { range: Range; readKey: string }) {
  return (
    <Report<EventsBody> title="Events" route="/v1/reports/events" params={{ from: range.start, to: range.end }} filters={['source', 'funnelStage', 'type']} readKey={readKey} isEmpty={(d) => d.total === 0}>
      {(d) => (
        <div class="grid">
          <p class="total">
            <strong>{d.total.toLocaleString()}</strong> events
          </p>
          <Counts title="Type" counts={d.byType} />
          <Counts title="Source" counts={d.bySource} />
          <Counts title="Funnel stage" counts={d.byFunnelStage} />
        </div>
      )}
    </Report>
  );
}

interface RevenueBody {
  total: Record<string, string>;
  purchases: number;
  bySource: Record<string, Record<string, string>>;
  byCampaign: { campaignId: string; revenue: Record<string, string>; purchases: number }[];
}

function RevenueReport({ range, readKey }: { range: Range; readKey: string }) {
  return (
    <Report<RevenueBody> title="Revenue" route="/v1/reports/revenue" params={{ from: range.start, to: range.end }} filters={['source', 'campaignId']} readKey={readKey} isEmpty={(d) => Object.keys(d.total).length === 0}>
      {(d) => {
        const currencies = Object.keys(d.total).sort();
        const top = d.byCampaign.slice(0, 10);
        return (
          <div class="grid">
            <p class="total">
              <strong><Money amounts={d.total} /></strong> from {d.purchases.toLocaleString()} revenue events
            </p>
            <div>
              <h3>Top campaigns</h3>
              <ChartView kind="bar" label="Revenue by campaign" labels={top.map((c) => c.campaignId)} series={currencies.map((cur) => ({ label: cur, values: top.map((c) => Number(c.revenue[cur] ?? 0)) }))} height={220} />
              <Table caption="Revenue by campaign" rows={d.byCampaign} rowKey={(c) => c.campaignId} columns={[
                { label: 'Campaign', cell: (c) => c.campaignId },
                { label: 'Revenue', cell: (c) => <Money amounts={c.revenue} /> },
                { label: 'Revenue events', cell: (c) => c.purchases, numeric: true },
              ]} />
            </div>
            <Table caption="Revenue by source" rows={Object.entries(d.bySource)} rowKey={([s]) => s} columns={[
              { label: 'Source', cell: ([s]) => s },
              { label: 'Revenue', cell: ([, r]) => <Money amounts={r} /> },
            ]} />
          </div>
        );
      }}
    </Report>
  );
}

interface DemographicsBody {
  events: number;
  age: Record<string, number>;
  gender: Record<string, number>;
  countries: { country: string; count: number }[];
  followers: Record<string, number>;
}

function DemographicsReport({ range, readKey }: { range: Range; readKey: string }) {
  return (
    <Report<DemographicsBody> title="Demographics" route="/v1/reports/demographics" params={{ from: range.start, to: range.end }} filters={['source']} readKey={readKey} isEmpty={(d) => d.events === 0}>
      {(d) => (
        <div class="grid">
          <p class="total">
            <strong>{d.events.toLocaleString()}</strong> events
          </p>
          <Counts title="Age" counts={d.age} />
          <Counts title="Gender" counts={d.gender} />
          <Counts title="Followers" counts={d.followers} />
          <Counts title="Country" counts={Object.fromEntries(d.countries.slice(0, 20).map((c) => [c.country, c.count]))} />
        </div>
      )}
    </Report>
  );
}

interface CompaniesBody {
  companies: { company: string; leads: number; events: number; score: number }[];
}

function CompaniesReport({ range, readKey }: { range: Range; readKey: string }) {
  return (
    <Report<CompaniesBody> title="Companies" route="/v1/reports/companies" params={{ from: range.start, to: range.end, limit: '20' }} filters={[]} readKey={readKey} isEmpty={(d) => d.companies.length === 0}>
      {(d) => (
        <>
          <ChartView kind="doughnut" label="Active leads by company" labels={d.companies.map((c) => c.company)} series={[{ label: 'Leads', values: d.companies.map((c) => c.leads) }]} />
          <Table caption="Companies by active leads" rows={d.companies} rowKey={(c) => c.company} columns={[
            { label: 'Company', cell: (c) => c.company },
            { label: 'Leads', cell: (c) => c.leads, numeric: true },
            { label: 'Events', cell: (c) => c.events, numeric: true },
            { label: 'Score', cell: (c) => c.score, numeric: true },
          ]} />
        </>
      )}
    </Report>
  );
}
