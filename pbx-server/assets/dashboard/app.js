// pbx live board: the call table from GET /v1/calls, kept live by GET /v1/events/ws.
// No dependencies, nothing fetched but this server's own API (see CONVENTIONS §10).
//
// Consistency: the socket is opened first and its messages held until the snapshot
// (every page of GET /v1/calls) has loaded, then applied; a state change is applied
// when it starts from the row's state or is newer than the row, so a message older
// than the snapshot never moves a row back. Reconnects resume with `since` = the last
// id seen; `resync` reloads the snapshot. In-order packets write no events, so visible
// calls that still stream are re-read every few seconds for their frame counts.

const ROW_HEIGHT = 36;
const OVERSCAN = 12;
const PAGE_LIMIT = 1000;
const MAX_PAGES = 100; // 100,000 calls in the snapshot at most
const REFRESH_EVERY_MS = 3000;
const MAX_HISTORY = 50;
const STATES = ['IN_PROGRESS', 'COMPLETED', 'PROCESSING_AI', 'ARCHIVED', 'FAILED'];
const TERMINAL = new Set(['ARCHIVED', 'FAILED']);
const KEY_STORAGE = 'pbx.dashboard.key';

const $ = (id) => document.getElementById(id);

const board = {
  authRequired: false,
  key: sessionStorage.getItem(KEY_STORAGE),
  role: null,
  calls: new Map(), // call_id -> row
  order: [], // call ids, newest first
  view: [], // order filtered
  viewDirty: true,
  selected: null,
  detail: null, // the selected call's CallView
  history: new Map(), // call_id -> [{at, text}]
  dirty: new Set(), // calls to re-read
  inflight: 0,
  lastId: null,
  socket: null,
  snapshotLoaded: false,
  held: [],
  status: 'connecting',
  laggedUntil: 0,
  retryDelay: 500,
  generation: 0, // bumps on sign-out: stale loops stop
  recordingUrl: null,
};

// ---- HTTP -------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (board.key) h.Authorization = `Bearer ${board.key}`;
  return h;
}

async function api(path, { method = 'GET', body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  if (!res.ok) {
    let error = {};
    try {
      error = await res.json();
    } catch {
      // not JSON: the status says enough
    }
    throw new HttpError(res.status, error.error, error.message);
  }
  return res.json();
}

// ---- DOM helpers ------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function notice(text, kind = 'info') {
  const el = $('notice');
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

// ---- formatting -------------------------------------------------------------

const ms = (t) => (t ? Date.parse(t) : NaN);

function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

function duration(row) {
  const end = row.completed_at ? ms(row.completed_at) : row.state === 'IN_PROGRESS' ? Date.now() : ms(row.last_packet_at);
  return (end - ms(row.created_at)) / 1000;
}

function fmtRetry(row) {
  if (!row.next_attempt_at || TERMINAL.has(row.state) || row.state === 'IN_PROGRESS') return '—';
  const inSeconds = (ms(row.next_attempt_at) - Date.now()) / 1000;
  return inSeconds > 0 ? `in ${fmtDuration(inSeconds)}` : 'due';
}

function fmtSentiment(s) {
  return s ? `${s.label.toLowerCase()} ${s.score >= 0 ? '+' : ''}${s.score.toFixed(2)}` : '—';
}

// ---- the rows ---------------------------------------------------------------

function rowFromSummary(s) {
  return {
    call_id: s.call_id,
    state: s.state,
    received: s.received,
    highest: s.highest,
    missing: s.missing,
    duplicates: s.duplicates,
    out_of_order: s.out_of_order,
    attempts: s.attempts,
    next_attempt_at: s.next_attempt_at,
    sentiment: s.sentiment,
    created_at: s.created_at,
    last_packet_at: s.last_packet_at,
    completed_at: s.completed_at,
    updated_at: s.updated_at,
  };
}

function rowFromCall(c) {
  return rowFromSummary({
    ...c,
    received: c.ordering.received,
    highest: c.ordering.highest,
    missing: c.ordering.missing,
    duplicates: c.ordering.duplicates,
    out_of_order: c.ordering.out_of_order,
  });
}

function newer(a, b) {
  // created_at descending, then id: newest first, stable.
  const d = ms(b.created_at) - ms(a.created_at);
  return d !== 0 ? d : a.call_id < b.call_id ? -1 : a.call_id > b.call_id ? 1 : 0;
}

function upsert(row) {
  const had = board.calls.get(row.call_id);
  board.calls.set(row.call_id, had ? Object.assign(had, row) : row);
  if (!had) {
    // Binary search: new calls almost always go to the front.
    let lo = 0;
    let hi = board.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (newer(board.calls.get(board.order[mid]), row) < 0) lo = mid + 1;
      else hi = mid;
    }
    board.order.splice(lo, 0, row.call_id);
  }
  board.viewDirty = true;
  scheduleRender();
}

