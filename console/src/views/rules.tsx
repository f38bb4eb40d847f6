import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, path } from '../api';
import { KeyForm, useSession } from '../app';
import { ErrorBox, Loaded, Section } from '../components';
import { useLoad } from '../data';

interface Rule {
  eventType: string;
  points: number;
  active: boolean;
  maxPerDay?: number | null;
}

interface Settings {
  score: { min: number; max: number };
  decay: { afterDays: number; percentPerDay: number };
  stages: { name: string; minScore: number }[];
  version: number;
}

interface RuleSet {
  rules: Rule[];
  version: number;
}

export function Rules() {
  const { keys } = useSession();
  const readKey = keys.read;
  const adminKey = keys.admin;
  const [load, reload] = useLoad(async (signal) => {
    const [rules, settings] = await Promise.all([api<RuleSet>('/v1/rules', readKey ?? '', { signal }), api<Settings>('/v1/scoring', readKey ?? '', { signal })]);
    return { rules, settings };
  }, [readKey]);
  if (!readKey) return <p class="empty">Sign in with a read key to see the rules.</p>;
  return (
    <>
      <div class="page-head">
        <h1>Rules and scoring</h1>
      </div>
      {adminKey ? null : (
        <div class="card">
          <p>You can read the rules. To change them, give an admin key.</p>
          <KeyForm purpose="Admin key" need="admin" />
        </div>
      )}
      <Loaded load={load} retry={reload}>
        {(data) => (
          <>
            <Section title="Points per event type">
              <RulesTable rules={data.rules.rules} version={data.rules.version} adminKey={adminKey} onSaved={reload} />
            </Section>
            <Section title="Bounds, decay and stages">
              <SettingsForm settings={data.settings} adminKey={adminKey} onSaved={reload} />
            </Section>
          </>
        )}
      </Loaded>
    </>
  );
}

function RulesTable({ rules, version, adminKey, onSaved }: { rules: Rule[]; version: number; adminKey?: string; onSaved: () => void }) {
  const [adding, setAdding] = useState('');
  const rows = adding ? [...rules, { eventType: adding, points: 0, active: true, maxPerDay: null }] : rules;
  return (
    <>
      <div class="table-wrap">
        <table>
          <caption>Each event type's points; “max per day” caps how many of its events score in one UTC day.</caption>
          <thead>
            <tr>
              <th scope="col">Event type</th>
              <th scope="col" class="num">Points</th>
              <th scope="col">Active</th>
              <th scope="col" class="num">Max per day</th>
              <th scope="col">
                <span class="sr-only">Save</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((rule) => (
              <RuleRow key={`${rule.eventType}-${version}`} rule={rule} version={version} adminKey={adminKey} onSaved={() => { setAdding(''); onSaved(); }} />
            ))}
          </tbody>
        </table>
      </div>
      {adminKey ? <AddRule onAdd={setAdding} existing={rules.map((r) => r.eventType)} /> : null}
    </>
  );
}

function RuleRow({ rule, version, adminKey, onSaved }: { rule: Rule; version: number; adminKey?: string; onSaved: () => void }) {
  const [points, setPoints] = useState(String(rule.points));
  const [active, setActive] = useState(rule.active);
  const [cap, setCap] = useState(rule.maxPerDay == null ? '' : String(rule.maxPerDay));
  const [error, setError] = useState<Error | null>(null);
  const [conflict, setConflict] = useState<Rule | null | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [latest, setLatest] = useState(version);
  useEffect(() => setLatest(version), [version]);
  const id = `rule-${rule.eventType}`;
  const changed = points !== String(rule.points) || active !== rule.active || cap !== (rule.maxPerDay == null ? '' : String(rule.maxPerDay));
  const save = async (expected: number) => {
    setBusy(true);
    setError(null);
    try {
      const body = { points: Number(points), active, maxPerDay: cap === '' ? null : Number(cap), version: expected };
      await api<Rule>(path('/v1/rules', rule.eventType), adminKey ?? '', { method: 'PUT', json: body });
      setConflict(undefined);
      onSaved();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        // Someone else saved first: show what they saved, and let this user decide.
        const current = await api<RuleSet>('/v1/rules', adminKey ?? '').catch(() => null);
        setConflict(current?.rules.find((r) => r.eventType === rule.eventType) ?? null);
        setLatest(current?.version ?? expected);
      } else {
        setError(e instanceof Error ? e : new Error(String(e)));
      }
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <tr data-rule={rule.eventType}>
        <th scope="row" id={id}>{rule.eventType}</th>
        <td class="num">
          <input type="number" step={1} aria-labelledby={`${id} ${id}-points`} value={points} disabled={!adminKey} onInput={(e) => setPoints(e.currentTarget.value)} required />
          <span id={`${id}-points`} class="sr-only">points</span>
        </td>
        <td>
          <input type="checkbox" aria-label={`${rule.eventType} active`} checked={active} disabled={!adminKey} onChange={(e) => setActive(e.currentTarget.checked)} />
        </td>
        <td class="num">
          <input type="number" min={1} step={1} aria-label={`${rule.eventType} max per day`} placeholder="no cap" value={cap} disabled={!adminKey} onInput={(e) => setCap(e.currentTarget.value)} />
        </td>
        <td>
          {adminKey ? (
            <button type="button" disabled={busy || !changed} onClick={() => save(latest)}>
              {busy ? 'Saving…' : `Save ${rule.eventType}`}
            </button>
          ) : null}
        </td>
      </tr>
      {error || conflict !== undefined ? (
        <tr>
          <td colSpan={5}>
            {error ? <ErrorBox error={error} /> : null}
            {conflict !== undefined ? (
              <div class="conflict" role="alert">
                <strong>Not saved: someone else changed the rules first.</strong>
                <p>
                  {conflict
                    ? `${rule.eventType} is now ${conflict.points} points, ${conflict.active ? 'active' : 'inactive'}, ${conflict.maxPerDay == null ? 'no cap' : `at most ${conflict.maxPerDay} a day`}.`
                    : `${rule.eventType} was removed.`}{' '}
                  Your values are still in the row.
                </p>
                <button type="button" onClick={() => save(latest)}>
                  Save mine over theirs
                </button>{' '}
                <button type="button" onClick={() => { setConflict(undefined); onSaved(); }}>
                  Discard mine
                </button>
              </div>
            ) : null}
          </td>
        </tr>
      ) : null}
    </>
  );
}

