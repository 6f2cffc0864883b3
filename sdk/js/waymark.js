// Write Waymark journeys in JavaScript.
//
// A thin layer over the `waymark:journey` world (wit/journey.wit) with the
// shape of the Rust SDK: steps, checks, logs, variables and timed HTTP.
// Build a journey with componentize-js:
//
//   componentize-js journey.js --wit wit --world-name journey -o journey.wasm
//
// and run it with `waymark run journey.wasm`.
import * as report from 'waymark:journey/report@0.2.0';
import * as wvars from 'waymark:journey/vars@0.2.0';
import * as whttp from 'waymark:journey/http@0.2.0';

// The world's `run` returns `result<_, string>`: anything thrown becomes the
// run's error message, which must be a string.
function message(e) {
  if (typeof e === 'string') return e;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Wrap the journey's body (sync or async) as the world's `run` export. */
export function journey(body) {
  return async function run() {
    try {
      await body();
    } catch (e) {
      throw message(e);
    }
  };
}

/**
 * Run `body` as a named step: its requests and checks belong to the step.
 * Returns what `body` returns (a promise when `body` is async).
 */
export function step(name, body) {
  report.stepStart(name);
  let out;
  try {
    out = body();
  } catch (e) {
    report.stepEnd();
    throw e;
  }
  if (out && typeof out.then === 'function') {
    return out.finally(() => report.stepEnd());
  }
  report.stepEnd();
  return out;
}

/** Record a check; a failed check fails the run but does not stop it. */
export function check(name, passed, detail) {
  const ok = Boolean(passed);
  report.check(name, ok, detail === undefined ? undefined : String(detail));
  return ok;
}

function show(v) {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** A check that `actual === expected`, saying both when it fails. */
export function checkEq(name, actual, expected) {
  const ok = actual === expected;
  report.check(name, ok, ok ? undefined : `expected ${show(expected)}, got ${show(actual)}`);
  return ok;
}

/**
 * Think time: pause the journey for `seconds` seconds (fractions allowed),
 * as k6's `sleep` does: `sleep(1)` is one second, `sleep(0.25)` 250 ms.
 */
export function sleep(seconds) {
  const ms = Math.round(Number(seconds) * 1000);
  report.sleep(Number.isFinite(ms) ? Math.max(0, Math.min(0xffffffff, ms)) : 0);
}

/** Log lines of the run. */
export const log = {
  debug: (m) => report.log('debug', String(m)),
  info: (m) => report.log('info', String(m)),
  warn: (m) => report.log('warn', String(m)),
  error: (m) => report.log('error', String(m)),
};

/** Variables and secrets given to the run. */
export const vars = {
  get: (name) => wvars.get(name),
  require(name) {
    const v = wvars.get(name);
    if (v === undefined) throw new Error(`variable '${name}' is not set`);
    return v;
  },
  getOr: (name, fallback) => wvars.get(name) ?? fallback,
};

/** Why a request produced no response: `kind` is the world's variant name. */
export class HttpError extends Error {
  constructor(kind, detail) {
    super(detail === undefined ? kind : `${kind}: ${detail}`);
    this.name = 'HttpError';
    this.kind = kind;
    this.detail = detail;
  }
}

const decoder = new TextDecoder();

/** A complete response; the body has been read to the end. */
export class Response {
  constructor(r) {
    this.status = r.status;
    this.headers = r.headers;
    this.body = r.body;
    this.wireBytes = Number(r.wireBytes);
    this.timings = Object.fromEntries(
      Object.entries(r.timings).map(([k, v]) => [k, Number(v)]),
    );
    this.httpVersion = r.httpVersion;
    this.remoteAddr = r.remoteAddr;
    this.reusedConnection = r.reusedConnection;
    this.tls = r.tls;
  }
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  /** The first header of that name (case-insensitive). */
  header(name) {
    const n = name.toLowerCase();
    const h = this.headers.find(([k]) => k.toLowerCase() === n);
    return h ? h[1] : undefined;
  }
  text() {
    return decoder.decode(this.body);
  }
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new Error(`response body is not the expected JSON: ${message(e)}`);
    }
  }
}

const encoder = new TextEncoder();

function formEncode(fields) {
  return Object.entries(fields)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`.replace(/%20/g, '+'))
    .join('&');
}

/**
 * Send a request and read the whole response. `options`: `headers` (object
 * or [name, value] pairs), `bearer`, `json`, `form`, `body` (string or
 * Uint8Array), `timeoutMs`, `followRedirects`, `trace`.
 */
export function request(method, url, options = {}) {
  const headers = Array.isArray(options.headers)
    ? options.headers.map(([k, v]) => [String(k), String(v)])
    : Object.entries(options.headers ?? {}).map(([k, v]) => [k, String(v)]);
  let body = options.body;
  if (options.json !== undefined) {
    headers.push(['content-type', 'application/json']);
    body = JSON.stringify(options.json);
  } else if (options.form !== undefined) {
    headers.push(['content-type', 'application/x-www-form-urlencoded']);
    body = formEncode(options.form);
  }
  if (options.bearer !== undefined) headers.push(['authorization', `Bearer ${options.bearer}`]);
  if (typeof body === 'string') body = encoder.encode(body);
  try {
    return new Response(
      whttp.send({
        method,
        url,
        headers,
        body,
        timeoutMs: options.timeoutMs,
        followRedirects: options.followRedirects,
        trace: options.trace,
      }),
    );
  } catch (e) {
    const v = e?.payload ?? e;
    if (v && typeof v.tag === 'string') throw new HttpError(v.tag, v.val);
    throw e;
  }
}

/** Timed HTTP through the run's sandbox (allow-list, limits, record). */
export const http = {
  request,
  get: (url, o) => request('GET', url, o),
  post: (url, o) => request('POST', url, o),
  put: (url, o) => request('PUT', url, o),
  patch: (url, o) => request('PATCH', url, o),
  delete: (url, o) => request('DELETE', url, o),
  head: (url, o) => request('HEAD', url, o),
  /** Cookies of the run's jar that a request to `url` would carry. */
  cookies: (url) => whttp.cookies(url),
  /** Empty the run's cookie jar. */
  clearCookies: () => whttp.clearCookies(),
};
