// Times are shown in the viewer's zone; the UTC instant is the element's title.

const local = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const localShort = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const localDay = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

export function formatLocal(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : local.format(date);
}

export function formatAxis(iso: string, byDay: boolean): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return byDay ? localDay.format(date) : localShort.format(date);
}

export function utcTitle(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : `${date.toISOString().replace('.000Z', 'Z')} (UTC)`;
}

/** `YYYY-MM-DD` of a date in the viewer's zone, for date inputs. */
export function dateInput(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The instant a local date input's day starts, as RFC 3339 UTC. */
export function startOfLocalDay(value: string): string {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, (m ?? 1) - 1, d ?? 1).toISOString();
}

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