function remember(callId, text, at) {
  let list = board.history.get(callId);
  if (!list) board.history.set(callId, (list = []));
  list.push({ at, text });
  if (list.length > MAX_HISTORY) list.shift();
}

function markDirty(callId) {
  board.dirty.add(callId);
  pump();
}

// ---- the snapshot -----------------------------------------------------------

async function loadSnapshot() {
  const generation = board.generation;
  const rows = [];
  let cursor = '';
  let truncated = false;
  for (let page = 0; ; page++) {
    if (page === MAX_PAGES) {
      truncated = true;
      break;
    }
    const q = new URLSearchParams({ limit: String(PAGE_LIMIT) });
    if (cursor) q.set('cursor', cursor);
    const answer = await api(`/v1/calls?${q}`);
    if (generation !== board.generation) return;
    rows.push(...answer.calls);
    if (!answer.next_cursor) break;
    cursor = answer.next_cursor;
  }
  board.calls.clear();
  for (const s of rows) board.calls.set(s.call_id, rowFromSummary(s));
  board.order = [...board.calls.values()].sort(newer).map((r) => r.call_id);
  board.viewDirty = true;
  board.snapshotLoaded = true;
  if (truncated) notice(`Showing the first ${(MAX_PAGES * PAGE_LIMIT).toLocaleString()} calls by id, and every new one.`);
  const held = board.held;
  board.held = [];
  for (const m of held) apply(m);
  scheduleRender();
}

// ---- the feed ---------------------------------------------------------------

function setStatus(status) {
  board.status = status;
  const el = $('status');
  el.dataset.status = status;
  el.textContent = status;
  $('cursor').textContent = board.lastId === null ? '' : `#${board.lastId}`;
}

