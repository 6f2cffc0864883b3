#!/usr/bin/env node
// Build the JavaScript runtime component that the waymark binary carries:
//
//   node sdk/js/runtime/build.mjs [--run-only] OUT.wasm
//
// esbuild makes one module of runtime.js, sucrase and the SDK (the versions
// pinned in package-lock.json), and componentize-js builds it against the
// `script-runtime` world of wit/.
//
// `--run-only` leaves sucrase out: the runtime that runs journeys (and is
// snapshotted for `waymark load`) never prepares a file, and sucrase's
// evaluated code is about 4 MB of the engine's heap that every fresh
// instance would map and reset (a third of a no-request iteration's cost).
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const runOnly = args[0] === '--run-only';
const out = runOnly ? args[1] : args[0];
if (!out || args.length !== (runOnly ? 2 : 1)) {
  console.error('usage: node build.mjs [--run-only] OUT.wasm');
  process.exit(2);
}

// What `import { transform } from 'sucrase'` gives the run-only runtime.
const noSucrase = {
  name: 'no-sucrase',
  setup(b) {
    b.onResolve({ filter: /^sucrase$/ }, () => ({ path: 'sucrase', namespace: 'run-only' }));
    b.onLoad({ filter: /.*/, namespace: 'run-only' }, () => ({
      contents: "export function transform() { throw new Error('this runtime runs journeys; it does not prepare files'); }",
      loader: 'js',
    }));
  },
};

const stage = await mkdtemp(join(tmpdir(), 'waymark-jsrt-'));
try {
  const bundle = join(stage, 'runtime.js');
  await build({
    entryPoints: [join(here, 'runtime.js')],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    target: 'es2022',
    external: ['waymark:*'],
    outfile: bundle,
    logLevel: 'error',
    legalComments: 'none',
    plugins: runOnly ? [noSucrase] : [],
  });
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: resolve(here, '../../../wit'),
    worldName: 'script-runtime',
  });
  await writeFile(out, component);
} catch (e) {
  console.error(`runtime/build.mjs: ${e.message ?? e}`);
  process.exitCode = 1;
} finally {
  await rm(stage, { recursive: true, force: true });
}
