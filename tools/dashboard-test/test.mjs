// The live board in a real browser: Debian's chromium, driven by playwright-core,
// against the real pbx-server binary (PBX_SERVER_BIN). Run by tools/dashboard-test/run.sh.
//
// Every wait is for a condition in the page or the API (a row, a state, a status),
// bounded by a timeout; nothing sleeps. Every page collects its console errors and
// uncaught exceptions, and each test ends by asserting there were none.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chromium } from 'playwright-core';

const BIN = process.env.PBX_SERVER_BIN;
const CHROMIUM = process.env.PBX_CHROMIUM || '/usr/bin/chromium';
const DATABASE_URL = process.env.PBX_DASHBOARD_DATABASE_URL; // a fresh database, made by run.sh
const WAIT = 30_000;
if (!BIN) throw new Error('PBX_SERVER_BIN: the pbx-server binary to test');

// ---- servers ------------------------------------------------------------------

const servers = [];

async function startServer(args) {
  const child = spawn(BIN, args, { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { child, log: '', base: null };
  servers.push(server);
  const ready = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      server.log += chunk.toString();
      const m = server.log.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on (http:\/\/[0-9.]+:[0-9]+)/);
      if (m && !server.base) {
        server.base = m[1];
        resolve(server);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`pbx-server exited (${code}) before listening:\n${server.log}`)));
  });
  return ready;
}

async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  server.child.kill('SIGTERM');
  await once(server.child, 'exit');
}

const FAST_AI = ['--ai-latency-min', '0s', '--ai-latency-max', '0s', '--poll-interval', '100ms'];

// ---- the API, as the PBX and a supervisor's scripts see it ---------------------------

async function call(server, method, path, body, key) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(server.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const ingest = (server, id, seq, key) =>
  call(server, 'POST', `/ingest/${id}`, { sequence: seq, data: `audio_chunk_${seq}`, timestamp: seq * 0.02 }, key);
const hangUp = (server, id, key) => call(server, 'POST', `/v1/calls/${id}/complete`, undefined, key);

async function untilState(server, id, states, key) {
  // The API's own answer, re-read until it holds: bounded by WAIT.
  const deadline = Date.now() + WAIT;
  for (;;) {
    const c = await call(server, 'GET', `/v1/calls/${id}`, undefined, key);
    if (states.includes(c.state)) return c;
    if (Date.now() > deadline) throw new Error(`${id} stayed ${c.state}, wanted ${states}`);
    await new Promise((r) => setImmediate(r));
  }
}

// ---- the browser ---------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'],
});
after(async () => {
  await browser.close();
  for (const s of servers) await stopServer(s);
});

async function openBoard(server, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  const allowed = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !allowed.some((re) => re.test(m.text()))) errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
  await page.goto(server.base + '/');
  return { page, errors, allowed, context };
}

const row = (page, id) => page.locator(`#rows tr[data-call="${id}"]`);
const cell = (page, id, n) => row(page, id).locator('td').nth(n);
const waitText = (locator, text) => locator.filter({ hasText: text }).first().waitFor({ timeout: WAIT });
const statusIs = (page, status) => page.waitForSelector(`#status[data-status="${status}"]`, { timeout: WAIT });

// ---- an open server on the memory store ------------------------------------------

