// Browser tracking for Tally. Events are queued, sent in batches to POST /v1/events/batch with a
// publishable key (scope `track`), retried with the same Idempotency-Key (so a retry stores
// nothing twice), and handed to navigator.sendBeacon when the page hides. No cookie is set
// unless the page asks for one.

/** How {@link init} sends events. */
export interface TallyOptions {
  /** The API's base URL, e.g. `https://api.example.com`. */
  endpoint: string;
  /** A publishable key (scope `track`): it posts only from the origins configured for it. */
  key: string;
  /** Events sent together at most: 1 to 500, default 20. */
  batchSize?: number;
  /** Milliseconds an event waits at most before its batch is sent; default 5000. */
  flushInterval?: number;
  /** Attempts per batch before it is given up; default 5. */
  maxAttempts?: number;
  /** Keep an anonymous visitor id in a first-party cookie, sent as `metadata.anonymousId`. Default false: no cookie. */
  cookies?: boolean;
  /** Called with each batch given up: refused by the API, or still failing after every attempt. */
  onError?: (error: TallyError) => void;
}

/** Fields an event may carry besides its type (the API's canonical event). */
export interface EventFields {
  leadId?: string;
  userId?: string;
  lead?: { email?: string; name?: string; company?: string };
  campaignId?: string;
  regionId?: string;
  funnelStage?: 'top' | 'middle' | 'bottom';
  payload?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

/** A batch given up, with the API's status (0 when it was never answered) and how many of its events were lost; for 207, the events the API rejected. */
export interface TallyError {
  status: number;
  message: string;
  events: number;
}

export interface Tally {
  /** Queues a `PAGE_VIEW` of this page (URL, path, title and referrer in `payload`). */
  pageView(fields?: EventFields): void;
  /** Queues an event of `type`. */
  track(type: string, fields?: EventFields): void;
  /** Sets the ids every later event carries. */
  identify(ids: { userId?: string; leadId?: string }): void;
  /** Sends every queued event now; resolves when each batch is delivered, retried out or given up. */
  flush(): Promise<void>;
}

interface Batch {
  events: Record<string, unknown>[];
  idempotencyKey: string;
  attempts: number;
}

const COOKIE = 'tally_aid';
/** A beacon body stays under the 64 KiB browsers allow for all pending beacons together. */
const BEACON_BYTES = 60_000;

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function anonymousId(): string {
  const found = document.cookie.match(/(?:^|; )tally_aid=([0-9a-f]{32})/);
  if (found) return found[1];
  const id = randomId();
  document.cookie = `${COOKIE}=${id}; Max-Age=31536000; Path=/; SameSite=Lax${location.protocol === 'https:' ? '; Secure' : ''}`;
  return id;
}

/** Starts tracking with `options`; call once per page. */
export function init(options: TallyOptions): Tally {
  const url = `${options.endpoint.replace(/\/+$/, '')}/v1/events/batch`;
  const batchSize = Math.min(Math.max(options.batchSize ?? 20, 1), 500);
  const interval = options.flushInterval ?? 5000;
  const maxAttempts = options.maxAttempts ?? 5;
  const anonymous = options.cookies ? anonymousId() : undefined;
  let ids: { userId?: string; leadId?: string } = {};
  let queue: Record<string, unknown>[] = [];
  // Batches waiting to be retried, so a page that hides meanwhile beacons them instead.
  const waiting = new Set<Batch>();
  let timer: ReturnType<typeof setTimeout> | undefined;

  const giveUp = (batch: Batch, status: number, message: string, events = batch.events.length) =>
    options.onError?.({ status, message, events });

  async function send(batch: Batch): Promise<void> {
    batch.attempts += 1;
    let status = 0;
    let message = 'network error';
    try {
      const response = await fetch(url, {
        method: 'POST',
        keepalive: true,
        credentials: 'omit',
        headers: {
          authorization: `Bearer ${options.key}`,
          'content-type': 'application/json',
          'idempotency-key': batch.idempotencyKey,
        },
        body: JSON.stringify(batch.events),
      });
      status = response.status;
      if (response.ok) {
        if (status === 207) {
          const result = await response.json().catch(() => ({}));
          giveUp(batch, status, 'some events were rejected', result.rejected ?? 0);
        }
        return;
      }
      message = `HTTP ${status}`;
    } catch {
      // Refused by CORS, offline, or the page is going away: retried below.
    }
    const retryable = status === 0 || status === 429 || status >= 500;
    if (!retryable || batch.attempts >= maxAttempts) return giveUp(batch, status, message);
    waiting.add(batch);
    const delay = Math.min(30_000, 1000 * 2 ** (batch.attempts - 1)) * (0.5 + Math.random() / 2);
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (waiting.delete(batch)) await send(batch);
  }

  function take(): Batch[] {
    const batches: Batch[] = [];
    while (queue.length > 0) {
      batches.push({ events: queue.splice(0, batchSize), idempotencyKey: randomId(), attempts: 0 });
    }
    return batches;
  }

  async function flush(): Promise<void> {
    clearTimeout(timer);
    timer = undefined;
    await Promise.all(take().map(send));
  }

  function enqueue(event: Record<string, unknown>) {
    queue.push(event);
    if (queue.length >= batchSize) void flush();
    else timer ??= setTimeout(() => void flush(), interval);
  }

  // Beacons carry no headers: the key and the idempotency key travel as query parameters, and
  // the body as text/plain, which a browser sends cross-origin without a preflight.
  function beacon(batch: Batch): boolean {
    const body = JSON.stringify(batch.events);
    if (typeof navigator.sendBeacon !== 'function' || body.length > BEACON_BYTES) return false;
    const target = `${url}?key=${encodeURIComponent(options.key)}&idempotencyKey=${batch.idempotencyKey}`;
    return navigator.sendBeacon(target, new Blob([body], { type: 'text/plain' }));
  }

  function onHide() {
    if (document.visibilityState !== 'hidden') return;
    clearTimeout(timer);
    timer = undefined;
    for (const batch of [...waiting, ...take()]) {
      waiting.delete(batch);
      // A batch the browser's beacon queue will not take goes by fetch (keepalive) instead.
      if (!beacon(batch)) void send(batch);
    }
  }
  document.addEventListener('visibilitychange', onHide);
  addEventListener('pagehide', onHide);

  function track(type: string, fields: EventFields = {}) {
    const event: Record<string, unknown> = { ...ids, ...fields, type, timestamp: Date.now() };
    if (anonymous) event.metadata = { ...fields.metadata, anonymousId: anonymous };
    enqueue(event);
  }

  return {
    pageView(fields: EventFields = {}) {
      const page = { url: location.href, path: location.pathname, title: document.title, referrer: document.referrer };
      track('PAGE_VIEW', { ...fields, payload: { ...page, ...fields.payload } });
    },
    track,
    identify(next) {
      ids = { ...ids, ...next };
    },
    flush,
  };
}