async function connect() {
  const generation = board.generation;
  const q = new URLSearchParams();
  if (board.lastId !== null) q.set('since', String(board.lastId));
  try {
    if (board.authRequired) {
      const ticket = await api('/v1/events/ticket', { method: 'POST' });
      board.role = ticket.role;
      q.set('ticket', ticket.ticket);
    }
  } catch (e) {
    if (generation !== board.generation) return;
    if (e.status === 401) return signIn('Your key is no longer accepted.');
    return reconnectLater();
  }
  if (generation !== board.generation) return;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/v1/events/ws?${q}`);
  board.socket = socket;
  socket.addEventListener('open', () => {
    board.retryDelay = 500;
    setStatus('live');
    if (!board.snapshotLoaded) {
      loadSnapshot().catch((e) => failed(e));
    }
  });
  socket.addEventListener('message', (e) => {
    let m;
    try {
      m = JSON.parse(e.data);
    } catch {
      return;
    }
    if (!board.snapshotLoaded && m.type !== 'resync') board.held.push(m);
    else apply(m);
  });
  socket.addEventListener('close', () => {
    if (board.socket !== socket || generation !== board.generation) return;
    board.socket = null;
    reconnectLater();
  });
}

function reconnectLater() {
  setStatus('reconnecting');
  const delay = board.retryDelay * (0.5 + Math.random());
  board.retryDelay = Math.min(board.retryDelay * 2, 10000);
  const generation = board.generation;
  setTimeout(() => {
    if (generation === board.generation) connect();
  }, delay);
}

function failed(e) {
  if (e.status === 401) return signIn('Your key is no longer accepted.');
  if (e.status === 403) return notice('This key may not read calls: it needs the supervisor or admin role.', 'error');
  notice(`Could not load the calls: ${e.message}`, 'error');
}

function apply(m) {
  if (typeof m.id === 'number') board.lastId = m.id;
  if (m.type === 'resync') {
    board.snapshotLoaded = false;
    loadSnapshot().catch((e) => failed(e));
    setStatus(board.status);
    return;
  }
  if (m.type === 'lagged') {
    board.laggedUntil = Date.now() + 5000;
    setStatus('lagging');
    return;
  }
  if (board.status === 'lagging' && Date.now() > board.laggedUntil) setStatus('live');
  const row = board.calls.get(m.call_id);
  const at = m.at;
  switch (m.type) {
    case 'call_created':
      remember(m.call_id, 'created', at);
      if (!row) {
        upsert({
          call_id: m.call_id,
          state: m.state || 'IN_PROGRESS',
          received: 0,
          highest: 0,
          missing: 0,
          duplicates: 0,
          out_of_order: 0,
          attempts: 0,
          next_attempt_at: null,
          sentiment: null,
          created_at: at,
          last_packet_at: at,
          completed_at: null,
          updated_at: at,
        });
      }
      break;
    case 'state_changed':
      remember(m.call_id, `${m.from} → ${m.to}`, at);
      if (row && (row.state === m.from || ms(at) > ms(row.updated_at))) {
        row.state = m.to;
        row.updated_at = at;
        if (m.to === 'COMPLETED' && !row.completed_at) row.completed_at = at;
        board.viewDirty = true;
      }
      break;
    case 'ordering_anomaly':
      if (row && m.channel === 0 && m.received >= row.received) {
        Object.assign(row, {
          received: m.received,
          highest: m.highest,
          missing: m.missing,
          duplicates: m.duplicates,
          out_of_order: m.out_of_order,
        });
      }
      break;
    case 'attempt_started':
      remember(m.call_id, `AI attempt ${m.attempt} started${m.rescued ? ' (rescued from a crashed worker)' : ''}`, at);
      if (row) row.attempts = Math.max(row.attempts, m.attempt);
      break;
    case 'attempt_failed':
      remember(
        m.call_id,
        `AI attempt ${m.attempt} failed: ${m.error}` +
          (m.gave_up ? ' (gave up)' : m.retry_at ? ` (retry at ${fmtTime(m.retry_at)})` : ''),
        at,
      );
      if (row) row.next_attempt_at = m.retry_at;
      break;
    case 'attempt_succeeded':
      remember(m.call_id, `AI attempt ${m.attempt} succeeded`, at);
      break;
    case 'transcript_ready':
      remember(m.call_id, 'transcript ready', at);
      if (row) row.sentiment = m.sentiment;
      break;
    case 'redriven':
      remember(m.call_id, 're-driven', at);
      break;
    case 'stream_started':
      remember(m.call_id, `${m.protocol} stream ${m.stream_id} started`, at);
      break;
    case 'stream_ended':
      remember(m.call_id, `${m.protocol} stream ${m.stream_id} ended: ${m.reason}`, at);
      break;
    default:
      return; // a type this board does not know yet
  }
  // Read the call back when the event leaves something the message does not carry
  // (final counters on hang-up, a call outside the snapshot), or it is on screen.
  if (!row || m.call_id === board.selected || m.type === 'state_changed') markDirty(m.call_id);
  scheduleRender();
}

// ---- re-reading calls -------------------------------------------------------

function pump() {
  const generation = board.generation;
  while (board.inflight < 4 && board.dirty.size) {
    // The selected call first, then what is on screen, then the rest.
    const visible = visibleIds();
    let next = board.dirty.has(board.selected) ? board.selected : null;
    if (!next) next = visible.find((id) => board.dirty.has(id)) || board.dirty.values().next().value;
    board.dirty.delete(next);
    board.inflight++;
    api(`/v1/calls/${encodeURIComponent(next)}`)
      .then((call) => {
        if (generation !== board.generation) return;
        upsert(rowFromCall(call));
        if (call.call_id === board.selected) showDetail(call);
      })
      .catch((e) => {
        if (e.status === 401) signIn('Your key is no longer accepted.');
      })
      .finally(() => {
        board.inflight--;
        if (board.dirty.size) setTimeout(pump, 50);
      });
  }
}

// Calls that still stream write no events for in-order packets: re-read what is shown.
function refreshVisible() {
  for (const id of visibleIds()) {
    const row = board.calls.get(id);
    if (row && !TERMINAL.has(row.state)) board.dirty.add(id);
  }
  pump();
}

// ---- rendering --------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function currentView() {
  if (!board.viewDirty) return board.view;
  const state = $('state-filter').value;
  const search = $('search').value.trim();
  board.view = board.order.filter((id) => {
    if (search && !id.includes(search)) return false;
    return !state || board.calls.get(id).state === state;
  });
  board.viewDirty = false;
  return board.view;
}

function visibleRange() {
  const scroll = $('scroll');
  const head = $('calls').tHead.offsetHeight;
  const first = Math.max(0, Math.floor((scroll.scrollTop - head) / ROW_HEIGHT) - OVERSCAN);
  const count = Math.ceil(scroll.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN;
  return [first, Math.min(currentView().length, first + count)];
}

function visibleIds() {
  const [a, b] = visibleRange();
  return currentView().slice(a, b);
}

function spacer(height) {
  const tr = h('tr', { class: 'spacer', 'aria-hidden': 'true' }, h('td', { colspan: '9' }));
  tr.style.height = `${height}px`;
  return tr;
}

function renderRow(row, index) {
  const selected = row.call_id === board.selected;
  const tr = h(
    'tr',
    { 'aria-rowindex': String(index + 2), 'data-call': row.call_id, class: selected ? 'selected' : undefined },
    h(
      'td',
      { class: 'call' },
      h('button', { type: 'button', class: 'open', 'aria-pressed': selected ? 'true' : 'false', text: row.call_id }),
    ),
    h('td', {}, h('span', { class: `state s-${row.state}`, text: row.state.replace('_', ' ') })),
    h('td', { class: 'c-started', text: fmtTime(row.created_at) }),
    h('td', { class: 'c-duration', text: fmtDuration(duration(row)) }),
    h('td', { class: 'num', text: row.received.toLocaleString() }),
    h(
      'td',
      { class: 'num c-order' + (row.missing || row.duplicates || row.out_of_order ? ' warn' : '') },
      `${row.missing} · ${row.duplicates} · ${row.out_of_order}`,
    ),
    h('td', { class: 'num c-ai', text: String(row.attempts) }),
    h('td', { class: 'c-retry', text: fmtRetry(row) }),
    h('td', { class: 'c-sentiment', text: fmtSentiment(row.sentiment) }),
  );
  tr.style.height = `${ROW_HEIGHT}px`;
  return tr;
}

function render() {
  const view = currentView();
  const [a, b] = visibleRange();
  const body = $('rows');
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('tr');
  const focusedId = focused && focused.dataset ? focused.dataset.call : null;
  const rows = [spacer(a * ROW_HEIGHT)];
  for (let i = a; i < b; i++) rows.push(renderRow(board.calls.get(view[i]), i));
  rows.push(spacer((view.length - b) * ROW_HEIGHT));
  body.replaceChildren(...rows);
  if (focusedId) {
    const again = body.querySelector(`tr[data-call="${CSS.escape(focusedId)}"] button`);
    if (again) again.focus({ preventScroll: true });
  }
  $('calls').setAttribute('aria-rowcount', String(view.length + 1));
  $('empty').hidden = board.order.length > 0 || !board.snapshotLoaded;
  $('shown').textContent = board.snapshotLoaded ? `${view.length.toLocaleString()} of ${board.order.length.toLocaleString()} calls` : 'loading…';
  renderCounts();
}

function renderCounts() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const row of board.calls.values()) counts[row.state] = (counts[row.state] || 0) + 1;
  $('counts').replaceChildren(
    ...STATES.map((s) => h('span', { class: `count s-${s}` }, h('b', { text: counts[s].toLocaleString() }), ` ${s.replace('_', ' ').toLowerCase()}`)),
  );
}

// ---- the detail pane --------------------------------------------------------

function select(callId) {
  if (board.selected !== callId) dropRecording();
  board.selected = callId;
  $('detail').hidden = false;
  $('detail-title').textContent = callId;
  if (!board.detail || board.detail.call_id !== callId) $('detail-body').replaceChildren(h('p', { text: 'loading…' }));
  board.dirty.add(callId);
  pump();
  scheduleRender();
}

function closeDetail() {
  const id = board.selected;
  board.selected = null;
  board.detail = null;
  dropRecording();
  $('detail').hidden = true;
  scheduleRender();
  const button = id && $('rows').querySelector(`tr[data-call="${CSS.escape(id)}"] button`);
  if (button) button.focus();
}

function dropRecording() {
  if (board.recordingUrl) URL.revokeObjectURL(board.recordingUrl);
  board.recordingUrl = null;
}

function dl(pairs) {
  return h('dl', {}, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v ?? '—')]));
}

function orderingBlock(o, label) {
  const ranges = o.missing_ranges.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}–${r.last}`));
  return h(
    'div',
    { class: 'channel' },
    h('h4', { text: label }),
    dl([
      ['received', o.received.toLocaleString()],
      ['highest', o.highest.toLocaleString()],
      ['missing', o.missing.toLocaleString()],
      ['duplicates', o.duplicates.toLocaleString()],
      ['out of order', o.out_of_order.toLocaleString()],
      o.missing ? ['missing ranges', ranges.join(', ') + (o.missing_ranges_truncated ? ', …' : '')] : null,
    ]),
  );
}

