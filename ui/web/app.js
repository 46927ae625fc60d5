// baregate dashboard: draws the server's laid-out map (/api/view) as SVG and the tables, and keeps
// them live through /api/events. All state lives in the URL so that every view can be linked.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const TABS = ['map', 'lbips', 'hosts', 'noendpoints', 'warnings'];
const THEMES = ['auto', 'light', 'dark'];

const state = { ns: '', q: '', sel: '', tab: 'map', expand: [], theme: 'auto' };
let view = null;
let warnings = { items: [] };
let paused = false;
let missed = 0;
let inflight = false;
let again = false;

const $ = (id) => document.getElementById(id);

function readURL() {
  const p = new URLSearchParams(location.search);
  state.ns = p.get('ns') || '';
  state.q = p.get('q') || '';
  state.sel = p.get('sel') || '';
  state.tab = TABS.includes(p.get('tab')) ? p.get('tab') : 'map';
  state.expand = (p.get('expand') || '').split(',').filter(Boolean);
  state.theme = THEMES.includes(p.get('theme')) ? p.get('theme') : (localStorage.getItem('baregate-theme') || 'auto');
}

function writeURL() {
  const p = new URLSearchParams();
  if (state.ns) p.set('ns', state.ns);
  if (state.q) p.set('q', state.q);
  if (state.sel) p.set('sel', state.sel);
  if (state.tab !== 'map') p.set('tab', state.tab);
  if (state.expand.length) p.set('expand', state.expand.join(','));
  if (state.theme !== 'auto') p.set('theme', state.theme);
  const s = p.toString();
  history.replaceState(null, '', s ? '?' + s : location.pathname);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function sv(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

function ago(t) {
  if (!t) return '';
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 90) return Math.round(s) + 's ago';
  if (s < 5400) return Math.round(s / 60) + 'm ago';
  if (s < 172800) return Math.round(s / 3600) + 'h ago';
  return Math.round(s / 86400) + 'd ago';
}

function rate(r) { return r >= 10 ? r.toFixed(0) : r.toFixed(1); }

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' } });
  if (!r.ok) throw new Error(url + ': ' + r.status);
  return r.json();
}

// refresh reloads what the page shows; overlapping calls collapse into one more round.
async function refresh() {
  if (inflight) { again = true; return; }
  inflight = true;
  try {
    const p = new URLSearchParams();
    if (state.ns) p.set('ns', state.ns);
    if (state.q) p.set('q', state.q);
    if (state.expand.length) p.set('expand', state.expand.join(','));
    const [v, lbips, hosts, noeps, warn] = await Promise.all([
      getJSON('/api/view?' + p), getJSON('/api/lbips'), getJSON('/api/hosts'), getJSON('/api/noendpoints'), getJSON('/api/warnings')]);
    view = v;
    warnings = warn;
    renderNamespaces();
    renderMap();
    renderLBIPs(lbips);
    renderHosts(hosts);
    renderNoEndpoints(noeps);
    renderWarnings(warn);
    renderDetail();
  } catch (err) {
    setStatus('offline', 'cannot reach the gateway');
  } finally {
    inflight = false;
    if (again) { again = false; refresh(); }
  }
}

function renderNamespaces() {
  const sel = $('ns');
  const want = [''].concat(view.namespaces || []);
  if (state.ns && !want.includes(state.ns)) want.push(state.ns);
  const have = Array.from(sel.options).map((o) => o.value);
  if (have.join('\n') !== want.join('\n')) {
    sel.replaceChildren(...want.map((ns) => el('option', { value: ns, text: ns || 'All namespaces' })));
  }
  sel.value = state.ns;
}

function nodeByID(id) { return view && view.nodes.find((n) => n.id === id); }

