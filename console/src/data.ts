// A small loader hook: every view shows loading, error and empty states from the same state.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export type Load<T> =
  | { state: 'loading'; data?: T }
  | { state: 'error'; error: Error; data?: T }
  | { state: 'ready'; data: T };

/** Runs `fetcher` now and whenever `deps` change; `reload` runs it again. Stale answers are
 * dropped, and a reload keeps the data shown until the new answer arrives. */
export function useLoad<T>(fetcher: (signal: AbortSignal) => Promise<T>, deps: unknown[]): [Load<T>, () => void] {
  const [load, setLoad] = useState<Load<T>>({ state: 'loading' });
  const [tick, setTick] = useState(0);
  const latest = useRef(fetcher);
  latest.current = fetcher;
  useEffect(() => {
    const controller = new AbortController();
    setLoad((previous) => ({ state: 'loading', data: previous.data }));
    latest
      .current(controller.signal)
      .then((data) => {
        if (!controller.signal.aborted) setLoad({ state: 'ready', data });
      })
      .catch((error: unknown) => {
        if (controller.signal.aborted) return;
        setLoad((previous) => ({ state: 'error', error: error instanceof Error ? error : new Error(String(error)), data: previous.data }));
      });
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return [load, reload];
}

/** Calls `action` every `ms` while the page is visible. */
export function useInterval(action: () => void, ms: number | null): void {
  const latest = useRef(action);
  latest.current = action;
  useEffect(() => {
    if (ms === null) return;
    const id = setInterval(() => {
      if (document.visibilityState === 'visible') latest.current();
    }, ms);
    return () => clearInterval(id);
  }, [ms]);
}