test('the board fills from the API, follows the feed live, and shows a call in full', async () => {
  const server = await startServer(['--bind', '127.0.0.1:0', '--store', 'memory', '--ai-failure-rate', '0', ...FAST_AI]);
  // Before the page: one call with a gap (2 never comes), a resend and a late packet.
  for (const seq of [1, 3, 4, 3, 6, 5]) await ingest(server, 'early-gappy', seq);
  await ingest(server, 'early-plain', 1);

  const { page, errors } = await openBoard(server);
  await statusIs(page, 'live');
  await row(page, 'early-plain').waitFor({ timeout: WAIT });
  await waitText(cell(page, 'early-gappy', 5), '1 · 1 · 1'); // missing · duplicates · out of order
  assert.equal(await cell(page, 'early-gappy', 4).textContent(), '5');

  // Live: a call that starts after the page loaded appears on top, without a reload.
  await ingest(server, 'live-1', 1);
  await row(page, 'live-1').waitFor({ timeout: WAIT });
  const ids = await page.locator('#rows tr[data-call]').evaluateAll((trs) => trs.map((t) => t.dataset.call));
  assert.deepEqual(ids, ['live-1', 'early-plain', 'early-gappy'], 'newest first');

  // Its frames count while it streams (in-order packets write no events: re-read).
  await ingest(server, 'live-1', 2);
  await waitText(cell(page, 'live-1', 4), '2');

  // A hang-up: the row follows the call through the AI to ARCHIVED, with sentiment.
  await hangUp(server, 'live-1');
  await waitText(cell(page, 'live-1', 1), 'ARCHIVED');
  assert.notEqual(await cell(page, 'live-1', 8).textContent(), '—', 'sentiment shown');

  // The detail: ordering, the AI's history as the board saw it, transcript, recording.
  await row(page, 'live-1').locator('button.open').click();
  await waitText(page.locator('#detail-body'), 'Transcript');
  const detail = await page.locator('#detail-body').textContent();
  assert.match(detail, /AI attempt 1 started/);
  assert.match(detail, /AI attempt 1 succeeded/);
  assert.match(detail, /IN_PROGRESS → COMPLETED/);
  await page.locator('#load-recording').click();
  const audio = page.locator('#player');
  await audio.waitFor({ timeout: WAIT });
  assert.match(await audio.getAttribute('src'), /^blob:/);
  await page.waitForFunction(() => document.getElementById('player').readyState >= 1, null, { timeout: WAIT });
  const seconds = await audio.evaluate((a) => a.duration);
  assert.ok(Math.abs(seconds - 0.04) < 0.005, `two 20 ms frames play 40 ms, got ${seconds}`);

  // The gappy call's missing range, in its detail.
  await row(page, 'early-gappy').locator('button.open').click();
  await waitText(page.locator('#detail-body'), 'missing ranges');
  assert.match(await page.locator('#detail-body').textContent(), /missing ranges2(?!\d)/);

  // Keyboard: arrows move between rows, Enter opens, Escape closes.
  await row(page, 'live-1').locator('button.open').focus();
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => document.activeElement.closest('tr').dataset.call), 'early-plain');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('detail-title').textContent === 'early-plain', null, { timeout: WAIT });
  await page.keyboard.press('Escape');
  assert.equal(await page.locator('#detail').isHidden(), true);

  // The state filter.
  await page.selectOption('#state-filter', 'ARCHIVED');
  await page.waitForFunction(() => document.querySelectorAll('#rows tr[data-call]').length === 1, null, { timeout: WAIT });
  assert.equal(await page.locator('#rows tr[data-call]').first().getAttribute('data-call'), 'live-1');
  await page.selectOption('#state-filter', '');

  assert.deepEqual(errors, []);
  await page.context().close();

  // Thousands of calls: all counted, a screenful rendered, the oldest reachable.
  const many = 3000;
  const batch = [];
  for (let i = 0; i < many; i++) batch.push(ingest(server, `bulk-${String(i).padStart(4, '0')}`, 1));
  await Promise.all(batch);
  const big = await openBoard(server);
  await big.page.waitForFunction(
    (n) => document.getElementById('shown').textContent === `${n.toLocaleString()} of ${n.toLocaleString()} calls`,
    many + 3,
    { timeout: WAIT },
  );
  const rendered = await big.page.locator('#rows tr[data-call]').count();
  assert.ok(rendered > 10 && rendered < 100, `a window of rows is rendered, not ${rendered}`);
  await big.page.locator('#scroll').evaluate((s) => (s.scrollTop = s.scrollHeight));
  await row(big.page, 'early-gappy').waitFor({ timeout: WAIT });

  // A phone: the table fits the screen's width.
  await big.page.setViewportSize({ width: 390, height: 844 });
  await big.page.locator('#scroll').evaluate((s) => (s.scrollTop = 0));
  await big.page.locator('#rows tr[data-call]').first().waitFor({ timeout: WAIT });
  const overflow = await big.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  assert.deepEqual(big.errors, []);
  await big.context.close();
  await stopServer(server);
});

