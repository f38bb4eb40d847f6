// Live score and stage changes over the stack's WebSocket API. The socket URL comes from the
// page's `tally-live` meta tag; the read key travels as a subprotocol (browsers cannot set
// headers on a socket), base64url-encoded. Without a socket, or while it is down, views poll.
import { useEffect, useState } from 'preact/hooks';

export type LiveMode = 'connecting' | 'live' | 'polling';

export interface LeadChange {
  leadId: string;
  score: number;
  stage?: string | null;
  lastActivityAt?: string | null;
  eventCount?: number;
  company?: string | null;
}

export interface StageChange {
  leadId: string;
  from?: string | null;
  to?: string | null;
  score: number;
  at: string;
}

export interface LiveMessage {
  type: 'leads';
  leads: LeadChange[];
  stageChanges: StageChange[];
  /** More leads changed than one message carries: refetch instead of patching. */
  truncated?: boolean;
}

type Listener = (message: LiveMessage) => void;
type ModeListener = (mode: LiveMode) => void;

const PROTOCOL = 'tally.v1';
const MAX_BACKOFF_MS = 30_000;

export function liveUrl(): string {
  return document.querySelector<HTMLMetaElement>('meta[name="tally-live"]')?.content ?? '';
}

function base64url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

class LiveClient {
  private socket: WebSocket | null = null;
  private key = '';
  private mode: LiveMode = 'polling';
  private backoff = 1000;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly listeners = new Set<Listener>();
  private readonly modeListeners = new Set<ModeListener>();

  start(key: string): void {
    if (key === this.key && this.socket) return;
    this.stop();
    this.key = key;
    this.connect();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.key = '';
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
    this.setMode('polling');
  }

  current(): LiveMode {
    return this.mode;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onMode(listener: ModeListener): () => void {
    this.modeListeners.add(listener);
    return () => this.modeListeners.delete(listener);
  }

  private connect(): void {
    const url = liveUrl();
    if (!url || !this.key) return this.setMode('polling');
    this.setMode('connecting');
    let socket: WebSocket;
    try {
      socket = new WebSocket(url, [PROTOCOL, `key.${base64url(this.key)}`]);
    } catch {
      return this.retry();
    }
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 1000;
      this.setMode('live');
    };
    socket.onmessage = (event) => {
      try {
        const message = JSON.parse(String(event.data)) as LiveMessage;
        if (message.type === 'leads') this.listeners.forEach((l) => l(message));
      } catch {
        // Not a message of ours: ignored.
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.retry();
    };
  }

  private retry(): void {
    this.setMode('polling');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private setMode(mode: LiveMode): void {
    if (mode === this.mode) return;
    this.mode = mode;
    this.modeListeners.forEach((l) => l(mode));
  }
}

export const live = new LiveClient();

/** The connection's mode, and `onMessage` called for every update while mounted. */
export function useLive(onMessage: Listener): LiveMode {
  const [mode, setMode] = useState(live.current());
  useEffect(() => live.onMode(setMode), []);
  useEffect(() => live.subscribe(onMessage), [onMessage]);
  return mode;
}
