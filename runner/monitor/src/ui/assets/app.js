// Shared by the pages: fetching the API and drawing its figures. No
// library: the binary carries everything the pages need.
const PHASES = ['resolve', 'connect', 'tls', 'processing', 'transfer'];
const COLOURS = { resolve: '#1b9aaa', connect: '#d4a72c', tls: '#a371f7', processing: '#2da44e', transfer: '#0b5cad' };

async function api(path) {
  const resp = await fetch(path);
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const fmtMs = (v) => (v == null ? '–' : v >= 1000 ? (v / 1000).toFixed(2) + ' s' : v.toFixed(1) + ' ms');
const fmtPct = (v) => (v == null ? '–' : (v * 100).toFixed(2) + ' %');

function ago(iso) {
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 90) return Math.round(s) + ' s';
  if (s < 5400) return Math.round(s / 60) + ' min';
  if (s < 129600) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

function badge(status) {
  return el('span', { class: 'badge ' + status, text: status });
}

function sparkline(points, w = 120, h = 22) {
  const s = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  if (points.length < 2) return s;
  const max = Math.max(...points.map((p) => p.ms)) || 1;
  const xy = points.map((p, i) => `${(i / (points.length - 1)) * (w - 2) + 1},${h - 1 - (p.ms / max) * (h - 2)}`);
  s.append(svg('polyline', { points: xy.join(' '), fill: 'none', stroke: '#0b5cad', 'stroke-width': 1.5 }));
  return s;
}

function showError(where, e) {
  where.replaceChildren(el('p', { class: 'err', text: String(e.message || e) }));
}
