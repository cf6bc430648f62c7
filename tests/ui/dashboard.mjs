// Drives the dashboard in headless Chromium against a running memgate, as a person would:
// enter the key the page asks for, list threads, open one, delete it, erase a resource, look at
// usage. Run by tests/dashboard.rs, which starts memgate and stores the threads named below.
//
// Environment: MEMGATE_URL (http://127.0.0.1:PORT), MEMGATE_KEY (a gateway key), MEMGATE_SHOTS
// (a directory for the screenshots), CHROMIUM (default /usr/bin/chromium, Debian's package).
// Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
import { chromium } from 'playwright-core';
import { check, finish } from './checks.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.MEMGATE_URL;
const key = process.env.MEMGATE_KEY;
const shots = process.env.MEMGATE_SHOTS || 'target';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 15000;


const texts = (locator) => locator.allTextContents().then((t) => t.map((s) => s.trim()));

async function run(page, origin) {
  // Open mode would let the page in without a key; this gateway wants one, so the first API
  // call answers 401 and the page asks.
  await page.goto(`${base}/ui`);
  await page.locator('#key-dialog').waitFor({ state: 'visible' });
  check('a 401 from the API opens the key dialog', true);
  await page.fill('#key-input', key);
  await page.click('#key-submit');
  await page.locator('#threads').waitFor();
  const stored = await page.evaluate(() => [sessionStorage.getItem('memgate.key'), localStorage.length]);
  check('the key is kept in sessionStorage only', stored[0] === key && stored[1] === 0, JSON.stringify(stored));

  // The list, oldest first as the API gives it, 20 a page: the three chat threads and 17 of
  // the 18 "bulk" ones, then the last on page two.
  const ids = await texts(page.locator('#threads .thread-id'));
  check('the first page shows the chat threads first', ids.slice(0, 3).join(',') === 'alex-thread,sam-thread,weather-thread' && ids.length === 20, ids.join(','));
  const alexRow = page.locator('#threads tr[data-thread="alex-thread"]');
  const alexCells = await texts(alexRow.locator('td'));
  check('a row shows resource and message count', alexCells[1] === 'user-42' && alexCells[2] === '8', alexCells.join(' | '));
  check('the page count reads 1–20 of 21', (await page.textContent('#page-info')) === '1–20 of 21');
  await page.click('#next-page');
  await page.waitForFunction(() => document.querySelector('#page-info')?.textContent === '21–21 of 21');
  check('the next page holds the last thread', (await texts(page.locator('#threads .thread-id'))).join(',') === 'bulk-17');
  await page.click('#previous-page');
  await page.waitForFunction(() => document.querySelector('#page-info')?.textContent === '1–20 of 21');

  // One thread: messages in order, styled by role; observations with markers; record; history.
  await alexRow.locator('a.thread-id').click();
  await page.locator('#messages').waitFor();
  check('the thread page names the thread', (await page.textContent('#thread-title')) === 'alex-thread');
  const contents = await texts(page.locator('#messages .message .content'));
  check('messages appear in order', contents[0] === 'My name is Alex and I prefer concise answers.'
    && contents[1] === 'Nice to meet you! I\'ll keep answers short.'
    && contents[2] === 'What is my name?'
    && contents[3] === 'Your name is Alex.'
    && contents.length === 8, contents.join(' / '));
  const roles = await page.locator('#messages .message').evaluateAll((els) => els.map((e) => e.className));
  check('user and assistant messages are styled apart', roles[0].includes('role-user') && roles[1].includes('role-assistant'), roles.join(','));
  const bg = await page.locator('#messages .message').evaluateAll((els) => els.slice(0, 2).map((e) => getComputedStyle(e).backgroundColor));
  check('the stylesheet loaded (roles have different backgrounds)', bg[0] !== bg[1], bg.join(' vs '));
  const obs = await texts(page.locator('#observations .obs .text'));
  check('the observations are shown', obs.includes('User stated their name is Alex.') && obs.includes('User prefers concise answers.'), obs.join(' / '));
  const priorities = await page.locator('#observations .obs').evaluateAll((els) => els.map((e) => e.dataset.priority));
  check('observations carry their priority markers', priorities[0] === 'high' && priorities[1] === 'medium', priorities.join(','));
  const dates = await texts(page.locator('#observations .obs-date'));
  check('observations are grouped under their date', dates.length === 1 && /^[A-Z][a-z]{2} \d{1,2}, \d{4}$/.test(dates[0]), dates.join(','));
  check('the current task is shown', (await page.textContent('#observations .task')).includes('Primary: answer the user\'s questions about themselves'));
  const bar = await page.textContent('#bar-messages');
  check('the record shows pending tokens against the threshold', / \/ 60 tokens/.test(bar), bar);
  const width = await page.locator('#bar-messages .fill').evaluate((e) => e.getBoundingClientRect().width);
  check('the pending-tokens bar is drawn', width > 0, String(width));
  check('the record says whether the observer runs', (await page.textContent('#activity')).includes('observer idle'));
  check('the generation history lists generation 0', (await texts(page.locator('#history summary')))[0].startsWith('Generation 0'));

  const shot = join(shots, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  // Delete the thread: a confirm dialog, then back to its resource's (now empty) list.
  await page.click('#delete-thread');
  await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
  check('deleting asks first', (await page.textContent('#confirm-title')).includes('alex-thread'));
  await page.click('#confirm-ok');
  await page.locator('#no-threads').waitFor();
  check('the deleted thread is gone from the list', (await page.textContent('#notice')).includes('Thread alex-thread deleted.'));

  // Filter by resource, look at a thread with a tool call, then erase the resource.
  await page.click('a.clear');
  await page.locator('#threads').waitFor();
  await page.waitForFunction(() => document.querySelector('#page-info')?.textContent === '1–20 of 20');
  check('the list is one thread shorter', !(await texts(page.locator('#threads .thread-id'))).includes('alex-thread'));
  await page.fill('#resource-input', 'user-7');
  await page.click('#resource-filter button[type=submit]');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent === 'Threads of user-7');
  await page.locator('#threads').waitFor();
  check('filtering by resource keeps its threads', (await texts(page.locator('#threads .thread-id'))).sort().join(',') === 'sam-thread,weather-thread');
  await page.click('#threads a.thread-id >> text=weather-thread');
  await page.locator('#messages').waitFor();
  check('a tool result is styled as a tool message', (await page.locator('#messages .role-tool .content').textContent()).includes('temp_c'));
  check('an assistant tool call shows the function', (await page.locator('#messages .tool-call code').textContent()) === 'get_weather');
  await page.goBack();
  await page.locator('#erase-resource').waitFor();
  await page.click('#erase-resource');
  await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
  await page.click('#confirm-cancel');
  check('cancel leaves the resource alone', (await page.locator('#threads tbody tr').count()) === 2);
  await page.click('#erase-resource');
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.querySelector('#notice')?.textContent.includes('erased'));
  check('erasing the resource deletes its threads', (await page.textContent('#notice')) === 'Resource user-7 erased: 2 threads deleted.');
  await page.waitForFunction(() => document.querySelector('#page-info')?.textContent === '1–18 of 18');
  const left = await page.evaluate(async (k) => {
    const r = await fetch('/v1/memory/threads', { headers: { Authorization: `Bearer ${k}` } });
    return (await r.json()).total;
  }, key);
  check('the API agrees: only the bulk threads are left', left === 18, String(left));

  // Usage: tokens per model over time, memory's own tokens apart.
  await page.click('#nav-usage');
  await page.locator('#usage-chart').waitFor();
  check('the usage chart draws bars', (await page.locator('#usage-chart rect.segment').count()) > 0);
  check('memory tokens have their own chart', (await page.locator('#memory-chart rect.segment').count()) > 0);
  const models = await texts(page.locator('#usage-totals tbody td:first-child'));
  check('usage is listed per model', models.includes('openai/gpt-4o-mini'), models.join(','));
  await page.selectOption('#usage-by', 'key');
  await page.waitForFunction(() => document.querySelector('#usage-totals td')?.textContent === 'dash');
  check('usage can be split per key', true);
  const usageShot = join(shots, 'dashboard-usage.png');
  await page.screenshot({ path: usageShot, fullPage: true });
  console.log(`screenshot: ${usageShot}`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 60000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  mkdirSync(shots, { recursive: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'UTC', locale: 'en-US' });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const origin = new URL(base).origin;
  const errors = [];
  const elsewhere = [];
  const unkeyed = [];
  page.on('console', (m) => {
    // Chromium logs every non-2xx fetch; the 401 that asks for the key is expected.
    if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('request', (r) => {
    if (new URL(r.url()).origin !== origin) elsewhere.push(r.url());
    const path = new URL(r.url()).pathname;
    if (path.startsWith('/v1/') && r.headers().authorization !== `Bearer ${key}`) unkeyed.push(path);
  });
  try {
    await run(page, origin);
  } catch (e) {
    check('the walk-through finished', false, e.stack || String(e));
    await page.screenshot({ path: join(shots, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
  }
  check('no script errors or CSP violations', errors.length === 0, errors.join('\n'));
  check('nothing was fetched from another origin', elsewhere.length === 0, elsewhere.join(', '));
  // The first call goes without a key (none is known yet) and gets the 401; every later one has it.
  check('every API call after the prompt carries the key', unkeyed.length === 1, unkeyed.join(', '));
} finally {
  await browser.close();
}
finish();
