// tally.js in headless Chromium against the local stack (driven by local/tests/tracking.rs, which
// serves the pages and checks what was stored).
//   TALLY_API           the HTTP API's base URL
//   TALLY_TRACK_KEY     a publishable key whose origin is TALLY_ALLOWED_PAGE's
//   TALLY_ALLOWED_PAGE  a page on the allowed origin that loads dist/tally.min.js
//   TALLY_OTHER_PAGE    the same page on another origin
//   TALLY_RUN           a token that makes this run's user ids unique
//   CHROMIUM            the browser binary (default /usr/bin/chromium)
// Prints one JSON line: what each page saw.
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const api = env('TALLY_API');
const key = env('TALLY_TRACK_KEY');
const run = env('TALLY_RUN');

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'tally-js-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** Opens `page` and runs the tracking steps in it; returns what the page saw. */
async function visit(pageUrl, userId, { failFirstDelivery = false } = {}) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  let deliveries = 0;
  if (failFirstDelivery) {
    // The first batch reaches the API, but its answer is lost: tally.js must retry it with the
    // same Idempotency-Key, and the API must store nothing twice.
    await page.route(`${api}/v1/events/batch`, async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      deliveries += 1;
      if (deliveries === 1) {
        await route.fetch();
        return route.abort('connectionreset');
      }
      return route.continue();
    });
  }
  await page.goto(pageUrl);
  const seen = await page.evaluate(
    async ({ api, key, userId }) => {
      const failures = [];
      const tally = window.Tally.init({
        endpoint: api,
        key,
        flushInterval: 60_000,
        maxAttempts: 3,
        onError: (e) => failures.push(e),
      });
      tally.identify({ userId });
      tally.pageView();
      tally.track('FORM_SUBMISSION', { payload: { form: 'signup' } });
      // Not an allowed type for the key: rejected, the rest stored.
      tally.track('PURCHASE');
      await tally.flush();
      // Left queued: the page hiding sends it with sendBeacon.
      tally.track('EMAIL_OPEN', { payload: { campaign: 'welcome' } });
      return { failures, cookies: document.cookie };
    },
    { api, key, userId },
  );
  // Leaving the page hides it: tally.js hands its queue to sendBeacon.
  await page.goto('about:blank');
  await page.close();
  return { ...seen, deliveries, errors };
}

try {
  const allowed = await visit(env('TALLY_ALLOWED_PAGE'), `visitor-${run}`, { failFirstDelivery: true });
  const other = await visit(env('TALLY_OTHER_PAGE'), `intruder-${run}`);
  console.log(JSON.stringify({ allowed, other }));
} finally {
  await context.close();
}
