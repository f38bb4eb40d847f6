import type { ComponentChildren } from 'preact';
import { ApiError } from './api';
import type { Load } from './data';
import { formatLocal, utcTitle } from './time';

export function Time({ iso }: { iso?: string | null }) {
  if (!iso) return <span class="muted">—</span>;
  return (
    <time dateTime={iso} title={utcTitle(iso)}>
      {formatLocal(iso)}
    </time>
  );
}

export function ErrorBox({ error, retry }: { error: Error; retry?: () => void }) {
  const api = error instanceof ApiError ? error : null;
  return (
    <div class="error" role="alert">
      <strong>{api ? titleOf(api) : 'Something went wrong'}</strong>
      <p>{error.message}</p>
      {api?.details.length ? (
        <ul>
          {api.details.map((d) => (
            <li key={d.path + d.message}>
              <code>{d.path || '(body)'}</code> {d.message}
            </li>
          ))}
        </ul>
      ) : null}
      {api?.requestId ? <p class="muted small">Request id {api.requestId}</p> : null}
      {retry ? (
        <button type="button" onClick={retry}>
          Try again
        </button>
      ) : null}
    </div>
  );
}

function titleOf(error: ApiError): string {
  if (error.status === 0) return 'Tally is unreachable';
  if (error.status === 401) return 'The key was not accepted';
  if (error.status === 403) return 'This key may not do that';
  if (error.status === 404) return 'Not found';
  if (error.status === 409) return 'Conflict';
  if (error.status === 429) return 'Too many requests';
  if (error.status >= 500) return 'Tally had a problem';
  return 'The request was refused';
}

/** Loading, error and empty states around a view's content. */
export function Loaded<T>({
  load,
  retry,
  empty,
  isEmpty,
  children,
}: {
  load: Load<T>;
  retry?: () => void;
  empty?: ComponentChildren;
  isEmpty?: (data: T) => boolean;
  children: (data: T) => ComponentChildren;
}) {
  if (load.state === 'error' && load.data === undefined) return <ErrorBox error={load.error} retry={retry} />;
  if (load.data === undefined) {
    return (
      <p class="loading" role="status" aria-live="polite">
        Loading…
      </p>
    );
  }
  const data = load.data;
  return (
    <div aria-busy={load.state === 'loading'}>
      {load.state === 'error' ? <ErrorBox error={load.error} retry={retry} /> : null}
      {isEmpty?.(data) ? <p class="empty">{empty ?? 'Nothing here yet.'}</p> : children(data)}
    </div>
  );
}

export interface Column<R> {
  label: string;
  cell: (row: R) => ComponentChildren;
  numeric?: boolean;
}

export function Table<R>({ caption, columns, rows, rowKey }: { caption: string; columns: Column<R>[]; rows: R[]; rowKey: (row: R, index: number) => string }) {
  return (
    <div class="table-wrap">
      <table>
        <caption>{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th scope="col" key={c.label} class={c.numeric ? 'num' : undefined}>
                {c.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={rowKey(row, i)}>
              {columns.map((c) => (
                <td key={c.label} class={c.numeric ? 'num' : undefined}>
                  {c.cell(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Money({ amounts }: { amounts?: Record<string, string> }) {
  const entries = Object.entries(amounts ?? {});
  if (entries.length === 0) return <span class="muted">—</span>;
  return <span>{entries.map(([currency, amount]) => `${amount} ${currency}`).join(', ')}</span>;
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section class="card" aria-labelledby={id}>
      <header class="card-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}