function renderMap() {
  const svg = $('map');
  const W = view.nodeW, H = view.nodeH;
  svg.replaceChildren();
  svg.setAttribute('width', view.width);
  svg.setAttribute('height', view.height);
  svg.setAttribute('viewBox', `0 0 ${view.width} ${view.height}`);
  $('empty').hidden = view.nodes.length > 0;
  $('summary').textContent = `${view.shown} of ${view.services} Services · generation ${view.generation}`;
  for (const c of view.columns) svg.append(sv('text', { class: 'col-title', x: c.x, y: 24 }, c.title));
  for (const g of view.groups) {
    svg.append(sv('rect', { class: 'band', x: g.x, y: g.y, width: g.w, height: g.h, rx: 8 }));
    svg.append(sv('text', { class: 'band-label', x: g.x + 10, y: g.y + 18 }, g.namespace));
  }
  const pos = new Map(view.nodes.map((n) => [n.id, n]));
  const edges = sv('g', { class: 'edges' });
  const linked = new Set();
  for (const e of view.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, dx = Math.max(30, (x2 - x1) / 2);
    const hl = state.sel && (e.from === state.sel || e.to === state.sel);
    if (hl) { linked.add(e.from); linked.add(e.to); }
    const bad = !!e.failing;
    let d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
    if (e.via) {
      // The edge skips a column: it runs through the slot the layout kept for it there.
      const [va, vb, vy] = e.via, h = Math.max(20, (va - x1) / 2);
      d = `M${x1},${y1} C${x1 + h},${y1} ${va - h},${vy} ${va},${vy} L${vb},${vy} C${vb + h},${vy} ${x2 - h},${y2} ${x2},${y2}`;
    }
    const path = sv('path', { class: 'e' + (hl ? ' hl' : '') + (bad ? ' err' : ''), d });
    path.append(sv('title', {}, [e.label, e.requestRate !== undefined ? `${rate(e.requestRate)} req/s, ${rate(e.errorRate)} 5xx/s` : ''].filter(Boolean).join(' · ') || 'edge'));
    edges.append(path);
    if (e.requestRate !== undefined && e.requestRate > 0) {
      edges.append(sv('text', { class: 'rate', x: (x1 + x2) / 2 - 20, y: (y1 + y2) / 2 - 4 }, `${rate(e.requestRate)} req/s`));
    }
  }
  svg.append(edges);
  svg.classList.toggle('focus', !!state.sel && pos.has(state.sel));
  for (const n of view.nodes) {
    const g = sv('g', { class: `node kind-${n.kind} health-${n.health}` + (n.id === state.sel ? ' sel' : '') + (state.sel && !linked.has(n.id) && n.id !== state.sel ? ' dim' : ''), 'data-id': n.id, transform: `translate(${n.x},${n.y})`, tabindex: 0 });
    if (n.count) g.append(sv('rect', { class: 'stack', x: 4, y: -4, width: W, height: H, rx: 6 }));
    g.append(sv('rect', { class: 'box', width: W, height: H, rx: 6 }));
    g.append(sv('rect', { class: 'bar', width: 5, height: H, rx: 2 }));
    g.append(sv('text', { class: 'label', x: 13, y: 16 }, clip(n.label, 27)));
    g.append(sv('text', { class: 'sub', x: 13, y: 32 }, clip(n.sub || n.kind, 33)));
    g.append(sv('title', {}, `${n.label}\n${n.sub || ''}\n${n.health}`));
    g.addEventListener('click', () => select(n.id));
    g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') select(n.id); });
    svg.append(g);
  }
}

function select(id) {
  state.sel = state.sel === id ? '' : id;
  writeURL();
  renderMap();
  renderDetail();
}

function chip(cls, text) { return el('span', { class: 'chip ' + cls, text }); }

