// memgate dashboard: a client of the public JSON API, nothing more. No framework, no build step.
//
// Views are chosen by the URL fragment: #/threads (?resource=&page=), #/threads/ID, #/usage.
// Every string from the API reaches the page through textContent or an attribute, never as
// HTML, and the Content-Security-Policy forbids inline script besides.
'use strict';

const KEY_STORE = 'memgate.key';
const PAGE_SIZE = 20;
const MESSAGE_PAGE = 500;
const RECORD_POLL_MS = 5000;
const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f', '#bab0ac'];
/** Observation markers (🔴 🟡 🟢 ✅ in the text) drawn with CSS, so no emoji font is needed. */
const PRIORITY = {
  high: 'high priority',
  medium: 'medium priority',
  low: 'low priority',
  done: 'done',
};

/** Stops the current view's timers when another view opens. */
let viewTimers = [];

// ---- DOM helpers ----------------------------------------------------------------------------

/** An element with attributes (`class`, `on…` handlers, others as attributes) and children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, built the same way. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function $(id) {
  return document.getElementById(id);
}

function show(...nodes) {
  $('view').replaceChildren(...nodes);
}

/** Set when a notice must outlive the navigation that follows it ("Thread … deleted."). */
let keepNotice = false;

function notice(text, kind = 'error', keep = false) {
  keepNotice = keep;
  const n = $('notice');
  n.textContent = text;
  n.className = kind;
  n.hidden = !text;
}

// ---- the key and the API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** One pending key prompt shared by every request that met a 401 meanwhile. */
let keyPrompt = null;

function askKey(reason) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve, reject) => {
    const dialog = $('key-dialog');
    const form = $('key-form');
    const input = $('key-input');
    $('key-reason').textContent = reason || 'The API asks for a gateway key.';
    input.value = '';
    const done = (key) => {
      form.removeEventListener('submit', onSubmit);
      $('key-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      keyPrompt = null;
      if (key) resolve(key);
      else reject(new ApiError(401, 'A gateway key is needed to read this gateway.'));
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      showKeyState();
      done(key);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(null);
    };
    form.addEventListener('submit', onSubmit);
    $('key-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

function showKeyState() {
  const key = sessionStorage.getItem(KEY_STORE);
  // Not even a prefix of the key is shown: screenshots and screen shares travel.
  $('key-state').textContent = key ? 'key set for this tab' : 'no key';
  $('key-change').textContent = key ? 'change key' : 'set key';
  $('key-forget').hidden = !key;
}

/** Calls the API; on a 401 asks for a key (kept in sessionStorage) and tries again. */
async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `memgate did not answer (${e.message}); is it still running?`);
    }
    const data = await res.json().catch(() => null);
    const message = (data && data.error && data.error.message) || `${res.status} ${res.statusText}`;
    if (res.status === 401) {
      if (key) sessionStorage.removeItem(KEY_STORE);
      showKeyState();
      await askKey(key ? `That key was refused: ${message}` : message);
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, message);
    return data;
  }
}

// ---- confirm dialog ---------------------------------------------------------------------------

function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const dialog = $('confirm-dialog');
    const form = $('confirm-form');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = action;
    const done = (yes) => {
      form.removeEventListener('submit', onOk);
      $('confirm-cancel').removeEventListener('click', onNo);
      dialog.removeEventListener('cancel', onNo);
      if (dialog.open) dialog.close();
      resolve(yes);
    };
    const onOk = (e) => {
      e.preventDefault();
      done(true);
    };
    const onNo = (e) => {
      e.preventDefault();
      done(false);
    };
    form.addEventListener('submit', onOk);
    $('confirm-cancel').addEventListener('click', onNo);
    dialog.addEventListener('cancel', onNo);
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

// ---- formatting -------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, '0');

