// The time-range picker shared by the overview and the reports.
import { useState } from 'preact/hooks';
import { dateInput, DAY, HOUR, startOfLocalDay } from './time';

export interface Range {
  start: string;
  end: string;
  /** Hourly buckets for spans up to a week, daily beyond. */
  byDay: boolean;
}

export type Preset = '24h' | '7d' | '30d' | 'custom';

export function presetRange(preset: Exclude<Preset, 'custom'>, now = Date.now()): Range {
  const span = preset === '24h' ? DAY : preset === '7d' ? 7 * DAY : 30 * DAY;
  const end = Math.ceil(now / HOUR) * HOUR;
  return { start: new Date(end - span).toISOString(), end: new Date(end).toISOString(), byDay: span > 7 * DAY };
}

export function RangePicker({ value, onChange, idPrefix, initial }: { value: Range; onChange: (r: Range) => void; idPrefix: string; initial: Exclude<Preset, 'custom'> }) {
  const [preset, setPreset] = useState<Preset>(initial);
  const [from, setFrom] = useState(dateInput(new Date(Date.parse(value.start))));
  const [to, setTo] = useState(dateInput(new Date(Date.parse(value.end) - 1)));
  const [error, setError] = useState('');
  const choose = (next: Preset) => {
    setPreset(next);
    if (next !== 'custom') onChange(presetRange(next));
  };
  const apply = (e: Event) => {
    e.preventDefault();
    const start = startOfLocalDay(from);
    const end = new Date(Date.parse(startOfLocalDay(to)) + DAY).toISOString();
    const span = Date.parse(end) - Date.parse(start);
    if (!(span > 0)) return setError('The last day must not be before the first.');
    if (span > 400 * DAY) return setError('Pick at most 400 days.');
    setError('');
    onChange({ start, end, byDay: span > 7 * DAY });
  };
  return (
    <form class="range" onSubmit={apply}>
      <fieldset>
        <legend>Time range</legend>
        {(['24h', '7d', '30d', 'custom'] as const).map((p) => (
          <label key={p} class="chip">
            <input type="radio" name={`${idPrefix}-preset`} value={p} checked={preset === p} onChange={() => choose(p)} />
            {p === 'custom' ? 'Dates' : `Last ${p}`}
          </label>
        ))}
      </fieldset>
      {preset === 'custom' ? (
        <div class="row">
          <label>
            From <input type="date" value={from} required onInput={(e) => setFrom(e.currentTarget.value)} />
          </label>
          <label>
            To <input type="date" value={to} required onInput={(e) => setTo(e.currentTarget.value)} />
          </label>
          <button type="submit">Show</button>
          {error ? (
            <span class="field-error" role="alert">
              {error}
            </span>
          ) : null}
        </div>
      ) : null}
    </form>
  );
}
