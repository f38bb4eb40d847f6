// Bundles the console: one script and one style sheet with content-hashed names, the page that
// names them, and the static files of public/. Fails when the gzipped script passes its budget.
//   node build.mjs --outdir=<dir>
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

const BUDGET_GZIP_BYTES = 250 * 1024;
const arg = process.argv.find((a) => a.startsWith('--outdir='));
const outdir = arg ? arg.slice('--outdir='.length) : 'dist';
mkdirSync(outdir, { recursive: true });

const result = await build({
  entryPoints: { console: 'src/main.tsx' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  entryNames: '[name]-[hash]',
  outdir,
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const script = outputs.find((f) => f.endsWith('.js'));
const styles = outputs.find((f) => f.endsWith('.css'));
if (!script || !styles) throw new Error(`expected a script and a style sheet, got ${outputs}`);

const page = readFileSync('index.html', 'utf8')
  .replace('%SCRIPT%', `/assets/${script}`)
  .replace('%STYLES%', `/assets/${styles}`);
writeFileSync(join(outdir, 'index.html'), page);
cpSync('public', outdir, { recursive: true });

const gzipped = gzipSync(readFileSync(join(outdir, script)), { level: 9 }).length;
console.error(`console: ${script} ${(gzipped / 1024).toFixed(1)} KB gzipped (budget ${BUDGET_GZIP_BYTES / 1024} KB)`);
if (gzipped > BUDGET_GZIP_BYTES) {
  throw new Error(`the console's script is ${gzipped} bytes gzipped, over its ${BUDGET_GZIP_BYTES}-byte budget`);
}