/** `2026-11-22 14:30` in the browser's time zone. */
function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function ago(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  if (!Number.isFinite(ms)) return '';
  const min = Math.round(ms / 60000);
  if (min < 1) return 'just now';
  if (min < 60) return `${min} min ago`;
  const hours = Math.round(min / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

const num = (n) => Number(n || 0).toLocaleString('en-US');

function threadLink(id) {
  return `#/threads/${encodeURIComponent(id)}`;
}

function listLink(resource, page) {
  const q = new URLSearchParams();
  if (resource) q.set('resource', resource);
  if (page) q.set('page', String(page));
  const qs = q.toString();
  return `#/threads${qs ? `?${qs}` : ''}`;
}

function failure(e, retry) {
  return h('div', { class: 'failure' },
    h('p', {}, e.message),
    retry && h('button', { type: 'button', onclick: retry }, 'Try again'));
}

// ---- threads list -----------------------------------------------------------------------------

async function threadsView(params) {
  const resource = params.get('resource') || '';
  const page = Math.max(0, parseInt(params.get('page') || '0', 10) || 0);
  const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(page * PAGE_SIZE) });
  if (resource) q.set('resourceId', resource);

  const filter = h('form', { class: 'filter', id: 'resource-filter' },
    h('label', { for: 'resource-input' }, 'Resource'),
    h('input', { id: 'resource-input', name: 'resource', value: resource, placeholder: 'all resources', spellcheck: 'false' }),
    h('button', { type: 'submit' }, 'Filter'),
    resource && h('a', { href: listLink('', 0), class: 'clear' }, 'show all'));
  filter.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = listLink($('resource-input').value.trim(), 0);
  });

  const heading = h('div', { class: 'heading' },
    h('h1', {}, resource ? `Threads of ${resource}` : 'Threads'),
    resource && h('button', {
      type: 'button', class: 'danger', id: 'erase-resource',
      onclick: () => eraseResource(resource),
    }, 'Erase resource…'));
  show(heading, filter, h('p', { class: 'muted' }, 'Loading threads…'));

  const data = await api('GET', `/v1/memory/threads?${q}`);
  const rows = data.threads.map((t) => h('tr', { dataset: { thread: t.id } },
    h('td', {}, h('a', { href: threadLink(t.id), class: 'thread-id' }, t.id),
      t.title && h('div', { class: 'muted small' }, t.title)),
    h('td', {}, h('a', { href: listLink(t.resourceId, 0), class: 'resource' }, t.resourceId)),
    h('td', { class: 'num' }, num(t.messageCount)),
    h('td', { title: t.updatedAt }, when(t.updatedAt), ' ', h('span', { class: 'muted small' }, ago(t.updatedAt)))));

  const first = data.total ? page * PAGE_SIZE + 1 : 0;
  const last = page * PAGE_SIZE + data.threads.length;
  const pager = h('div', { class: 'pager' },
    h('span', { class: 'muted', id: 'page-info' }, `${first}–${last} of ${num(data.total)}`),
    page > 0 && h('a', { href: listLink(resource, page - 1), class: 'button', id: 'previous-page' }, '← Previous'),
    data.hasMore && h('a', { href: listLink(resource, page + 1), class: 'button', id: 'next-page' }, 'Next →'));

  const table = data.threads.length
    ? h('table', { class: 'threads', id: 'threads' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'Thread'), h('th', {}, 'Resource'), h('th', { class: 'num' }, 'Messages'), h('th', {}, 'Last activity'))),
      h('tbody', {}, rows))
    : h('p', { class: 'empty', id: 'no-threads' },
      resource ? `No threads for resource ${resource}.` : 'No threads yet: send a chat request with x-thread-id and x-resource-id headers.');
  show(heading, filter, table, pager);
}

async function eraseResource(resource) {
  const yes = await confirmDialog(
    `Erase resource ${resource}?`,
    `Every thread of resource “${resource}”, with its messages and observations, is deleted for good. This cannot be undone.`,
    'Erase resource');
  if (!yes) return;
  try {
    const r = await api('DELETE', `/v1/memory/resources/${encodeURIComponent(resource)}`);
    const text = `Resource ${resource} erased: ${r.threads} thread${r.threads === 1 ? '' : 's'} deleted.`;
    const moving = location.hash !== listLink('', 0);
    notice(text, 'ok', moving);
    if (moving) location.hash = listLink('', 0);
    else route();
  } catch (e) {
    notice(e.message);
  }
}

// ---- one thread -------------------------------------------------------------------------------

/** Every message of a thread, oldest first, page by page. */
async function allMessages(id) {
  const out = [];
  for (let offset = 0; ; offset += MESSAGE_PAGE) {
    const page = await api('GET', `/v1/memory/threads/${encodeURIComponent(id)}/messages?limit=${MESSAGE_PAGE}&offset=${offset}`);
    out.push(...page.messages);
    if (!page.hasMore || !page.messages.length) return out;
  }
}

