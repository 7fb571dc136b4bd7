// A small static server for the browser tests: the bundle at `/`, and model repositories in
// the Hugging Face Hub's URL layout (`/api/models/{repo}/revision/{rev}`,
// `/{repo}/resolve/{rev}/{path}` with Content-Length, ETag, X-Linked-Size/Etag and ranges),
// behind the COOP/COEP headers that WebAssembly threads need. It logs every request, and can
// cut a download halfway once (`dropOnce`) to exercise resuming.

import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

async function walk(dir, base = dir, out = []) {
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    // Follow symlinks: the test links the cached model instead of copying it.
    const st = await fs.stat(p);
    if (st.isDirectory()) await walk(p, base, out);
    else out.push(path.relative(base, p).split(path.sep).join('/'));
  }
  return out;
}

function inside(root, rel) {
  const p = path.resolve(root, rel);
  return p === root || p.startsWith(root + path.sep) ? p : null;
}

// `root`: the bundle directory; `models`: a directory holding `{owner}/{name}/...` repos;
// `isolated: false` leaves out COOP/COEP, as a plain static host would.
export async function startServer({ root, models, isolated = true }) {
  root = path.resolve(root);
  models = path.resolve(models);
  const log = [];
  const dropOnce = new Set();
  // Paths whose X-Linked-Etag is announced wrong, as if the file changed in transit.
  const badSha = new Set();
  const shaCache = new Map();

  async function sha256(file) {
    if (!shaCache.has(file)) {
      const h = createHash('sha256');
      await new Promise((resolve, reject) => {
        createReadStream(file).on('data', (d) => h.update(d)).on('end', resolve).on('error', reject);
      });
      shaCache.set(file, h.digest('hex'));
    }
    return shaCache.get(file);
  }

  function headers(extra = {}) {
    const isolation = isolated
      ? {
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cross-Origin-Resource-Policy': 'same-origin',
      }
      : {};
    return { ...isolation, 'Cache-Control': 'no-store', ...extra };
  }

  async function sendFile(req, res, file, { hub = false, urlPath }) {
    let st;
    try {
      st = await fs.stat(file);
    } catch {
      res.writeHead(404, headers({ 'Content-Type': 'text/plain' }));
      res.end('not found');
      return;
    }
    if (!st.isFile()) {
      res.writeHead(404, headers({ 'Content-Type': 'text/plain' }));
      res.end('not found');
      return;
    }
    const size = st.size;
    const extra = { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Accept-Ranges': 'bytes' };
    if (hub) {
      const sha = badSha.has(urlPath) ? '0'.repeat(64) : await sha256(file);
      extra.ETag = `"${sha}"`;
      extra['X-Linked-Etag'] = `"${sha}"`;
      extra['X-Linked-Size'] = String(size);
      extra['Access-Control-Expose-Headers'] = 'X-Linked-Etag, X-Linked-Size, ETag, Content-Range';
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size || start > end) {
        res.writeHead(416, headers({ 'Content-Range': `bytes */${size}` }));
        res.end();
        return;
      }
      res.writeHead(206, headers({ ...extra, 'Content-Length': String(end - start + 1), 'Content-Range': `bytes ${start}-${end}/${size}` }));
      if (req.method === 'HEAD') return res.end();
      createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, headers({ ...extra, 'Content-Length': String(size) }));
    if (req.method === 'HEAD') return res.end();
    if (dropOnce.has(urlPath)) {
      dropOnce.delete(urlPath);
      // Send half, then cut the connection.
      const half = Math.max(1, Math.floor(size / 2));
      const s = createReadStream(file, { start: 0, end: half - 1 });
      s.on('data', (d) => res.write(d));
      s.on('end', () => setTimeout(() => res.socket.destroy(), 50));
      return;
    }
    createReadStream(file).pipe(res);
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const p = decodeURIComponent(url.pathname);
    log.push({ method: req.method, path: p, range: req.headers.range || null });
    try {
      const listing = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(p);
      if (listing) {
        const dir = inside(models, listing[1]);
        let files = null;
        try {
          files = dir ? await walk(dir) : null;
        } catch {
          files = null;
        }
        if (!files) {
          res.writeHead(404, headers({ 'Content-Type': 'application/json' }));
          res.end(JSON.stringify({ error: 'Repository not found' }));
          return;
        }
        res.writeHead(200, headers({ 'Content-Type': 'application/json' }));
        res.end(JSON.stringify({ id: listing[1], sha: listing[2], siblings: files.sort().map((f) => ({ rfilename: f })) }));
        return;
      }
      const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(p);
      if (resolve) {
        const file = inside(models, `${resolve[1]}/${resolve[3]}`);
        if (!file) {
          res.writeHead(404, headers());
          res.end();
          return;
        }
        await sendFile(req, res, file, { hub: true, urlPath: p });
        return;
      }
      const rel = p === '/' ? 'index.html' : p.slice(1);
      const file = inside(root, rel);
      if (!file) {
        res.writeHead(404, headers());
        res.end();
        return;
      }
      await sendFile(req, res, file, { urlPath: p });
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, headers({ 'Content-Type': 'text/plain' }));
      res.end(String(e));
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    dropOnce,
    badSha,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}
