#!/usr/bin/env node
// Build a JavaScript journey to a Wasm component:
//
//   node sdk/js/build.mjs JOURNEY.js -o OUT.wasm [--wit DIR]
//
// componentize-js only reads modules from the journey's own directory, so
// the directory is staged with this SDK's waymark.js beside the journey
// (a waymark.js of the journey's own wins).
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function usage(problem) {
  console.error(`build.mjs: ${problem}\nusage: node build.mjs JOURNEY.js -o OUT.wasm [--wit DIR]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let source;
let out;
let wit = resolve(here, '../../wit');
for (let i = 0; i < args.length; i++) {
  if (args[i] === '-o') out = args[++i];
  else if (args[i] === '--wit') wit = args[++i];
  else if (source === undefined) source = args[i];
  else usage(`unexpected argument '${args[i]}'`);
}
if (!source) usage('no journey given');
if (!out) usage('no output given (-o OUT.wasm)');

const stage = await mkdtemp(join(tmpdir(), 'waymark-js-'));
try {
  await cp(dirname(resolve(source)), stage, {
    recursive: true,
    filter: (p) => !p.includes('node_modules') && !p.endsWith('.wasm'),
  });
  try {
    await access(join(stage, 'waymark.js'));
  } catch {
    await cp(join(here, 'waymark.js'), join(stage, 'waymark.js'));
  }
  const { component } = await componentize({
    sourcePath: join(stage, basename(source)),
    witPath: resolve(wit),
    worldName: 'journey',
  });
  await writeFile(out, component);
} catch (e) {
  console.error(`build.mjs: cannot build ${source}: ${e.message ?? e}`);
  process.exitCode = 1;
} finally {
  await rm(stage, { recursive: true, force: true });
}