function showDetail(call) {
  const sameCall = board.detail && board.detail.call_id === call.call_id;
  board.detail = call;
  const canRedrive = board.role === 'admin' || !board.authRequired;
  const history = board.history.get(call.call_id) || [];
  const player = $('player');
  const keepPlayer = sameCall && player ? player.closest('section') : null;
  const sections = [
    h(
      'section',
      {},
      h('h3', { text: 'Call' }),
      dl([
        ['state', h('span', { class: `state s-${call.state}`, text: call.state })],
        ['media format', `${call.media_format}${call.media_format_declared ? '' : ' (server default)'}`],
        ['started', fmtTime(call.created_at)],
        ['last packet', fmtTime(call.last_packet_at)],
        ['hung up', fmtTime(call.completed_at)],
        ['finished', fmtTime(call.finished_at)],
      ]),
      call.state === 'FAILED' && canRedrive
        ? h('button', { type: 'button', id: 'redrive', class: 'primary', onclick: () => redrive(call.call_id), text: 'Re-drive AI processing' })
        : null,
    ),
    h(
      'section',
      {},
      h('h3', { text: 'Ordering' }),
      call.channels.length > 1
        ? call.channels.map((o, i) => orderingBlock(o, i === 0 ? 'channel 0 (inbound)' : `channel ${i}${i === 1 ? ' (outbound)' : ''}`))
        : orderingBlock(call.ordering, 'channel 0'),
    ),
    h(
      'section',
      {},
      h('h3', { text: 'AI' }),
      dl([
        ['attempts', String(call.attempts)],
        ['failures', String(call.failures)],
        ['next attempt', TERMINAL.has(call.state) ? '—' : fmtTime(call.next_attempt_at)],
        ['worker', call.lease ? `${call.lease.owner} (lease until ${fmtTime(call.lease.expires_at)})` : '—'],
        ['last error', call.last_error || '—'],
      ]),
      history.length
        ? h('ol', { class: 'history', 'aria-label': 'What this board saw happen' }, history.map((e) => h('li', {}, h('time', { text: fmtTime(e.at) }), ' ', e.text)))
        : null,
    ),
    call.transcript !== null
      ? h(
          'section',
          {},
          h('h3', { text: 'Transcript' }),
          dl([
            ['sentiment', fmtSentiment(call.sentiment)],
            ...call.channel_sentiment.map((c) => [`channel ${c.channel}`, fmtSentiment(c.sentiment)]),
          ]),
          h('p', { class: 'transcript', text: call.transcript || '(nothing was said)' }),
          call.segments.length
            ? h(
                'ol',
                { class: 'segments' },
                call.segments.map((s) =>
                  h(
                    'li',
                    {},
                    h('span', { class: 'when', text: `${s.start.toFixed(1)}–${s.end.toFixed(1)} s` }),
                    s.channel === null ? '' : h('span', { class: 'ch', text: `ch ${s.channel}` }),
                    ' ',
                    s.text,
                  ),
                ),
              )
            : null,
          call.audio ? h('p', { class: 'muted', text: `audio: ${call.audio.frames} frames, ${call.audio.gaps} gaps, ${call.audio.undecodable} undecodable` }) : null,
        )
      : null,
    keepPlayer ||
      h(
        'section',
        {},
        h('h3', { text: 'Recording' }),
        h('button', { type: 'button', id: 'load-recording', onclick: () => loadRecording(call.call_id), text: call.state === 'IN_PROGRESS' ? 'Load the recording so far' : 'Load the recording' }),
        h('p', { id: 'recording-error', class: 'error', hidden: true }),
      ),
  ];
  $('detail-title').textContent = call.call_id;
  $('detail-body').replaceChildren(...sections.filter(Boolean));
}