async function threadView(id) {
  const path = `/v1/memory/threads/${encodeURIComponent(id)}`;
  show(h('p', { class: 'muted' }, `Loading thread ${id}…`));
  const [thread, messages, observations, record, history] = await Promise.all([
    api('GET', path),
    allMessages(id),
    api('GET', `${path}/observations`),
    api('GET', `${path}/observations/record`),
    api('GET', `${path}/observations/history`),
  ]);

  const recordBox = h('section', { class: 'panel', id: 'record' });
  fillRecord(recordBox, record);
  const poll = setInterval(async () => {
    try {
      fillRecord(recordBox, await api('GET', `${path}/observations/record`));
    } catch (_) { /* the next tick tries again; a deleted thread stops with the view */ }
  }, RECORD_POLL_MS);
  viewTimers.push(poll);

  show(
    h('p', {}, h('a', { href: listLink(thread.resourceId, 0) }, `← Threads of ${thread.resourceId}`)),
    h('div', { class: 'heading' },
      h('h1', {}, 'Thread ', h('code', { id: 'thread-title' }, thread.id)),
      h('button', { type: 'button', class: 'danger', id: 'delete-thread', onclick: () => deleteThread(thread) }, 'Delete thread…')),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Resource'), h('dd', {}, h('a', { href: listLink(thread.resourceId, 0) }, thread.resourceId)),
      thread.title && [h('dt', {}, 'Title'), h('dd', {}, thread.title)],
      h('dt', {}, 'Messages'), h('dd', {}, num(thread.messageCount)),
      h('dt', {}, 'Created'), h('dd', { title: thread.createdAt }, when(thread.createdAt)),
      h('dt', {}, 'Last activity'), h('dd', { title: thread.updatedAt }, when(thread.updatedAt), ' ', h('span', { class: 'muted small' }, ago(thread.updatedAt)))),
    h('div', { class: 'columns' },
      h('section', { class: 'panel messages-panel' },
        h('h2', {}, `Messages (${messages.length})`),
        messages.length ? h('ol', { class: 'messages', id: 'messages' }, messages.map(messageItem))
          : h('p', { class: 'empty' }, 'No messages.')),
      h('div', { class: 'side' },
        recordBox,
        observationsPanel(observations),
        historyPanel(history))));
}

function messageItem(m) {
  const role = ['user', 'assistant', 'tool', 'system'].includes(m.role) ? m.role : 'other';
  return h('li', { class: `message role-${role}`, dataset: { role: m.role } },
    h('div', { class: 'meta' },
      h('span', { class: 'role' }, m.role),
      m.toolCallId && h('span', { class: 'muted small' }, `result of ${m.toolCallId}`),
      m.incomplete && h('span', { class: 'badge warn', title: 'The stream was cut short; this is what arrived.' }, 'incomplete'),
      h('time', { class: 'muted small', title: m.createdAt }, when(m.createdAt))),
    contentNode(m.content),
    (m.toolCalls || []).map((c) => h('div', { class: 'tool-call' },
      h('span', { class: 'small muted' }, 'calls '),
      h('code', {}, (c.function && c.function.name) || c.type || 'tool'),
      c.id && h('span', { class: 'small muted' }, ` (${c.id})`),
      c.function && c.function.arguments && h('pre', {}, prettyJson(c.function.arguments)))));
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return String(text);
  }
}

/** A message's content: a string, or OpenAI content parts (text shown, others named). */
function contentNode(content) {
  if (content === null || content === undefined || content === '') return null;
  if (typeof content === 'string') return h('div', { class: 'content' }, content);
  if (Array.isArray(content)) {
    return h('div', { class: 'content' }, content.map((p) => {
      if (p && typeof p.text === 'string') return h('p', {}, p.text);
      const kind = (p && p.type) || 'part';
      return h('p', { class: 'muted small' }, `[${kind}]`);
    }));
  }
  return h('pre', { class: 'content' }, JSON.stringify(content, null, 2));
}

