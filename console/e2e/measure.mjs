// Measures the console on a running stack, for the README (run by `cargo bench -p tally-local
// --bench console`, which starts the stack and passes TALLY_URL and the keys):
// - first load: navigation to the sign-in form, and to a signed-in overview with its counters,
//   each with an empty cache (a new browser context);
// - 202 → score on an open leaderboard page: each sample posts 21 events for a new lead and waits
//   for its row to show 1,000.
// Prints one JSON line of figures (milliseconds).
import { chromium } from 'playwright-core';

const BASE = process.env.TALLY_URL;
const READ_KEY = process.env.TALLY_READ_KEY;
const INGEST_KEY = process.env.TALLY_INGEST_KEY;
const LOADS = Number(process.env.LOADS ?? '10');
const SAMPLES = Number(process.env.SAMPLES ?? '30');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
};
const summary = (values) => ({ n: values.length, p50: quantile(values, 0.5), p95: quantile(values, 0.95), max: Math.max(...values) });

try {
  const toForm = [];
  const toOverview = [];
  let transferred = 0;
  for (let i = 0; i < LOADS; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    let bytes = 0;
    page.on('response', async (r) => { bytes += Number((await r.headerValue('content-length')) ?? 0); });
    const started = Date.now();
    await page.goto(`${BASE}/`);
    await page.getByLabel('API key (read or admin)').waitFor();
    toForm.push(Date.now() - started);
    const signIn = Date.now();
    await page.getByLabel('API key (read or admin)').fill(READ_KEY);
    await page.getByRole('button', { name: 'Use key' }).click();
    await page.locator('[data-metric="tally_events_processed_total"]').waitFor();
    toOverview.push(Date.now() - signIn);
    transferred = bytes;
    await context.close();
  }

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${BASE}/`);
  await page.getByLabel('API key (read or admin)').fill(READ_KEY);
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.goto(`${BASE}/#/leads`);
  await page.getByRole('heading', { name: 'Leaderboard' }).waitFor();
  // The samples measure the live path: the socket is up before the first.
  await page.locator('[data-live="live"]').waitFor();
  const mode = await page.locator('[data-live]').getAttribute('data-live');
  const live = [];
  for (let i = 0; i < SAMPLES; i++) {
    // Every sample's lead reaches the maximum score, and ties go by lead id: each new lead's id
    // sorts before the last one's, so it is on the first page.
    const email = `${String(9999 - i).padStart(4, '0')}-${Date.now()}@example.com`;
    const events = Array.from({ length: 21 }, () => ({ type: 'DEMO_REQUEST', lead: { email } }));
    const response = await fetch(`${BASE}/v1/events/batch`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${INGEST_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(events),
    });
    if (response.status !== 202) throw new Error(`ingest answered ${response.status}`);
    const accepted = Date.now();
    await page.locator(`[data-lead-score="email:${email}"]`).filter({ hasText: /^1000$/ }).waitFor({ timeout: 30_000 });
    live.push(Date.now() - accepted);
    if ((await page.locator('[data-live]').getAttribute('data-live')) !== 'live') throw new Error('the socket dropped');
    // An idle pipeline for the next sample, as a lone event meets it.
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  console.log(JSON.stringify({
    firstLoadToSignIn: summary(toForm),
    signInToOverview: summary(toOverview),
    bytesFirstLoad: transferred,
    scoreOnPage: { mode, ...summary(live) },
  }));
} finally {
  await browser.close();
}
