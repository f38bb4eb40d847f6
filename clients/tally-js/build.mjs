// Builds the package: dist/tally.js (ES module), dist/tally.min.js (a script that defines the
// global `Tally`), and dist/tally.d.ts. Fails when either script passes 3 KB gzipped.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET_GZIP_BYTES = 3 * 1024;
const common = { entryPoints: ['src/tally.ts'], bundle: true, minify: true, target: ['es2020'], legalComments: 'none', logLevel: 'warning' };
await build({ ...common, format: 'esm', outfile: 'dist/tally.js' });
await build({ ...common, format: 'iife', globalName: 'Tally', outfile: 'dist/tally.min.js' });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.'], { stdio: 'inherit' });

for (const file of ['dist/tally.js', 'dist/tally.min.js']) {
  const gzipped = gzipSync(readFileSync(file), { level: 9 }).length;
  console.error(`tally-js: ${file} ${gzipped} bytes gzipped (budget ${BUDGET_GZIP_BYTES})`);
  if (gzipped > BUDGET_GZIP_BYTES) {
    throw new Error(`${file} is ${gzipped} bytes gzipped, over the ${BUDGET_GZIP_BYTES}-byte budget`);
  }
}
