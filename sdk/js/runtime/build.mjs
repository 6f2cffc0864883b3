#!/usr/bin/env node
// Build the JavaScript runtime component that the waymark binary carries:
//
//   node sdk/js/runtime/build.mjs OUT.wasm
//
// esbuild makes one module of runtime.js, sucrase and the SDK (the versions
// pinned in package-lock.json), and componentize-js builds it against the
// `script-runtime` world of wit/.
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out || process.argv.length > 3) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}

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
