// End-to-end test of the console in headless Chromium against a running local stack.
// Started by `local/tests/console.rs`, which starts the stack, dead-letters two events for the
// operations steps, and passes what the steps need in the environment:
//   TALLY_URL, TALLY_READ_KEY, TALLY_ADMIN_KEY, TALLY_INGEST_KEY, TALLY_DEAD_EVENTS (two ids),
//   TALLY_ARTIFACTS (screenshots; git-ignored), CHROMIUM (default /usr/bin/chromium),
//   TALLY_LIVE_SAMPLES (how many 202 → page timings to take; default 1).
// Every step asserts what a user would see; the first failure ends the run with exit code 1.
import { strict as assert } from 'node:assert';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('TALLY_URL');
const READ_KEY = env('TALLY_READ_KEY');
const ADMIN_KEY = env('TALLY_ADMIN_KEY');
const INGEST_KEY = env('TALLY_INGEST_KEY');
const DEAD = env('TALLY_DEAD_EVENTS').split(',');
const ARTIFACTS = env('TALLY_ARTIFACTS', 'e2e/artifacts');
const SAMPLES = Number(env('TALLY_LIVE_SAMPLES', '1'));
const TIMEOUT = 30_000;

// Only this run's screenshots.
rmSync(ARTIFACTS, { recursive: true, force: true });
mkdirSync(ARTIFACTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  // Playwright starts the browser with a new, empty profile of its own.
});

const problems = [];
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
context.setDefaultTimeout(TIMEOUT);
// The page may talk to nobody but Tally.
const origin = new URL(BASE).origin;
const liveOrigin = (url) => url.startsWith('ws://') || url.startsWith('wss://');
context.on('request', (request) => {
  const url = request.url();
  if (!url.startsWith(origin) && !url.startsWith('data:') && !liveOrigin(url)) problems.push(`request to ${url}`);
});
const page = await context.newPage();
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  const text = message.text();
  // The sign-in probe's 401/403 answers are expected; anything about the policy is not.
  if (/Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
});

let step = '';
const steps = [];
async function run(name, body) {
  step = name;
  const started = Date.now();
  await body();
  steps.push(`${name} (${Date.now() - started} ms)`);
  console.log(`ok - ${name}`);
}