function renderDetail() {
  const aside = $('detail');
  const n = state.sel && nodeByID(state.sel);
  if (!n || state.tab !== 'map') { aside.hidden = true; return; }
  aside.hidden = false;
  $('d-title').textContent = n.label;
  $('d-chips').replaceChildren(chip('kind', n.kind + (n.namespace ? ' · ' + n.namespace : '')), chip('health-' + n.health, n.health));
  $('d-sub').textContent = n.sub || '';
  const actions = [];
  if (n.expand) {
    const b = el('button', { text: `Show namespace ${n.expand} in full` });
    b.addEventListener('click', () => { state.expand.push(n.expand); state.sel = ''; writeURL(); refresh(); });
    actions.push(b);
  }
  if (n.kind !== 'node' && !n.count) {
    const b = el('button', { text: 'Show only its traffic' });
    b.addEventListener('click', () => { state.q = n.label; $('q').value = n.label; writeURL(); refresh(); });
    actions.push(b);
  }
  $('d-actions').replaceChildren(...actions);
  $('d-fields').replaceChildren(...(n.fields || []).flatMap((f) => [el('dt', { text: f.name }), el('dd', { text: f.value })]));
  const link = (id, e) => {
    const o = nodeByID(id);
    const a = el('a', { text: o ? o.label : id });
    a.addEventListener('click', () => select(id));
    const bits = [e.label, e.requestRate !== undefined ? `${rate(e.requestRate)} req/s · ${rate(e.errorRate)} 5xx/s` : '', e.count > 1 ? `×${e.count}` : ''].filter(Boolean);
    return el('li', {}, a, el('span', { class: 'lbl', text: bits.join(' · ') }));
  };
  const none = () => el('li', { class: 'muted', text: 'none' });
  const ins = view.edges.filter((e) => e.to === n.id).map((e) => link(e.from, e));
  const outs = view.edges.filter((e) => e.from === n.id).map((e) => link(e.to, e));
  $('d-in').replaceChildren(...(ins.length ? ins : [none()]));
  $('d-out').replaceChildren(...(outs.length ? outs : [none()]));
  const evs = (warnings.items || []).filter((w) => n.object && w.object.kind === n.object.kind && w.object.name === n.object.name && (w.object.namespace || '') === (n.object.namespace || ''));
  $('d-events').replaceChildren(...(evs.length ? evs.map((w) => el('li', {}, el('b', { text: w.reason }), ' ' + w.message + ' · ' + ago(w.time))) : [none()]));
}

function fillTable(tab, rows, cells, onClick) {
  const body = document.querySelector(`#tab-${tab} tbody`);
  if (!rows.length) {
    body.replaceChildren(el('tr', {}, el('td', { class: 'muted', colspan: 9, text: 'nothing to show' })));
    return;
  }
  body.replaceChildren(...rows.map((r) => {
    const tr = el('tr', {}, ...cells(r).map((c) => (typeof c === 'string' ? el('td', { text: c }) : c)));
    if (onClick) tr.addEventListener('click', () => onClick(r));
    return tr;
  }));
}

function badge(id, n, bad) {
  $(id).textContent = n ? String(n) : '';
  $(id).classList.toggle('bad', !!bad && n > 0);
}

function showOnMap(q) { state.q = q; $('q').value = q; state.sel = ''; setTab('map'); refresh(); }

function renderLBIPs(rows) {
  badge('n-lbips', rows.length, false);
  fillTable('lbips', rows, (r) => [r.ip, r.kind, r.services.join(', '), r.pool || '—', r.owner || '—',
    r.since ? el('td', { title: r.since, text: ago(r.since) }) : '—',
    el('td', { class: r.owner || r.kind === 'ExternalIP' ? '' : 'bad', text: r.status })], (r) => showOnMap(r.ip === 'pending' ? r.services[0] : r.ip));
}