function AddRule({ onAdd, existing }: { onAdd: (type: string) => void; existing: string[] }) {
  const [type, setType] = useState('');
  const valid = /^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/.test(type) && !existing.includes(type);
  return (
    <form class="row" onSubmit={(e) => { e.preventDefault(); if (valid) { onAdd(type); setType(''); } }}>
      <label>
        New event type <input value={type} maxLength={64} onInput={(e) => setType(e.currentTarget.value.trim())} />
      </label>
      <button type="submit" disabled={!valid}>Add rule</button>
    </form>
  );
}

function SettingsForm({ settings, adminKey, onSaved }: { settings: Settings; adminKey?: string; onSaved: () => void }) {
  const [draft, setDraft] = useState(() => structuredClone(settings));
  const [error, setError] = useState<Error | null>(null);
  const [conflict, setConflict] = useState<Settings | null>(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => setDraft(structuredClone(settings)), [settings]);
  const num = (value: string) => (value === '' ? NaN : Number(value));
  const submit = async (e: Event, version = settings.version) => {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      await api<Settings>('/v1/scoring', adminKey ?? '', { method: 'PUT', json: { ...draft, version } });
      setConflict(null);
      setSaved(true);
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        setConflict(await api<Settings>('/v1/scoring', adminKey ?? '').catch(() => null));
      } else setError(err instanceof Error ? err : new Error(String(err)));
    }
  };
  const disabled = !adminKey;
  return (
    <form class="settings" onSubmit={(e) => submit(e)}>
      <fieldset disabled={disabled}>
        <legend>Score bounds</legend>
        <label>Minimum <input type="number" step={1} value={draft.score.min} onInput={(e) => setDraft({ ...draft, score: { ...draft.score, min: num(e.currentTarget.value) } })} /></label>
        <label>Maximum <input type="number" step={1} value={draft.score.max} onInput={(e) => setDraft({ ...draft, score: { ...draft.score, max: num(e.currentTarget.value) } })} /></label>
      </fieldset>
      <fieldset disabled={disabled}>
        <legend>Decay</legend>
        <label>After days <input type="number" min={0} step={1} value={draft.decay.afterDays} onInput={(e) => setDraft({ ...draft, decay: { ...draft.decay, afterDays: num(e.currentTarget.value) } })} /></label>
        <label>Percent per day <input type="number" min={0} max={100} step={1} value={draft.decay.percentPerDay} onInput={(e) => setDraft({ ...draft, decay: { ...draft.decay, percentPerDay: num(e.currentTarget.value) } })} /></label>
      </fieldset>
      <fieldset disabled={disabled}>
        <legend>Stages (lowest first)</legend>
        {draft.stages.map((stage, i) => (
          <div class="row" key={i}>
            <label>Name <input value={stage.name} maxLength={32} onInput={(e) => setDraft({ ...draft, stages: draft.stages.map((s, j) => (j === i ? { ...s, name: e.currentTarget.value } : s)) })} /></label>
            <label>From score <input type="number" step={1} value={stage.minScore} onInput={(e) => setDraft({ ...draft, stages: draft.stages.map((s, j) => (j === i ? { ...s, minScore: num(e.currentTarget.value) } : s)) })} /></label>
            <button type="button" onClick={() => setDraft({ ...draft, stages: draft.stages.filter((_, j) => j !== i) })}>Remove {stage.name || 'stage'}</button>
          </div>
        ))}
        <button type="button" disabled={draft.stages.length >= 10} onClick={() => setDraft({ ...draft, stages: [...draft.stages, { name: '', minScore: 0 }] })}>Add stage</button>
      </fieldset>
      {adminKey ? <button type="submit">Save settings</button> : null}
      {saved ? <p role="status">Saved.</p> : null}
      {error ? <ErrorBox error={error} /> : null}
      {conflict ? (
        <div class="conflict" role="alert">
          <strong>Not saved: someone else changed the rules or settings first.</strong>
          <p>
            Theirs: score {conflict.score.min}–{conflict.score.max}; decay {conflict.decay.percentPerDay}% a day after {conflict.decay.afterDays} days; stages{' '}
            {conflict.stages.map((s) => `${s.name} ${s.minScore}+`).join(', ') || 'none'}.
          </p>
          <button type="button" onClick={(e) => submit(e, conflict.version)}>Save mine over theirs</button>{' '}
          <button type="button" onClick={() => { setConflict(null); onSaved(); }}>Discard mine</button>
        </div>
      ) : null}
    </form>
  );
}
