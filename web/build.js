#!/usr/bin/env node
// Builds the web app into dist/ without a bundler: the ES modules of src/ are copied as they are,
// and the browser builds of the npm packages they import are copied into dist/vendor/ (the library
// and the SharedWorker import them by relative path; the page maps bare names with an import map).
// dist/build.json records a hash of every input, so `node build.js --check` (and the tests) can
// tell a stale build from a current one.
//
//   npm ci && node build.js     build (what `make web` runs)
//   node build.js --check       exit 1 if dist/ is missing or older than its inputs

import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(fileURLToPath(import.meta.url));
const SRC = join(ROOT, 'src');
const DIST = join(ROOT, 'dist');
const MODULES = join(ROOT, 'node_modules');

/** dist/vendor/<name>: the package file it comes from. */
export const VENDOR = {
  'mqtt.esm.js': ['mqtt', 'dist/mqtt.esm.js'],
  'idb.js': ['idb', 'build/index.js'],
  'preact.js': ['preact', 'dist/preact.mjs'],
  'preact-hooks.js': ['preact', 'hooks/dist/hooks.mjs'],
  'htm.js': ['htm', 'dist/htm.module.js'],
};

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? files(path) : [path];
  }).sort();
}

function packageVersion(name) {
  return JSON.parse(readFileSync(join(MODULES, name, 'package.json'), 'utf8')).version;
}

/** A hash of everything the build reads: the sources, the lockfile and this script. */
export function inputHash() {
  const hash = createHash('sha256');
  for (const path of [...files(SRC), join(ROOT, 'package-lock.json'), fileURLToPath(import.meta.url)]) {
    hash.update(relative(ROOT, path)).update('\0').update(readFileSync(path)).update('\0');
  }
  return hash.digest('hex');
}

export function build() {
  for (const [name, [pkg, file]] of Object.entries(VENDOR)) {
    if (!existsSync(join(MODULES, pkg, file))) {
      throw new Error(`node_modules/${pkg}/${file} is missing (${name}): run 'npm ci' in web/ first`);
    }
  }
  rmSync(DIST, { recursive: true, force: true });
  cpSync(SRC, DIST, { recursive: true });
  mkdirSync(join(DIST, 'vendor', 'licenses'), { recursive: true });
  const packages = {};
  for (const [name, [pkg, file]] of Object.entries(VENDOR)) {
    cpSync(join(MODULES, pkg, file), join(DIST, 'vendor', name));
    packages[pkg] = packageVersion(pkg);
    const license = readdirSync(join(MODULES, pkg)).find((f) => /^licen[cs]e/i.test(f));
    if (license) cpSync(join(MODULES, pkg, license), join(DIST, 'vendor', 'licenses', `${pkg}.txt`));
  }
  const manifest = { inputs: inputHash(), packages, files: files(DIST).length + 1 };
  writeFileSync(join(DIST, 'build.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** Why dist/ is not the build of the current inputs, or null when it is. */
export function staleness() {
  const manifestPath = join(DIST, 'build.json');
  if (!existsSync(manifestPath)) return 'web/dist is not built';
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  if (manifest.inputs !== inputHash()) return 'web/dist is older than web/src, web/package-lock.json or web/build.js';
  for (const path of files(SRC)) {
    const built = join(DIST, relative(SRC, path));
    if (!existsSync(built) || !readFileSync(built).equals(readFileSync(path))) return `${relative(ROOT, built)} differs from its source`;
  }
  return null;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--check')) {
    const why = staleness();
    if (why) {
      console.error(`${why}: run 'make web' (npm ci && node build.js)`);
      process.exit(1);
    }
    console.log('web/dist is current');
  } else {
    const started = Date.now();
    const manifest = build();
    const size = files(DIST).reduce((total, f) => total + statSync(f).size, 0);
    console.log(`built web/dist: ${manifest.files} files, ${Math.round(size / 1024)} KiB, in ${Date.now() - started} ms`);
  }
}