function renderHosts(rows) {
  badge('n-hosts', rows.length, false);
  fillTable('hosts', rows, (r) => [r.host, r.ingresses.join(', '), String(r.routes), r.tls ? 'yes' : 'no', r.secret || '—',
    el('td', { class: /missing|expired|not valid|no PEM|unparseable/.test(r.cert) ? 'bad' : (/expires in/.test(r.cert) ? 'warn' : ''), text: r.cert }),
    r.issuer || '—', r.notAfter ? new Date(r.notAfter).toISOString().slice(0, 10) : '—',
    el('td', { class: /^failed/.test(r.acme) ? 'bad' : (/^pending|not ordered/.test(r.acme) ? 'warn' : ''), text: r.acme || '—' })], (r) => showOnMap(r.host));
}

function renderNoEndpoints(rows) {
  badge('n-noendpoints', rows.length, true);
  fillTable('noendpoints', rows, (r) => [r.service, r.type, el('td', { class: 'bad', text: r.reason })], (r) => showOnMap(r.service.split('/')[1]));
}

function renderWarnings(w) {
  badge('n-warnings', w.items.length, true);
  $('warnings-note').textContent = (w.updated ? `Events from baregate, read ${ago(w.updated)}.` : 'Events from baregate: not read yet.') +
    (w.error ? ` The last read failed (${w.error}); showing the previous list.` : '');
  fillTable('warnings', w.items, (r) => [el('td', { title: r.time, text: ago(r.time) }),
    `${r.object.kind} ${r.object.namespace ? r.object.namespace + '/' : ''}${r.object.name}`, r.reason, r.message, String(r.count)],
  (r) => showOnMap(r.object.name));
}

function setTab(tab) {
  state.tab = tab;
  for (const t of TABS) $('tab-' + t).hidden = t !== tab;
  for (const b of document.querySelectorAll('#tabs button')) b.setAttribute('aria-selected', String(b.dataset.tab === tab));
  writeURL();
  if (view) renderDetail();
}

function applyTheme() {
  if (state.theme === 'auto') delete document.documentElement.dataset.theme; else document.documentElement.dataset.theme = state.theme;
  $('theme').textContent = 'Theme: ' + state.theme;
}

function setStatus(cls, text) {
  const s = $('status');
  s.className = 'status ' + cls;
  s.textContent = text;
}

function liveStatus() {
  if (paused) setStatus('paused', missed ? `paused · ${missed} update${missed > 1 ? 's' : ''} waiting` : 'paused');
  else setStatus('live', 'live' + (view ? ` · gen ${view.generation}` : ''));
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('map', () => {
    if (paused) { missed++; liveStatus(); return; }
    refresh().then(liveStatus);
  });
  es.addEventListener('open', liveStatus);
  es.addEventListener('error', () => setStatus('offline', 'reconnecting…'));
}

function init() {
  readURL();
  applyTheme();
  $('q').value = state.q;
  setTab(state.tab);
  let timer = 0;
  $('q').addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = $('q').value.trim(); writeURL(); refresh(); }, 250);
  });
  $('ns').addEventListener('change', () => { state.ns = $('ns').value; writeURL(); refresh(); });
  $('pause').addEventListener('click', () => {
    paused = !paused;
    $('pause').classList.toggle('on', paused);
    $('pause').textContent = paused ? 'Resume' : 'Pause';
    if (!paused && missed) { missed = 0; refresh(); }
    liveStatus();
  });
  $('theme').addEventListener('click', () => {
    state.theme = THEMES[(THEMES.indexOf(state.theme) + 1) % THEMES.length];
    localStorage.setItem('baregate-theme', state.theme);
    applyTheme();
    writeURL();
  });
  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => setTab(b.dataset.tab));
  $('d-close').addEventListener('click', () => select(state.sel));
  document.addEventListener('keydown', (ev) => {
    if (ev.key === '/' && document.activeElement !== $('q')) { ev.preventDefault(); $('q').focus(); }
    if (ev.key === 'Escape' && state.sel) select(state.sel);
  });
  getJSON('/api/status').then((s) => { $('gateway').textContent = 'gateway on ' + s.gateway; }).catch(() => {});
  refresh().then(liveStatus);
  connect();
}

document.addEventListener('DOMContentLoaded', init);
