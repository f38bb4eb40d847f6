// Keys live in sessionStorage only: gone when the tab closes, never in localStorage or cookies.
import type { Scope } from './api';

const STORAGE_KEY = 'tally.keys';

export type Keys = Partial<Record<Scope, string>>;

export function loadKeys(): Keys {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? '{}');
    return typeof parsed === 'object' && parsed !== null ? (parsed as Keys) : {};
  } catch {
    return {};
  }
}

export function saveKeys(keys: Keys): void {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(keys));
}

export function clearKeys(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Adds a key for each scope it has; admin also serves as the read key. */
export function withKey(keys: Keys, key: string, scopes: Scope[]): Keys {
  const next = { ...keys };
  for (const scope of scopes) next[scope] = key;
  if (scopes.includes('admin') && !next.read) next.read = key;
  return next;
}
