// The JavaScript runtime carried in the waymark binary: one component (the
// JS engine and the SDK) that runs any journey from its source.
//
// The host calls `prepare` once per source file when it loads a journey
// (TypeScript types stripped, imports turned into `require`, line numbers
// kept, by sucrase, which the host hands over as `script.preparer` and
// which is evaluated on the first call), then every run calls `run`, which
// evaluates the prepared modules the host hands over through
// `waymark:journey/script`. Built by build.mjs.
import * as sdk from '../waymark.js';
import * as http from 'waymark:journey/http@0.2.0';
import * as report from 'waymark:journey/report@0.2.0';
import * as vars from 'waymark:journey/vars@0.2.0';
import { modules, preparer } from 'waymark:journey/script@0.2.0';

// The world's own interfaces, for journeys that import them as a component
// would; `script` is the runtime's and not among them.
const WORLD = new Map([
  ['waymark:journey/http@0.2.0', http],
  ['waymark:journey/report@0.2.0', report],
  ['waymark:journey/vars@0.2.0', vars],
]);

const TS = /\.[cm]?tsx?$/;

// sucrase's `transform`, once this instance has prepared a file.
let transform = null;

export function prepare(path, source) {
  if (!transform) transform = (0, eval)(preparer());
  let out;
  try {
    out = transform(source, {
      transforms: TS.test(path) ? ['typescript', 'imports'] : ['imports'],
      filePath: path,
      production: true,
      sourceMapOptions: { compiledFilename: path },
    });
  } catch (e) {
    // sucrase's `loc` is 1-based in both.
    const loc = e?.loc;
    const at = loc ? `${path}:${loc.line}:${loc.column}` : path;
    const msg = String(e?.message ?? e)
      .replace(/^Error transforming .*?: /, '')
      .replace(/ \(\d+:\d+\)$/, '');
    throw `${at}: ${msg}`;
  }
  const imports = [];
  for (const m of out.code.matchAll(/(?<![.\w$])require\((['"])([^'"\n]+)\1\)/g)) {
    if (!imports.includes(m[2])) imports.push(m[2]);
  }
  // No compiled form: SpiderMonkey's is not reachable from a script.
  return { code: out.code, imports, sourceMap: JSON.stringify(out.sourceMap), compiled: new Uint8Array(0) };
}

// `journey(body)` hands the body back as it is, so that what it throws
// reaches `run` with its stack and can be placed in the source.
const api = Object.freeze({ ...sdk, journey: (body) => body });

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

// The segments of a source map's `mappings`, per generated line:
// [generated column, source line, source column], all 0-based.
function decodeMappings(mappings) {
  const lines = [];
  let srcLine = 0;
  let srcCol = 0;
  for (const text of mappings.split(';')) {
    const segs = [];
    let genCol = 0;
    for (const seg of text.split(',')) {
      if (!seg) continue;
      const vals = [];
      let shift = 0;
      let value = 0;
      for (const ch of seg) {
        const d = B64.indexOf(ch);
        value += (d & 31) << shift;
        if (d & 32) {
          shift += 5;
        } else {
          vals.push(value & 1 ? -(value >> 1) : value >> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += vals[0];
      if (vals.length >= 4) {
        srcLine += vals[2];
        srcCol += vals[3];
        segs.push([genCol, srcLine, srcCol]);
      }
    }
    lines.push(segs);
  }
  return lines;
}

// Text put before a module's code on its first line when it is evaluated.
const WRAP = '(function (exports, require, module) {';

// The journey as the first run of this instance evaluated it: a kept
// instance (`waymark load --reuse-instance`) evaluates its modules once and
// calls the journey again, as a component's instance would.
let evaluated = null;

// Not `async`: a journey that returns no promise is over when it returns,
// with no job queued for the event loop (about 50 of the 670 µs a fresh
// instance of a snapshot costs for a journey that does nothing).
export function run() {
  if (!evaluated) evaluated = evaluate(modules());
  return evaluated.call();
}

export function init() {
  if (!evaluated) evaluated = evaluate(modules());
}

// Load the journey's modules (entry first) and find its body; `call` runs
// it, with what it throws placed in the source.
function evaluate(mods) {
  const byPath = new Map(mods.map((m) => [m.path, m]));
  const maps = new Map();
  const cache = new Map();

  // 1-based line and column of the prepared code → the same in the source.
  function place(path, line, col) {
    const m = byPath.get(path);
    if (!m) return `${path}:${line}:${col}`;
    let lines = maps.get(path);
    if (!lines) {
      try {
        lines = decodeMappings(JSON.parse(m.sourceMap).mappings ?? '');
      } catch {
        lines = [];
      }
      maps.set(path, lines);
    }
    const c = (line === 1 ? col - WRAP.length : col) - 1;
    let best;
    for (const s of lines[line - 1] ?? []) {
      if (s[0] <= c) best = s;
      else break;
    }
    return best ? `${path}:${best[1] + 1}:${best[2] + 1 + (c - best[0])}` : `${path}:${line}:${col}`;
  }

  function load(path) {
    const hit = cache.get(path);
    if (hit) return hit.exports;
    const m = byPath.get(path);
    const module = { exports: {} };
    cache.set(path, module);
    const links = new Map(m.links);
    const require = (spec) => {
      const to = links.get(spec);
      if (to === 'waymark') return api;
      if (WORLD.has(to)) return WORLD.get(to);
      if (to === undefined) throw new Error(`${path} cannot import '${spec}'`);
      return load(to);
    };
    const fn = (0, eval)(`${WRAP}${m.code}\n})\n//# sourceURL=${path}`);
    fn.call(module.exports, module.exports, require, module);
    return module.exports;
  }

  // Where in the journey's own files an error was raised: the first frame
  // of its stack that is one of them.
  function located(e) {
    const msg = e instanceof Error ? `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}` : String(e);
    for (const frame of String(e?.stack ?? '').split('\n')) {
      const at = /@(.+):(\d+):(\d+)$/.exec(frame);
      if (at && byPath.has(at[1])) return `${place(at[1], Number(at[2]), Number(at[3]))}: ${msg}`;
    }
    if (e instanceof SyntaxError && byPath.has(e.fileName)) {
      return `${place(e.fileName, e.lineNumber, e.columnNumber)}: ${msg}`;
    }
    return msg;
  }

  const placed = (e) => (typeof e === 'string' ? e : located(e));
  const call = (body) => {
    let out;
    try {
      out = body();
    } catch (e) {
      throw placed(e);
    }
    if (out && typeof out.then === 'function') {
      return out.then(
        () => undefined,
        (e) => {
          throw placed(e);
        },
      );
    }
    return undefined;
  };
  try {
    const entry = load(mods[0].path);
    const body = entry.run ?? entry.default;
    if (typeof body !== 'function') {
      throw `${mods[0].path} exports no journey: export a function as \`run\` (or as the default export)`;
    }
    return { call: () => call(body) };
  } catch (e) {
    throw placed(e);
  }
}
