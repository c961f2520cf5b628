// Build dints-label's OHIF viewer into plugins/ohif/build/ (served by the app at /ohif/).
//
// What it is: OHIF's released viewer build, the `dist/` of the npm package @ohif/app at the version pinned in
// package.json (the tarball's sha512 is checked against the pinned integrity), re-based from "/" to "/ohif/",
// with our own app-config.js and our MONAI Label extension and mode (src/, bundled by esbuild with Preact),
// which OHIF loads at start-up through its own `extensions` / `modes` app-config entries. No webpack build of
// OHIF's monorepo: that takes far longer than a set-up may, and its sources are not on the npm registry.
//
//   node build.mjs            build unless build/BUILD_INFO.json says the inputs are unchanged
//   node build.mjs --force    build anyway
//
// Needs node >= 18, `npm ci` done in this folder (esbuild, preact), and the npm registry once for the tarball
// (kept in .cache/ afterwards). The new build replaces the old one only when it is complete.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUILD = path.join(HERE, 'build');
const CACHE = path.join(HERE, '.cache');
const BASE = '/ohif/';
const PUBLIC_PATH = '__webpack_require__.p = "/";';
const pkg = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8'));
const { version, integrity } = pkg.ohif;

function log(msg) {
  console.log(`[ohif] ${msg}`);
}

function fail(msg) {
  console.error(`[ohif] error: ${msg}`);
  process.exit(2);
}

function inputsHash() {
  const h = createHash('sha256');
  const files = ['package.json', 'package-lock.json', 'build.mjs', 'app-config.js'];
  const walk = dir => fs.readdirSync(dir, { withFileTypes: true })
    .flatMap(e => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  for (const f of [...files.map(f => path.join(HERE, f)), ...walk(path.join(HERE, 'src')).sort()]) {
    h.update(path.relative(HERE, f));
    h.update(fs.readFileSync(f));
  }
  return h.digest('hex').slice(0, 16);
}

function tarball() {
  fs.mkdirSync(CACHE, { recursive: true });
  const file = path.join(CACHE, `ohif-app-${version}.tgz`);
  if (!fs.existsSync(file)) {
    log(`downloading @ohif/app@${version} from the npm registry`);
    execFileSync('npm', ['pack', `@ohif/app@${version}`, '--pack-destination', CACHE, '--silent'], { stdio: 'inherit' });
  }
  const got = 'sha512-' + createHash('sha512').update(fs.readFileSync(file)).digest('base64');
  if (got !== integrity) {
    fs.rmSync(file);
    fail(`@ohif/app@${version} does not match the integrity pinned in package.json (got ${got}); deleted it`);
  }
  return file;
}

function replaceOnce(file, from, to) {
  const text = fs.readFileSync(file, 'utf8');
  const n = text.split(from).length - 1;
  if (n !== 1) {
    fail(`${path.basename(file)}: expected "${from}" once, found it ${n} times (another OHIF version?)`);
  }
  fs.writeFileSync(file, text.replace(from, to));
}

function rebase(dist) {
  // index.html: the public URL and every root-relative asset; the app bundle: webpack's chunk base
  const index = path.join(dist, 'index.html');
  let html = fs.readFileSync(index, 'utf8');
  html = html.replaceAll('window.PUBLIC_URL="/"', `window.PUBLIC_URL="${BASE}"`);
  html = html.replace(/(href|src)="\/(?!\/)/g, `$1="${BASE}`);
  // the service worker would cache the viewer across app versions on one origin: left out
  html = html.replace(/<script[^>]*init-service-worker\.js[^>]*><\/script>/, '');
  fs.writeFileSync(index, html);
  const bundles = fs.readdirSync(dist).filter(f => /^app\.bundle\.[0-9a-f]+\.js$/.test(f));
  if (bundles.length !== 1) {
    fail(`expected one app.bundle.*.js in @ohif/app's dist, found ${bundles.length}`);
  }
  replaceOnce(path.join(dist, bundles[0]), PUBLIC_PATH, PUBLIC_PATH.replace('"/"', `"${BASE}"`));
  // the web workers load their own chunks and WebAssembly from the same base
  let workers = 0;
  for (const f of fs.readdirSync(dist).filter(f => f.endsWith('.js') && f !== bundles[0])) {
    const file = path.join(dist, f);
    const text = fs.readFileSync(file, 'utf8');
    if (text.includes(PUBLIC_PATH)) {
      fs.writeFileSync(file, text.replaceAll(PUBLIC_PATH, PUBLIC_PATH.replace('"/"', `"${BASE}"`)));
      workers++;
    }
  }
  // the stylesheets' font (the only one; no web fonts are fetched from anywhere else)
  for (const f of fs.readdirSync(dist).filter(f => f.endsWith('.css'))) {
    const file = path.join(dist, f);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/url\(\/(?!\/)/g, `url(${BASE}`));
  }
  log(`re-based to ${BASE}: index.html, the app bundle and ${workers} worker bundles`);
}

async function bundleExtension(dist) {
  const esbuild = await import('esbuild');
  const out = path.join(dist, 'monai-label');
  for (const [entry, name] of [['src/extension.jsx', 'extension.js'], ['src/mode.js', 'mode.js']]) {
    await esbuild.build({
      entryPoints: [path.join(HERE, entry)],
      outfile: path.join(out, name),
      bundle: true,
      format: 'esm',
      target: 'es2020',
      minify: true,
      sourcemap: false,
      jsx: 'automatic',
      jsxImportSource: 'preact',
      legalComments: 'none',
      logLevel: 'warning',
    });
  }
}

async function main() {
  const force = process.argv.includes('--force');
  const want = { ohif: version, inputs: inputsHash() };
  const infoFile = path.join(BUILD, 'BUILD_INFO.json');
  if (!force && fs.existsSync(infoFile)) {
    const have = JSON.parse(fs.readFileSync(infoFile, 'utf8'));
    if (have.ohif === want.ohif && have.inputs === want.inputs) {
      log(`build up to date (OHIF ${version}, inputs ${want.inputs})`);
      return;
    }
  }
  const t0 = Date.now();
  const file = tarball();
  const tmp = `${BUILD}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  execFileSync('tar', ['xzf', file, '-C', tmp, '--strip-components=2', 'package/dist']);
  rebase(tmp);
  fs.copyFileSync(path.join(HERE, 'app-config.js'), path.join(tmp, 'app-config.js'));
  await bundleExtension(tmp);
  fs.writeFileSync(path.join(tmp, 'BUILD_INFO.json'), JSON.stringify({ ...want, built: new Date().toISOString() }, null, 1));
  fs.rmSync(BUILD, { recursive: true, force: true });
  fs.renameSync(tmp, BUILD);
  log(`built OHIF ${version} with the MONAI Label extension in ${((Date.now() - t0) / 1000).toFixed(1)} s -> ${BUILD}`);
}

main().catch(e => fail(e.stack || String(e)));