async function loadRecording(callId) {
  const button = $('load-recording');
  const errorEl = $('recording-error');
  button.disabled = true;
  errorEl.hidden = true;
  try {
    const res = await fetch(`/v1/calls/${encodeURIComponent(callId)}/recording.wav`, { headers: headers() });
    if (!res.ok) {
      let body = {};
      try {
        body = await res.json();
      } catch {
        // not JSON
      }
      throw new HttpError(res.status, body.error, body.message);
    }
    const blob = await res.blob();
    if (board.selected !== callId) return;
    dropRecording();
    board.recordingUrl = URL.createObjectURL(blob);
    const audio = h('audio', { id: 'player', controls: true, preload: 'metadata', src: board.recordingUrl, 'aria-label': `Recording of ${callId}` });
    button.replaceWith(audio);
  } catch (e) {
    button.disabled = false;
    errorEl.textContent = `No recording: ${e.message}`;
    errorEl.hidden = false;
  }
}

async function redrive(callId) {
  const button = $('redrive');
  if (button) button.disabled = true;
  try {
    await api(`/v1/calls/${encodeURIComponent(callId)}/retry`, { method: 'POST' });
    notice(`${callId}: re-driven; its AI work runs again.`);
  } catch (e) {
    if (button) button.disabled = false;
    notice(e.status === 403 ? 'Re-drive needs a key with the admin role.' : `Re-drive failed: ${e.message}`, 'error');
  }
  markDirty(callId);
}

