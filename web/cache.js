// The model cache, shared by the page (listCached, deleteCached) and the worker (downloads).
//
// Each downloaded file is kept in the Cache API under its resolve URL
// (`{host}/{repo}/resolve/{revision}/{path}`), and each repository listing under its API URL,
// so a reload finds everything without a network request. A small index entry per model
// records which files belong to it, for listing and deletion.

export const CACHE_NAME = 'akari-models-v1';
const INDEX_PREFIX = '/__akari-index__/';

export function resolveUrl(host, repo, revision, path) {
  const enc = path.split('/').map(encodeURIComponent).join('/');
  return `${host}/${repo}/resolve/${encodeURIComponent(revision)}/${enc}`;
}

export function listingUrl(host, repo, revision) {
  return `${host}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
}

function indexKey(model) {
  return new URL(INDEX_PREFIX + encodeURIComponent(model), self.location.origin).href;
}

export async function openCache() {
  if (typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    // Some contexts (opaque origins, private modes) refuse storage; downloads still work.
    return null;
  }
}

// Records that `entry.url` (`entry.name` of `model`, `entry.bytes` long) is cached.
export async function addToIndex(cache, model, entry) {
  const key = indexKey(model);
  const old = await cache.match(key);
  const index = old ? await old.json() : { model, files: [] };
  index.files = index.files.filter((f) => f.url !== entry.url);
  index.files.push(entry);
  await cache.put(key, new Response(JSON.stringify(index), { headers: { 'content-type': 'application/json' } }));
}

// Remembers extra URLs (repository listings) that belong to `model`.
export async function addExtraToIndex(cache, model, url) {
  const key = indexKey(model);
  const old = await cache.match(key);
  const index = old ? await old.json() : { model, files: [] };
  index.extra = Array.from(new Set([...(index.extra || []), url]));
  await cache.put(key, new Response(JSON.stringify(index), { headers: { 'content-type': 'application/json' } }));
}

export async function listCached() {
  const cache = await openCache();
  if (!cache) return [];
  const out = [];
  for (const req of await cache.keys()) {
    if (!new URL(req.url).pathname.startsWith(INDEX_PREFIX)) continue;
    const res = await cache.match(req);
    if (!res) continue;
    const index = await res.json();
    const files = index.files.map((f) => ({ name: f.name, bytes: f.bytes }));
    // Only a listing so far (a download that stopped early): nothing to show.
    if (!files.length) continue;
    out.push({ model: index.model, files, bytes: files.reduce((a, f) => a + f.bytes, 0) });
  }
  out.sort((a, b) => a.model.localeCompare(b.model));
  return out;
}

export async function deleteCached(model) {
  const cache = await openCache();
  if (!cache) return;
  const key = indexKey(model);
  const res = await cache.match(key);
  if (!res) return;
  const index = await res.json();
  for (const f of index.files) await cache.delete(f.url);
  for (const u of index.extra || []) await cache.delete(u);
  await cache.delete(key);
}
