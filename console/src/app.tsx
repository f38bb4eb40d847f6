// The shell: sign-in, navigation, and the hash route that picks a view.
import type { ComponentChildren } from 'preact';
import { createContext } from 'preact';
import { useContext, useEffect, useState } from 'preact/hooks';
import { ApiError, probeScopes, type Scope } from './api';
import { ErrorBox } from './components';
import { live, type LiveMode, useLive } from './live';
import { clearKeys, type Keys, loadKeys, saveKeys, withKey } from './session';

export interface Session {
  keys: Keys;
  addKey: (key: string) => Promise<Scope[]>;
  signOut: () => void;
}

export const SessionContext = createContext<Session>({ keys: {}, addKey: async () => [], signOut: () => {} });

export function useSession(): Session {
  return useContext(SessionContext);
}

export function useRoute(): string[] {
  const read = () =>
    location.hash
      .replace(/^#\/?/, '')
      .split('/')
      .filter(Boolean)
      .map((segment) => {
        try {
          return decodeURIComponent(segment);
        } catch {
          return segment;
        }
      });
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onChange = () => setRoute(read());
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

export function href(...segments: string[]): string {
  return `#/${segments.map(encodeURIComponent).join('/')}`;
}

const VIEWS: { id: string; label: string; admin?: boolean }[] = [
  { id: 'overview', label: 'Overview' },
  { id: 'leads', label: 'Leads' },
  { id: 'reports', label: 'Reports' },
  { id: 'rules', label: 'Rules & scoring' },
  { id: 'upload', label: 'Upload' },
  { id: 'operations', label: 'Operations', admin: true },
];

export function Shell({ route, children }: { route: string[]; children: ComponentChildren }) {
  const session = useSession();
  const mode = useLive(noop);
  const current = route[0] ?? 'overview';
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Tally</span>
        <nav aria-label="Views">
          <ul>
            {VIEWS.map((v) => (
              <li key={v.id}>
                <a href={href(v.id)} aria-current={current === v.id ? 'page' : undefined}>
                  {v.label}
                  {v.admin && !session.keys.admin ? <span class="sr-only"> (admin key needed)</span> : null}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <LiveBadge mode={mode} />
        <button type="button" class="link" onClick={session.signOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}

function noop(): void {}

function LiveBadge({ mode }: { mode: LiveMode }) {
  const text = mode === 'live' ? 'Live' : mode === 'connecting' ? 'Connecting…' : 'Polling';
  const title = mode === 'live' ? 'Score changes arrive over a live connection' : 'No live connection: the page asks for changes every few seconds';
  return (
    <span class={`badge live-${mode}`} title={title} role="status" data-live={mode}>
      {text}
    </span>
  );
}

/** The sign-in form; also used inline when a view needs a key of another scope. */
export function KeyForm({ purpose, need, onDone }: { purpose: string; need?: Scope; onDone?: () => void }) {
  const session = useSession();
  const [key, setKey] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const scopes = await session.addKey(key.trim());
      if (scopes.length === 0) throw new ApiError(401, 'UNAUTHORIZED', 'Tally does not know this key.');
      if (need && !scopes.includes(need)) throw new ApiError(403, 'FORBIDDEN', `This key has no ${need} scope (it has: ${scopes.join(', ')}).`);
      setKey('');
      onDone?.();
    } catch (err) {
      setError(err instanceof Error ? err : new Error(String(err)));
    } finally {
      setBusy(false);
    }
  };
  const id = `key-${need ?? 'any'}`;
  return (
    <form class="key-form" onSubmit={submit}>
      <label for={id}>{purpose}</label>
      <div class="row">
        <input id={id} type="password" autoComplete="off" spellcheck={false} required value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit" disabled={busy || key.trim() === ''}>
          {busy ? 'Checking…' : 'Use key'}
        </button>
      </div>
      <p class="muted small">The key stays in this browser tab only, and is sent only to this Tally.</p>
      {error ? <ErrorBox error={error} /> : null}
    </form>
  );
}

/** Shows `children` when a key of scope `need` is known, else asks for one. */
export function NeedsKey({ need, purpose, children }: { need: Scope; purpose: string; children: (key: string) => ComponentChildren }) {
  const session = useSession();
  const key = session.keys[need];
  if (key) return <>{children(key)}</>;
  return (
    <div class="card">
      <KeyForm purpose={purpose} need={need} />
    </div>
  );
}

export function SignIn() {
  return (
    <main id="main" class="signin">
      <h1>Tally console</h1>
      <KeyForm purpose="API key (read or admin)" />
    </main>
  );
}

export function useSessionState(): Session {
  const [keys, setKeys] = useState<Keys>(loadKeys);
  useEffect(() => {
    if (keys.read) live.start(keys.read);
    else live.stop();
  }, [keys.read]);
  return {
    keys,
    addKey: async (key: string) => {
      const scopes = await probeScopes(key);
      if (scopes.length > 0) {
        const next = withKey(keys, key, scopes);
        saveKeys(next);
        setKeys(next);
      }
      return scopes;
    },
    signOut: () => {
      clearKeys();
      setKeys({});
      location.hash = '';
    },
  };
}