// ---- signing in ---------------------------------------------------------------

function signIn(message) {
  board.generation++;
  if (board.socket) board.socket.close(1000);
  board.socket = null;
  board.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  setStatus('signed out');
  const error = $('login-error');
  error.textContent = message || '';
  error.hidden = !message;
  $('logout').hidden = true;
  const dialog = $('login');
  if (!dialog.open) dialog.showModal();
  $('login-key').focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const key = $('login-key').value.trim();
  if (!key) return;
  board.key = key;
  const error = $('login-error');
  try {
    // Any key gets a ticket: it says the key's role, and that the key is good.
    const ticket = await api('/v1/events/ticket', { method: 'POST' });
    if (ticket.role === 'ingest') throw new HttpError(403, 'forbidden', 'This key has the ingest role; the board needs supervisor or admin.');
    board.role = ticket.role;
  } catch (e) {
    board.key = null;
    error.textContent = e.status === 401 ? 'This key is not accepted.' : e.message;
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $('login-key').value = '';
  $('login').close();
  start();
}

// ---- start ------------------------------------------------------------------

function start() {
  board.generation++;
  board.snapshotLoaded = false;
  board.lastId = null;
  board.held = [];
  $('logout').hidden = !board.authRequired;
  setStatus('connecting');
  connect();
}

function moveFocus(from, delta) {
  const view = currentView();
  const index = view.indexOf(from) + delta;
  if (index < 0 || index >= view.length) return;
  const scroll = $('scroll');
  const top = $('calls').tHead.offsetHeight + index * ROW_HEIGHT;
  if (top < scroll.scrollTop + ROW_HEIGHT) scroll.scrollTop = top - ROW_HEIGHT;
  else if (top > scroll.scrollTop + scroll.clientHeight - 2 * ROW_HEIGHT) scroll.scrollTop = top - scroll.clientHeight + 2 * ROW_HEIGHT;
  render();
  const button = $('rows').querySelector(`tr[data-call="${CSS.escape(view[index])}"] button`);
  if (button) button.focus({ preventScroll: true });
}

async function main() {
  $('rows').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-call]');
    if (tr) select(tr.dataset.call);
  });
  $('rows').addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-call]');
    if (!tr) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      moveFocus(tr.dataset.call, e.key === 'ArrowDown' ? 1 : -1);
    }
  });
  $('scroll').addEventListener('scroll', scheduleRender, { passive: true });
  window.addEventListener('resize', scheduleRender);
  for (const id of ['state-filter', 'search']) {
    $(id).addEventListener('input', () => {
      board.viewDirty = true;
      $('scroll').scrollTop = 0;
      scheduleRender();
    });
  }
  $('detail-close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && board.selected && !$('login').open) closeDetail();
  });
  $('login-form').addEventListener('submit', submitLogin);
  $('login').addEventListener('cancel', (e) => e.preventDefault());
  $('logout').addEventListener('click', () => signIn());
  setInterval(() => {
    if (board.status === 'lagging' && Date.now() > board.laggedUntil) setStatus('live');
    scheduleRender(); // durations and retry countdowns
  }, 1000);
  setInterval(refreshVisible, REFRESH_EVERY_MS);

  try {
    const config = await (await fetch('/dashboard/config.json')).json();
    board.authRequired = Boolean(config.auth_required);
  } catch {
    board.authRequired = false;
  }
  if (board.authRequired && !board.key) return signIn();
  if (!board.authRequired) board.role = 'admin';
  start();
}

main();
