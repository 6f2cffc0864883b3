#!/usr/bin/env node
// Build what the waymark binary carries for JavaScript and TypeScript:
//
//   node sdk/js/runtime/build.mjs runtime OUT.wasm
//   node sdk/js/runtime/build.mjs preparer OUT.js
//
// `runtime`: esbuild makes one module of runtime.js and the SDK, and
// componentize-js builds it against the `script-runtime` world of wit/.
//
// `preparer`: sucrase (the version pinned in package-lock.json) as one
// minified script whose value is its `transform`. The host hands it to the
// runtime, which evaluates it the first time it prepares a file: sucrase is
// not in the runtime's own heap, which every fresh instance of a journey
// would map and reset (about 4 MB once evaluated, a third of a no-request
// iteration), and one component serves both running and preparing.
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [what, out, ...rest] = process.argv.slice(2);
if (!['runtime', 'preparer'].includes(what) || !out || rest.length) {
  console.error('usage: node build.mjs runtime OUT.wasm | preparer OUT.js');
  process.exit(2);
}

const common = {
  bundle: true,
  platform: 'neutral',
  mainFields: ['module', 'main'],
  target: 'es2022',
  logLevel: 'error',
  legalComments: 'none',
};

const stage = await mkdtemp(join(tmpdir(), 'waymark-jsrt-'));
try {
  if (what === 'preparer') {
    // The script's last statement is the name: evaluating it yields
    // `transform` without defining anything else the runtime would see.
    const name = '__waymarkPreparer';
    await build({
      ...common,
      stdin: { contents: "export { transform } from 'sucrase';", resolveDir: here, loader: 'js' },
      nodePaths: [resolve(here, '../node_modules')],
      format: 'iife',
      globalName: name,
      minify: true,
      footer: { js: `${name}.transform` },
      outfile: out,
    });
  } else {
    const bundle = join(stage, 'runtime.js');
    await build({
      ...common,
      entryPoints: [join(here, 'runtime.js')],
      format: 'esm',
      external: ['waymark:*'],
      outfile: bundle,
    });
    const { component } = await componentize({
      sourcePath: bundle,
      witPath: resolve(here, '../../../wit'),
      worldName: 'script-runtime',
    });
    await writeFile(out, component);
  }
} catch (e) {
  console.error(`runtime/build.mjs: ${e.message ?? e}`);
  process.exitCode = 1;
} finally {
  await rm(stage, { recursive: true, force: true });
}
