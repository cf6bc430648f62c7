// Pages on other origins try to use an open gateway on loopback through the browser: chat (a
// no-cors POST with a Blob body, which has no Content-Type and needs no preflight), write into
// memory, read the thread list, delete a thread. Then the gateway's own dashboard, which must
// still work. Run by tests/dashboard.rs, which stores the threads named here and checks on the
// server afterwards that none of the attacks took effect.
//
// The other origins: a page on another port of 127.0.0.1 (same-site), one on localhost (another
// site), and a DNS-rebinding page: `attacker.example` resolved to 127.0.0.1 (Chromium's
// --host-resolver-rules stands in for the attacker's DNS), loaded from the gateway's own port,
// so that it is same-origin with the gateway as far as the browser knows.
//
// Environment: MEMGATE_URL (http://127.0.0.1:PORT), CHROMIUM (default /usr/bin/chromium).
// Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
import { chromium } from 'playwright-core';
import { check, finish } from './checks.mjs';
import { createServer } from 'node:http';

const base = process.env.MEMGATE_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const port = new URL(base).port;


// Everything a hostile page tries, against `gw` (its own origin when rebound). Returns what the
// page could see of each attempt.
async function attack(gw) {
  const blob = (v) => new Blob([JSON.stringify(v)]);
  const attempt = async (what, url, init) => {
    try {
      const r = await fetch(url, init);
      // An opaque (no-cors) answer shows nothing; a readable one shows status and body.
      return `${what}: ${r.type} ${r.status} ${r.type === 'opaque' ? '' : await r.text()}`;
    } catch (e) {
      return `${what}: refused by the browser (${e.name})`;
    }
  };
  const noCors = (body) => ({ method: 'POST', mode: 'no-cors', body: blob(body) });
  return [
    await attempt('chat', `${gw}/v1/chat/completions`, noCors({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'What is my name?' }] })),
    await attempt('create', `${gw}/v1/memory/threads`, noCors({ id: 'planted', resourceId: 'user-42' })),
    await attempt('inject', `${gw}/v1/memory/threads/victim/messages`, noCors({ messages: [{ role: 'user', content: 'injected' }] })),
    await attempt('read', `${gw}/v1/memory/threads`, {}),
    await attempt('delete', `${gw}/v1/memory/threads/victim`, { method: 'DELETE' }),
  ];
}

// A page on another origin: what a site the user visits would serve.
const elsewhere = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>elsewhere</title><p>an ordinary web page</p>');
});
await new Promise((ok) => elsewhere.listen(0, '127.0.0.1', ok));
const otherPort = elsewhere.address().port;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 60000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--host-resolver-rules=MAP attacker.example 127.0.0.1'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  for (const [name, url, gw] of [
    ['another port of 127.0.0.1 (same site)', `http://127.0.0.1:${otherPort}/`, base],
    ['localhost (another site)', `http://localhost:${otherPort}/`, base],
    ['a rebinding name on the gateway\'s port', `http://attacker.example:${port}/`, `http://attacker.example:${port}`],
  ]) {
    await page.goto(url);
    const seen = await page.evaluate(attack, gw);
    console.log(`# from ${name}:\n#   ${seen.join('\n#   ')}`);
    check(`a page on ${name} reads no thread`, !seen.some((s) => s.includes('victim') || s.includes('"threads"')), seen.join(' | '));
    check(`a page on ${name} gets no answer from a route`, !seen.some((s) => / (200|201) /.test(s)), seen.join(' | '));
  }

  // The gateway's own dashboard, opened by its address: lists, opens and deletes as before.
  await page.goto(`${base}/ui`);
  await page.locator('#threads').waitFor();
  const ids = (await page.locator('#threads .thread-id').allTextContents()).map((s) => s.trim()).sort();
  check('the dashboard lists the threads', ids.join(',') === 'doomed,victim', ids.join(','));
  await page.click('#threads a.thread-id >> text=doomed');
  await page.locator('#delete-thread').waitFor();
  await page.click('#delete-thread');
  await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.querySelector('#notice')?.textContent.includes('deleted'));
  check('the dashboard deletes a thread', (await page.textContent('#notice')).includes('Thread doomed deleted.'));
} catch (e) {
  check('the walk-through finished', false, e.stack || String(e));
} finally {
  await browser.close();
  elsewhere.close();
}
finish();
