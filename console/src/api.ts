// Calls to Tally's own API (same origin). The key goes only into the Authorization header of
// these requests.

export type Scope = 'read' | 'admin' | 'ingest';

export interface FieldDetail {
  path: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: FieldDetail[] = [],
    readonly requestId = '',
  ) {
    super(message);
  }
}

export interface CallOptions {
  method?: 'GET' | 'POST' | 'PUT';
  json?: unknown;
  text?: string;
  contentType?: string;
  signal?: AbortSignal;
}

/** The raw response, for routes whose non-2xx answers carry results (207). */
export async function call(path: string, key: string, options: CallOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  let body: string | undefined;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.text !== undefined) {
    headers['Content-Type'] = options.contentType ?? 'text/plain';
    body = options.text;
  }
  try {
    return await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body,
      signal: options.signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'NETWORK', 'Tally could not be reached. Check the connection and try again.');
  }
}

/** A JSON route: the parsed body on 2xx, an ApiError in the API's error shape otherwise. */
export async function api<T>(path: string, key: string, options: CallOptions = {}): Promise<T> {
  const response = await call(path, key, options);
  if (response.ok) return (await response.json()) as T;
  throw await errorOf(response);
}

export async function errorOf(response: Response): Promise<ApiError> {
  let body: { error?: { code?: string; message?: string; details?: FieldDetail[] }; requestId?: string; message?: string } = {};
  try {
    body = await response.json();
  } catch {
    // Not JSON (a gateway page): the status speaks for itself.
  }
  const message = body.error?.message ?? body.message ?? `${response.status} ${response.statusText}`;
  return new ApiError(response.status, body.error?.code ?? String(response.status), message, body.error?.details ?? [], body.requestId ?? '');
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiError && error.status === 404;
}

/** Query string from defined, non-empty values. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export function path(...segments: string[]): string {
  return segments.map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join('/');
}

/** What a key may do, found by asking: each probe has no side effect. */
export async function probeScopes(key: string): Promise<Scope[]> {
  const [admin, read, ingest] = await Promise.all([
    call('/v1/admin/metrics', key),
    call('/v1/scoring', key),
    // A header-only CSV stores nothing: an ingest key gets 400, any other 401 or 403.
    call('/v1/events/csv', key, { method: 'POST', text: 'type\n', contentType: 'text/csv' }),
  ]);
  for (const r of [admin, read, ingest]) {
    if (r.status === 0 || r.status >= 500) throw await errorOf(r);
  }
  const scopes: Scope[] = [];
  if (admin.ok) scopes.push('admin');
  if (read.ok) scopes.push('read');
  if (ingest.status !== 401 && ingest.status !== 403) scopes.push('ingest');
  return scopes;
}
