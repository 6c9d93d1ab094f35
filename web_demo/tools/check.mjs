// Does the page's reader accept a model file? The same code the page runs (src/modelfile.js),
// under Node: prints one line, `ok` or `refused: <reason>`, exit 0 (accepted) or 2 (refused).
//   node web_demo/tools/check.mjs FILE
//   node web_demo/tools/check.mjs --vectors DIR   # every file of DIR/manifest.json (python -m
//                                                 # tftl.runtime.vectors): one JSON list of verdicts
import { readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { MAX_MODEL_BYTES, ModelFileError, readModel } from '../src/modelfile.js';

async function verdict(path) {
  try {
    if (statSync(path).size > MAX_MODEL_BYTES) {
      return { verdict: 'damaged', message: `${path} is over the ${MAX_MODEL_BYTES} bytes a model file may have` };
    }
    await readModel(new Uint8Array(readFileSync(path)), basename(path));
    return { verdict: 'accepted', message: '' };
  } catch (e) {
    if (e instanceof ModelFileError) return { verdict: e.kind, message: e.message };
    if (e.code) return { verdict: 'unreadable', message: `${path} cannot be read (${e.code})` };
    throw e;
  }
}

const args = process.argv.slice(2);
if (args.length === 2 && args[0] === '--vectors') {
  const manifest = JSON.parse(readFileSync(join(args[1], 'manifest.json'), 'utf8'));
  const out = [];
  // Checkpoints ("model" rows) are tftl-train's and the Android app's; the page keeps its state in IndexedDB.
  for (const { file, model } of manifest) {
    out.push({ file, ...(model ? { verdict: 'not_read', message: '' } : await verdict(join(args[1], file))) });
  }
  console.log(JSON.stringify(out));
} else if (args.length === 1 && !args[0].startsWith('-')) {
  const { verdict: kind, message } = await verdict(args[0]);
  console.log(kind === 'accepted' ? 'ok' : `refused: ${message}`);
  process.exitCode = kind === 'accepted' ? 0 : 2;
} else {
  console.error('usage: node web_demo/tools/check.mjs FILE | --vectors DIR');
  process.exitCode = 2;
}