async function shot(name, target = page) {
  await target.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function post(path, body, key = INGEST_KEY) {
  const response = await fetch(`${BASE}${path}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function getJson(path, key = READ_KEY) {
  const response = await fetch(`${BASE}${path}`, { headers: { Authorization: `Bearer ${key}` } });
  return response.json();
}

async function signIn(key, label = 'API key (read or admin)') {
  await page.getByLabel(label).fill(key);
  await page.getByRole('button', { name: 'Use key' }).click();
}

try {
  await run('first load: the sign-in form, under a strict policy', async () => {
    const started = Date.now();
    await page.goto(`${BASE}/`);
    await page.getByLabel('API key (read or admin)').waitFor();
    console.log(`first load: ${Date.now() - started} ms to the sign-in form`);
    const csp = (await page.request.get(`${BASE}/`)).headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  });

  await run('a wrong key is refused with a message', async () => {
    await signIn('not-a-key');
    await page.getByRole('alert').getByText('Tally does not know this key.').waitFor();
  });

  await run('sign in with a read key', async () => {
    await signIn(READ_KEY);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const stored = await page.evaluate(() => [sessionStorage.getItem('tally.keys'), localStorage.length, document.cookie]);
    assert.ok(stored[0]?.includes('read'), 'the key is kept in session storage');
    assert.equal(stored[1], 0, 'nothing in local storage');
    assert.equal(stored[2], '', 'no cookie');
    await page.getByRole('heading', { name: 'Pipeline' }).waitFor();
    await page.locator('[data-metric="tally_events_processed_total"]').waitFor();
    await shot('overview');
  });

  await run('keyboard: skip link first, then the views', async () => {
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Leads');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Leads' }).waitFor();
  });

  const timings = [];
  await run('the leaderboard changes live, without a reload', async () => {
    await page.goto(`${BASE}/#/leads`);
    await page.getByRole('heading', { name: 'Leaderboard' }).waitFor();
    await page.evaluate(() => { window.__notReloaded = true; });
    // The stack's WebSocket API is up: the page listens rather than polls.
    await page.locator('[data-live="live"]').waitFor();
    for (let i = 0; i < SAMPLES; i++) {
      const email = `live-${Date.now()}-${i}@example.com`;
      const leadId = `email:${email}`;
      // 21 demo requests reach the maximum score (1,000), the last one clamped.
      const events = Array.from({ length: 21 }, () => ({ type: 'DEMO_REQUEST', lead: { email, name: `Live ${i}` } }));
      const answered = await post('/v1/events/batch', events);
      assert.equal(answered.status, 202, JSON.stringify(answered.body));
      const accepted = Date.now();
      await page.locator(`[data-lead-score="${leadId}"]`).filter({ hasText: /^1000$/ }).waitFor({ timeout: TIMEOUT });
      timings.push(Date.now() - accepted);
    }
    assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was not reloaded');
    timings.sort((a, b) => a - b);
    const at = (q) => timings[Math.min(timings.length - 1, Math.floor(q * timings.length))];
    console.log(`202 → score on the page: n=${timings.length} p50=${at(0.5)} ms p95=${at(0.95)} ms max=${timings[timings.length - 1]} ms (${await page.locator('[data-live]').getAttribute('data-live')})`);
    await shot('leads');
  });

  await run('without a socket, the leaderboard still changes (polling)', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Every socket the page opens is closed at once, as behind a proxy that drops them.
    await context.routeWebSocket(/.*/, (socket) => socket.close());
    const other = await context.newPage();
    other.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    await other.goto(`${BASE}/`);
    await other.getByLabel('API key (read or admin)').fill(READ_KEY);
    await other.getByRole('button', { name: 'Use key' }).click();
    await other.goto(`${BASE}/#/leads`);
    await other.getByRole('heading', { name: 'Leaderboard' }).waitFor();
    await other.locator('[data-live="polling"]').waitFor();
    const email = `polled-${Date.now()}@example.com`;
    const events = Array.from({ length: 21 }, () => ({ type: 'DEMO_REQUEST', lead: { email } }));
    assert.equal((await post('/v1/events/batch', events)).status, 202);
    await other.locator(`[data-lead-score="email:${email}"]`).filter({ hasText: /^1000$/ }).waitFor();
    await shot('leads-polling', other);
    await context.close();
  });

  await run('stage filter, search and the lead page with its explained events', async () => {
    await page.getByLabel('Stage').selectOption('SQL');
    await page.locator('[data-lead-score]').first().waitFor();
    const first = await page.locator('[data-lead-score]').first().getAttribute('data-lead-score');
    await page.getByLabel('Lead id or email').fill(first.replace(/^email:/, ''));
    await page.getByRole('button', { name: 'Find' }).click();
    await page.getByTestId('lead-score').filter({ hasText: '1000' }).waitFor();
    await page.getByRole('heading', { name: 'Explained events' }).waitFor();
    const rows = page.locator('table', { has: page.locator('caption', { hasText: 'Every event with the points' }) }).locator('tbody tr');
    await rows.nth(20).waitFor();
    assert.equal(await rows.count(), 21);
    await page.getByText('(clamp)').first().waitFor();
    await page.locator('time[title$="(UTC)"]').first().waitFor();
    await shot('lead');
    // A second lead, with its own id, has the same email: the search lists both.
    const email = first.replace(/^email:/, '');
    assert.equal((await post('/v1/events', { type: 'PAGE_VIEW', leadId: `crm-${Date.now()}`, lead: { email } })).status, 202);
    await waitFor(async () => {
      // Until the second lead is stored, the search finds one lead and opens its page.
      await page.goto(`${BASE}/#/leads`);
      await page.getByLabel('Lead id or email').fill(email);
      await page.getByRole('button', { name: 'Find' }).click();
      const list = page.getByRole('list', { name: 'Leads with this email' });
      await list.or(page.getByTestId('lead-score')).first().waitFor();
      return (await list.locator('li').count()) === 2;
    }, 'both leads with the email');
    await page.getByLabel('Lead id or email').fill('nobody@example.com');
    await page.getByRole('button', { name: 'Find' }).click();
    await page.getByText('No lead has this email.').waitFor();
    await page.goto(`${BASE}/#/leads/nobody-at-all`);
    await page.getByRole('heading', { name: 'No such lead' }).waitFor();
  });

  await run('reports with their numbers', async () => {
    for (const tab of ['events', 'revenue', 'demographics', 'companies']) {
      await page.goto(`${BASE}/#/reports/${tab}`);
      await page.locator('h2', { hasText: new RegExp(`^${tab}$`, 'i') }).waitFor();
      await page.locator('.loading').waitFor({ state: 'detached' });
      await shot(`reports-${tab}`);
    }
    await page.goto(`${BASE}/#/reports/companies`);
    await page.locator('table caption', { hasText: 'Companies by active leads' }).waitFor();
  });

  await run('error and empty states', async () => {
    // A dependency down: the view says so and offers a retry, which recovers.
    await page.route('**/v1/aggregations?*', (route) => route.fulfill({
      status: 503,
      contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'SERVICE_UNAVAILABLE', message: 'analytics table is unavailable', details: [] }, requestId: 'r-1' }),
    }));
    await page.goto(`${BASE}/#/overview`);
    const card = page.locator('section', { has: page.getByRole('heading', { name: /^Events per/ }) });
    await card.getByRole('alert').getByText('Tally had a problem').waitFor();
    await card.getByText('analytics table is unavailable').waitFor();
    await shot('overview-error');
    await page.unroute('**/v1/aggregations?*');
    await card.getByRole('button', { name: 'Try again' }).click();
    await card.getByRole('alert').waitFor({ state: 'detached' });
    // A range with nothing in it.
    await page.goto(`${BASE}/#/reports/events`);
    await page.getByLabel('Dates').check();
    await page.getByLabel('From', { exact: true }).fill('2026-01-01');
    await page.getByLabel('To', { exact: true }).fill('2026-01-02');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByText('No events match in this range.').waitFor();
  });

  await run('edit a rule with an admin key, and see a conflict', async () => {
    await page.goto(`${BASE}/#/rules`);
    await page.getByRole('heading', { name: 'Rules and scoring' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Save PAGE_VIEW' }).count(), 0, 'a read key cannot edit');
    await signIn(ADMIN_KEY, 'Admin key');
    const row = page.locator('tr[data-rule="PAGE_VIEW"]');
    await row.getByRole('spinbutton').first().fill('7');
    await row.getByRole('button', { name: 'Save PAGE_VIEW' }).click();
    await assertRule('PAGE_VIEW', 7);
    await page.locator('tr[data-rule="PAGE_VIEW"] input[type=number]').first().waitFor();
    assert.equal(await page.locator('tr[data-rule="PAGE_VIEW"] input[type=number]').first().inputValue(), '7');

    // Someone else changes the rules after this page read them.
    const before = await getJson('/v1/rules');
    const response = await fetch(`${BASE}/v1/rules/EMAIL_OPEN`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ points: 12, version: before.version }),
    });
    assert.equal(response.status, 200);
    const stale = page.locator('tr[data-rule="FORM_SUBMISSION"]');
    await stale.getByRole('spinbutton').first().fill('25');
    await stale.getByRole('button', { name: 'Save FORM_SUBMISSION' }).click();
    await page.getByText('Not saved: someone else changed the rules first.').waitFor();
    await assertRule('FORM_SUBMISSION', 20);
    await shot('rules-conflict');
    await page.getByRole('button', { name: 'Save mine over theirs' }).click();
    await page.getByText('Not saved: someone else changed the rules first.').waitFor({ state: 'detached' });
    await assertRule('FORM_SUBMISSION', 25);
    await assertRule('EMAIL_OPEN', 12);
    await shot('rules');
  });

  await run('upload a CSV with a bad row and see that row\'s error', async () => {
    await page.goto(`${BASE}/#/upload`);
    await signIn(INGEST_KEY, 'Ingest key (uploads post events)');
    await page.getByRole('link', { name: 'Download a sample file' }).waitFor();
    const sample = await page.request.get(`${BASE}/assets/sample.csv`);
    assert.equal(sample.status(), 200);
    const csv = 'type,email,revenue\nPAGE_VIEW,csv-ok@example.com,\nPURCHASE,csv-bad@example.com,12.345678\nEMAIL_OPEN,csv-ok@example.com,\n';
    await page.getByLabel('File', { exact: true }).setInputFiles({ name: 'events.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
    await page.getByRole('button', { name: 'Upload' }).click();
    await page.getByRole('status').filter({ hasText: '2 accepted, 1 rejected.' }).waitFor();
    assert.equal(await page.locator('[data-row-status="2"]').textContent(), 'queued');
    assert.equal(await page.locator('[data-row-status="3"]').textContent(), 'rejected');
    assert.equal(await page.locator('[data-row-status="4"]').textContent(), 'queued');
    const rowThree = page.locator('tr', { has: page.locator('[data-row-status="3"]') });
    await rowThree.locator('code', { hasText: '/revenue' }).waitFor();
    await shot('upload');
  });

  await run('replay a dead-lettered event', async () => {
    await page.goto(`${BASE}/#/operations`);
    await page.getByRole('heading', { name: 'Failed events' }).waitFor();
    await page.getByRole('button', { name: DEAD[0] }).click();
    await page.getByTestId('event-status').filter({ hasText: 'DEAD_LETTER' }).waitFor();
    await page.getByRole('button', { name: `Replay ${DEAD[0]}` }).click();
    await page.getByText(`${DEAD[0]} was queued again.`).waitFor();
    await waitFor(async () => (await getJson(`/v1/admin/events/${DEAD[0]}`, ADMIN_KEY)).status === 'PROCESSED', `${DEAD[0]} processed after its replay`);
    await page.getByRole('button', { name: DEAD[0] }).click().catch(() => {});
    await shot('operations-replay');
  });

  await run('redrive: a dry run first, then the move', async () => {
    await page.getByTestId('dlq-depth').filter({ hasText: /^[1-9]/ }).waitFor();
    assert.equal(await page.getByRole('button', { name: /^Redrive/ }).isDisabled(), true, 'no redrive before a dry run');
    await page.getByRole('button', { name: 'Dry run', exact: true }).click();
    const dry = await page.getByTestId('redrive-dry').textContent();
    const wouldMove = Number(/(\d+) would move/.exec(dry)?.[1]);
    assert.ok(wouldMove >= 1, dry);
    assert.equal((await getJson('/v1/admin/metrics', ADMIN_KEY)).queues.deadLetterDepth, wouldMove, 'the dry run moved nothing');
    await page.getByRole('button', { name: `Redrive ${wouldMove} messages` }).click();
    await page.getByTestId('redrive-done').filter({ hasText: `Moved ${wouldMove}` }).waitFor();
    await waitFor(async () => (await getJson(`/v1/admin/events/${DEAD[1]}`, ADMIN_KEY)).status === 'PROCESSED', `${DEAD[1]} processed after the redrive`);
    await page.getByTestId('dlq-depth').filter({ hasText: /^0$/ }).waitFor();
    await shot('operations');
  });

  await run('every view passes an automated accessibility audit (axe, WCAG 2.1 A and AA)', async () => {
    // Evaluated through the browser's debugging protocol, which the page's policy does not govern.
    const axe = readFileSync('node_modules/axe-core/axe.min.js', 'utf8');
    const found = [];
    for (const view of ['overview', 'leads', `leads/${encodeURIComponent(`email:${DEAD[0]}@example.com`)}`, 'reports/events', 'reports/revenue', 'reports/demographics', 'reports/companies', 'rules', 'upload', 'operations']) {
      await page.goto(`${BASE}/#/${view}`);
      await page.locator('main h1').first().waitFor();
      await page.locator('.loading').first().waitFor({ state: 'detached' }).catch(() => {});
      await page.evaluate(axe);
      const result = await page.evaluate(() => window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }));
      for (const v of result.violations) found.push(`${view}: ${v.id} at ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
    }
    assert.deepEqual(found, [], 'axe found violations');
  });

  await run('every view at 390 px: no sideways scrolling, every control labelled', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    for (const view of ['overview', 'leads', 'reports/events', 'rules', 'upload', 'operations']) {
      await page.goto(`${BASE}/#/${view}`);
      await page.locator('main h1').first().waitFor();
      await page.locator('.loading').first().waitFor({ state: 'detached' }).catch(() => {});
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `${view} scrolls sideways by ${overflow} px at 390 px`);
      const unlabelled = await page.evaluate(() =>
        [...document.querySelectorAll('input, select, textarea, button')]
          .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim())))
          .map((el) => el.outerHTML.slice(0, 80)),
      );
      assert.deepEqual(unlabelled, [], `${view} has unlabelled controls`);
      await shot(`narrow-${view.replace('/', '-')}`);
    }
  });

  await run('sign out forgets the keys', async () => {
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key (read or admin)').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tally.keys')), null);
  });

  assert.deepEqual(problems, [], 'the page made no foreign request, broke no policy and threw nothing');
  console.log(`all ${steps.length} steps passed`);
} catch (error) {
  console.error(`not ok - ${step}: ${error.stack ?? error}`);
  if (problems.length) console.error(`also seen: ${problems.join('\n')}`);
  await shot('failure').catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}

async function assertRule(eventType, points) {
  await waitFor(async () => {
    const rules = await getJson('/v1/rules');
    return rules.rules.find((r) => r.eventType === eventType)?.points === points;
  }, `${eventType} at ${points} points`);
}

async function waitFor(check, what) {
  const deadline = Date.now() + TIMEOUT;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}
