// A static server for the page on 127.0.0.1 (no server-side code: it only sends files).
// It sends COOP/COEP so the page is cross-origin isolated and LiteRT.js may use threads.
// Usage: node serve.mjs [port]   (default 8000; 0 picks a free port)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.map': 'application/json', '.png': 'image/png',
};
const PUBLIC = ['index.html', 'style.css', `dist${sep}`];

export function startServer(port = 8000, host = '127.0.0.1') {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const rel = normalize(path === '/' ? 'index.html' : path.slice(1));
    if (!PUBLIC.some((p) => rel === p || (p.endsWith(sep) && rel.startsWith(p)))) {
      res.writeHead(404).end('not found');
      return;
    }
    try {
      const body = await readFile(join(root, rel));
      res.writeHead(200, {
        'Content-Type': TYPES[extname(rel)] || 'application/octet-stream',
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cache-Control': 'no-cache',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found — run npm run build first');
    }
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await startServer(Number(process.argv[2] ?? 8000));
  console.log(`tftl web demo: http://127.0.0.1:${server.address().port}/`);
}
