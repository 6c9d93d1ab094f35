// Bundle the page and its worker into dist/, with the one LiteRT wasm variant each uses:
// litert_wasm_internal (relaxed SIMD, 1 thread) and, for cross-origin isolated pages,
// litert_wasm_threaded_internal. The worker is a classic script: LiteRT.js loads its wasm
// glue with importScripts, which module workers do not have. The wasm files sit beside
// worker.js: the glue looks for them in the directory of the script that runs it.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const WASM = ['litert_wasm_internal', 'litert_wasm_threaded_internal'];

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const common = { bundle: true, minify: true, sourcemap: true, target: 'chrome120', logLevel: 'warning' };
await build({ ...common, entryPoints: [join(here, 'src/main.js')], outfile: join(dist, 'main.js'), format: 'esm' });
await build({ ...common, entryPoints: [join(here, 'src/worker.js')], outfile: join(dist, 'worker.js'), format: 'iife' });
for (const name of WASM) {
  for (const ext of ['.js', '.wasm']) {
    copyFileSync(join(here, 'node_modules/@litertjs/core/wasm', name + ext), join(dist, name + ext));
  }
}
console.log(`built ${dist}`);