function bar(label, value, limit, id) {
  const pct = limit ? Math.min(100, (100 * value) / limit) : 0;
  const fill = h('div', { class: `fill${value >= limit ? ' over' : ''}` });
  fill.style.width = `${pct}%`; // CSSOM, which the style-src policy permits (unlike style="")
  return h('div', { class: 'bar-row', id },
    h('div', { class: 'bar-label' }, h('span', {}, label), h('span', { class: 'num' }, `${num(value)} / ${num(limit)} tokens`)),
    h('div', { class: 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': limit, 'aria-valuenow': value, 'aria-label': label }, fill));
}

function fillRecord(box, r) {
  const running = (on, what) => h('span', { class: `badge ${on ? 'busy' : 'idle'}` }, `${what} ${on ? 'running' : 'idle'}`);
  box.replaceChildren(
    h('h2', {}, 'Memory record'),
    h('div', { class: 'badges', id: 'activity' }, running(r.isObserving, 'observer'), running(r.isReflecting, 'reflector'),
      h('span', { class: 'badge' }, `scope: ${r.scope}`)),
    bar('Pending messages → observer', r.pendingMessageTokens, r.config.messageTokens, 'bar-messages'),
    bar('Observations → reflector', r.observationTokenCount, r.config.observationTokens, 'bar-observations'),
    h('dl', { class: 'facts small' },
      h('dt', {}, 'Messages observed'), h('dd', {}, `${num(r.observedMessages)} (pending ${num(r.pendingMessages)})`),
      h('dt', {}, 'Generation'), h('dd', {}, num(r.generationCount)),
      h('dt', {}, 'Observer / reflector runs'), h('dd', {}, `${num(r.observerRuns)} / ${num(r.reflectorRuns)}`),
      h('dt', {}, 'Failures'), h('dd', { class: r.failures ? 'warn' : '' }, num(r.failures)),
      h('dt', {}, 'Last observed'), h('dd', { title: r.lastObservedAt || '' }, when(r.lastObservedAt)),
      h('dt', {}, 'Memory tokens'), h('dd', {}, `${num(r.memoryUsage.total_tokens)} (${num(r.memoryUsage.prompt_tokens)} in, ${num(r.memoryUsage.completion_tokens)} out)`)));
}

function observationsPanel(o) {
  const lines = o.lines || [];
  const groups = [];
  for (const line of lines) {
    const last = groups[groups.length - 1];
    if (last && last.date === line.date) last.lines.push(line);
    else groups.push({ date: line.date, lines: [line] });
  }
  return h('section', { class: 'panel', id: 'observations' },
    h('h2', {}, 'Observations', o.generation ? h('span', { class: 'muted small' }, ` generation ${o.generation}`) : null),
    o.currentTask && h('p', { class: 'task' }, h('strong', {}, 'Current task: '), o.currentTask),
    lines.length
      ? groups.map((g) => [
        g.date && h('h3', { class: 'obs-date' }, g.date),
        h('ul', { class: 'observations' }, g.lines.map((l) => {
          const name = PRIORITY[l.priority] || 'no priority';
          return h('li', { class: `obs priority-${l.priority || 'none'}`, dataset: { priority: l.priority || 'none' } },
            h('span', { class: 'marker', title: name, role: 'img', 'aria-label': name }, l.priority === 'done' ? '✓' : ''),
            l.time && h('time', { class: 'muted small' }, l.time),
            h('span', { class: 'text' }, l.text));
        })),
      ])
      : h('p', { class: 'empty' }, 'No observations yet: the observer runs once pending messages pass their threshold.'),
    o.updatedAt && h('p', { class: 'muted small' }, `Updated ${when(o.updatedAt)} · ${num(o.tokens)} tokens`));
}

function historyPanel(hist) {
  const gens = (hist.generations || []).slice().reverse();
  return h('section', { class: 'panel', id: 'history' },
    h('h2', {}, 'Generations'),
    gens.length
      ? gens.map((g) => h('details', { class: 'generation' },
        h('summary', {}, `Generation ${g.generation}`, ' ',
          h('span', { class: 'muted small' },
            `${num(g.tokens)} tokens · ${g.replacedAt ? `replaced ${when(g.replacedAt)}` : 'current'}`)),
        h('pre', {}, g.observations || '')))
      : h('p', { class: 'empty' }, 'No generations yet.'));
}

async function deleteThread(thread) {
  const yes = await confirmDialog(
    `Delete thread ${thread.id}?`,
    `Its ${thread.messageCount} messages and its observations are deleted for good. This cannot be undone.`,
    'Delete thread');
  if (!yes) return;
  try {
    await api('DELETE', `/v1/memory/threads/${encodeURIComponent(thread.id)}`);
    notice(`Thread ${thread.id} deleted.`, 'ok', true);
    location.hash = listLink(thread.resourceId, 0);
  } catch (e) {
    notice(e.message);
  }
}

// ---- usage ------------------------------------------------------------------------------------

const RANGES = {
  '24h': { label: 'Last 24 hours', hours: 24, bucket: 'hour' },
  '7d': { label: 'Last 7 days', hours: 24 * 7, bucket: 'day' },
  '30d': { label: 'Last 30 days', hours: 24 * 30, bucket: 'day' },
};
const SERIES = ['model', 'key', 'provider'];
const METRICS = {
  total_tokens: 'total tokens',
  prompt_tokens: 'prompt tokens',
  completion_tokens: 'completion tokens',
  requests: 'requests',
};
const TOTALS = ['requests', 'prompt_tokens', 'completion_tokens', 'total_tokens'];

async function usageView(params) {
  const range = RANGES[params.get('range')] ? params.get('range') : '24h';
  const by = SERIES.includes(params.get('by')) ? params.get('by') : 'model';
  const metric = METRICS[params.get('metric')] ? params.get('metric') : 'total_tokens';
  const { hours, bucket } = RANGES[range];
  const now = Date.now();
  // Buckets start on the hour (or the UTC day), as the API's rows do.
  const step = bucket === 'hour' ? 3600e3 : 86400e3;
  const end = Math.floor(now / step) * step;
  const start = end - (Math.ceil((hours * 3600e3) / step) - 1) * step;

  const choose = (name, value, options) => h('label', {}, `${name} `,
    h('select', {
      id: `usage-${name}`,
      onchange: (e) => {
        const q = new URLSearchParams({ range, by, metric });
        q.set(name, e.target.value);
        location.hash = `#/usage?${q}`;
      },
    }, Object.entries(options).map(([v, label]) => h('option', { value: v, selected: v === value }, label))));
  const controls = h('div', { class: 'filter' },
    choose('range', range, Object.fromEntries(Object.entries(RANGES).map(([k, v]) => [k, v.label]))),
    choose('by', by, Object.fromEntries(SERIES.map((x) => [x, `per ${x}`]))),
    choose('metric', metric, METRICS));
  show(h('h1', {}, 'Usage'), controls, h('p', { class: 'muted' }, 'Loading usage…'));

  const q = new URLSearchParams({ from: String(Math.floor(start / 1000)), group_by: `${bucket},${by}` });
  const [timed, totals] = await Promise.all([
    api('GET', `/v1/usage?${q}`),
    api('GET', `/v1/usage?${new URLSearchParams({ from: String(Math.floor(start / 1000)), group_by: by })}`),
  ]);

  const buckets = [];
  for (let t = start; t <= end; t += step) buckets.push(t);
  const bucketOf = (row) => Math.floor(Date.parse(bucket === 'hour' ? row.hour : `${row.day}T00:00:00Z`) / step) * step;
  const names = [...new Set(totals.data.map((r) => r[by]))].sort();
  const color = (name) => PALETTE[names.indexOf(name) % PALETTE.length];
  const series = (field) => names.map((name) => ({
    name,
    color: color(name),
    values: buckets.map((b) => timed.data
      .filter((r) => r[by] === name && bucketOf(r) === b)
      .reduce((sum, r) => sum + (r[field] || 0), 0)),
  }));
  const label = (t) => {
    const d = new Date(t);
    return bucket === 'hour' ? `${pad(d.getHours())}:00` : `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  };
  const noun = (x) => (x === 'key' ? 'gateway key' : x);
  const legend = names.length ? h('ul', { class: 'legend' }, names.map((n) => {
    const dot = s('svg', { width: 12, height: 12, 'aria-hidden': 'true' }, s('rect', { width: 12, height: 12, rx: 2, fill: color(n) }));
    return h('li', {}, dot, ' ', n || `(no ${noun(by)})`);
  })) : null;

  const memoryTotal = totals.data.reduce((sum, r) => sum + r.memory_tokens, 0);
  show(
    h('h1', {}, 'Usage'),
    controls,
    h('p', { class: 'muted small' },
      'From GET /v1/usage: the calling key’s own usage, per ', noun(by), ', in ', bucket === 'hour' ? 'hours (local time)' : 'UTC days', '.'),
    h('section', { class: 'panel' },
      h('h2', {}, `Requests’ ${METRICS[metric]} per ${noun(by)}`),
      chart(buckets, series(metric), label, 'usage-chart'),
      legend),
    h('section', { class: 'panel' },
      h('h2', {}, `Memory tokens per ${noun(by)}`),
      h('p', { class: 'muted small' }, 'What memory’s observer and reflector spent, counted apart from the requests’ tokens.'),
      memoryTotal ? chart(buckets, series('memory_tokens'), label, 'memory-chart') : h('p', { class: 'empty' }, 'No memory tokens in this range.')),
    h('section', { class: 'panel' },
      h('h2', {}, 'Totals'),
      totals.data.length ? h('table', { class: 'usage', id: 'usage-totals' },
        h('thead', {}, h('tr', {}, h('th', {}, noun(by)), TOTALS.map((m) => h('th', { class: 'num' }, METRICS[m])), h('th', { class: 'num' }, 'memory tokens'))),
        h('tbody', {}, totals.data.map((r) => h('tr', {},
          h('td', {}, h('span', { class: 'swatch-text' }, r[by] || `(no ${noun(by)})`)),
          TOTALS.map((m) => h('td', { class: 'num' }, num(r[m]))),
          h('td', { class: 'num' }, num(r.memory_tokens))))))
        : h('p', { class: 'empty' }, 'No usage recorded in this range.')));
}

/** A stacked bar chart in inline SVG: one bar per bucket, one colour per series. */
function chart(buckets, series, label, id) {
  const W = 1100;
  const H = 260;
  const left = 56;
  const bottom = 28;
  const top = 12;
  const plotW = W - left - 8;
  const plotH = H - top - bottom;
  const stacks = buckets.map((_, i) => series.reduce((sum, x) => sum + x.values[i], 0));
  const max = niceMax(Math.max(0, ...stacks));
  const y = (v) => top + plotH - (plotH * v) / max;
  const slot = plotW / buckets.length;
  const barW = Math.max(2, slot * 0.7);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', id, role: 'img', 'aria-label': `chart of ${buckets.length} buckets` });
  for (let k = 0; k <= 4; k += 1) {
    const v = (max * k) / 4;
    svg.append(s('line', { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, compact(v)));
  }
  const every = Math.ceil(buckets.length / 12);
  buckets.forEach((t, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let base = 0;
    for (const ser of series) {
      const v = ser.values[i];
      if (!v) continue;
      svg.append(s('rect', { x, y: y(base + v), width: barW, height: Math.max(0.5, y(base) - y(base + v)), fill: ser.color, class: 'segment' },
        s('title', {}, `${label(t)} · ${ser.name || '(none)'}: ${num(v)}`)));
      base += v;
    }
    if (i % every === 0) {
      svg.append(s('text', { x: x + barW / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis' }, label(t)));
    }
  });
  return svg;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function compact(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(1));
}

// ---- routing ----------------------------------------------------------------------------------

async function route() {
  viewTimers.forEach(clearInterval);
  viewTimers = [];
  const hash = location.hash || '#/threads';
  const [path, query] = hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  const usage = path === '/usage';
  $('nav-usage').classList.toggle('current', usage);
  $('nav-threads').classList.toggle('current', !usage);
  const run = () => {
    if (usage) return usageView(params);
    const m = path.match(/^\/threads\/(.+)$/);
    if (m) return threadView(decodeURIComponent(m[1]));
    return threadsView(params);
  };
  try {
    await run();
  } catch (e) {
    show(failure(e, route));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  showKeyState();
  $('key-change').addEventListener('click', () => askKey('Enter a gateway key.').then(route, () => {}));
  $('key-forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORE);
    showKeyState();
    route();
  });
  window.addEventListener('hashchange', () => {
    if (!keepNotice) notice('');
    keepNotice = false;
    route();
  });
  route();
});
