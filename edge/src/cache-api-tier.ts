/**
 * L2 on the edge: the Workers Cache API of the data centre, keyed exactly as Redis is on Node (the same key
 * function from the core), so a key means the same row, model file and outputs everywhere.
 */
import type { CachedRow, CacheTier } from '../../src/core/index.js';

const ORIGIN = 'https://onnx-serve.cache';

export function createCacheApiTier(
  cache: Cache,
  opts: { ttlSeconds: number; waitUntil: (p: Promise<unknown>) => void },
): CacheTier {
  const url = (key: string) => `${ORIGIN}/${encodeURIComponent(key)}`;
  return {
    name: 'l2',
    async getMany(keys) {
      return Promise.all(
        keys.map(async (k) => {
          try {
            const res = await cache.match(url(k));
            return res ? ((await res.json()) as CachedRow) : undefined;
          } catch {
            return undefined;
          }
        }),
      );
    },
    setMany(entries) {
      for (const [k, v] of entries) {
        const res = new Response(JSON.stringify(v), {
          headers: { 'content-type': 'application/json', 'cache-control': `max-age=${opts.ttlSeconds}` },
        });
        opts.waitUntil(cache.put(url(k), res).catch(() => {}));
      }
    },
  };
}