// ---- API keys on, PostgreSQL, an AI that always fails --------------------------

test('with keys: sign-in, roles, re-drive, and a reconnect that resumes where it was', { skip: !DATABASE_URL && 'PBX_DASHBOARD_DATABASE_URL not set' }, async () => {
  const keys = ['--api-key', 'admin:board-admin', '--api-key', 'supervisor:board-super', '--api-key', 'ingest:board-ingest'];
  const args = ['--store', 'postgres', '--database-url', DATABASE_URL, '--ai-failure-rate', '1', '--retry-max-attempts', '1', ...keys, ...FAST_AI];
  let server = await startServer(['--bind', '127.0.0.1:0', ...args]);
  const port = new URL(server.base).port;
  await ingest(server, 'doomed-1', 1, 'board-ingest');
  await hangUp(server, 'doomed-1', 'board-ingest');
  await untilState(server, 'doomed-1', ['FAILED'], 'board-admin');

  const { page, errors, allowed, context } = await openBoard(server);
  // Keys are on: the page asks before its first call (no 401 in the console).
  await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
  // A wrong key is refused with a message (its 401 is the one console error we expect).
  allowed.push(/401/);
  await page.fill('#login-key', 'not-a-key');
  await page.click('#login-submit');
  await waitText(page.locator('#login-error'), 'not accepted');
  await page.fill('#login-key', 'board-ingest');
  await page.click('#login-submit');
  await waitText(page.locator('#login-error'), 'ingest role');
  allowed.pop();

  // A supervisor sees the FAILED call and its error, and no re-drive button.
  await page.fill('#login-key', 'board-super');
  await page.click('#login-submit');
  await statusIs(page, 'live');
  await waitText(cell(page, 'doomed-1', 1), 'FAILED');
  await row(page, 'doomed-1').locator('button.open').click();
  await waitText(page.locator('#detail-body'), 'last error');
  assert.match(await page.locator('#detail-body').textContent(), /simulated/i);
  assert.equal(await page.locator('#redrive').count(), 0, 'no re-drive for a supervisor');
  const stored = await page.evaluate(() => sessionStorage.getItem('pbx.dashboard.key'));
  assert.equal(stored, 'board-super');
  assert.ok(!page.url().includes('board-super'), 'the key is never in a URL');

  // An admin re-drives it: the AI runs again (and fails again, by design here).
  await page.click('#logout');
  await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
  await page.fill('#login-key', 'board-admin');
  await page.click('#login-submit');
  await statusIs(page, 'live');
  await row(page, 'doomed-1').locator('button.open').click();
  await page.locator('#redrive').click();
  await waitText(page.locator('#notice'), 're-driven');
  await waitText(page.locator('#detail-body'), 'AI attempt 2 failed');
  await waitText(cell(page, 'doomed-1', 1), 'FAILED');

  // The server restarts: the board says so, reconnects on its own with `since`, and
  // what happened meanwhile arrives without a reload.
  await stopServer(server);
  await statusIs(page, 'reconnecting');
  server = await startServer(['--bind', `127.0.0.1:${port}`, ...args]);
  await ingest(server, 'after-restart', 1, 'board-ingest');
  await statusIs(page, 'live');
  await row(page, 'after-restart').waitFor({ timeout: WAIT });
  assert.equal(await row(page, 'doomed-1').count(), 1, 'the rows from before are still there');

  // While the server was down the socket's errors are the browser's own, not ours.
  const ours = errors.filter((e) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(e));
  assert.deepEqual(ours, []);
  await context.close();
  await stopServer(server);
});
