/**
 * Prediction cache, runtime-neutral: keys, the in-process tier, and the tiered lookup. A remote tier
 * (Redis on Node, the Cache API on Workers) plugs in through `CacheTier`.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { LRUCache } from 'lru-cache';
import type { Tensor } from './tensor.js';

export type TierName = 'l1' | 'l2';

/** One row's outputs: for each output name, that row's values (int64 as numbers). */
export type CachedRow = Record<string, number[]>;

export interface CacheTier {
  readonly name: TierName;
  getMany(keys: readonly string[]): Promise<(CachedRow | undefined)[]>;
  /** Fire and forget: a failed write costs a future miss, never a request. */
  setMany(entries: readonly [string, CachedRow][]): void;
}

export interface CacheObserver {
  lookup(tier: TierName, hits: number, misses: number): void;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
function base64url(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  if (i < bytes.length) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + (i + 1 < bytes.length ? B64[(n >> 6) & 63]! : '');
  }
  return out;
}

const encoder = new TextEncoder();
/** Rows of at most this many bytes are keyed by the bytes themselves (exact); longer ones by their SHA-256. */
export const EXACT_KEY_BYTES = 256;

/**
 * Keys for the rows of a request. The model part hashes the model's name, its file's sha256 and the
 * outputs asked for, so a new or replaced model file never meets an old entry. The row part is the row's
 * bytes in the model's input order and type (float32 for most): `{"a":1,"b":2}`, `{"b":2,"a":1}` and
 * `[1,2]` give the same bytes, hence the same key. The same function runs on Node and on the edge.
 */
export function createKeyer(
  model: { name: string; sha256: string },
  inputs: readonly string[],
  outputs: readonly string[],
) {
  const modelTag = base64url(
    sha256(encoder.encode(`${model.name}\0${model.sha256}\0${[...outputs].sort().join(',')}`)).subarray(
      0,
      12,
    ),
  );
  return (tensors: Record<string, Tensor>, rows: number): string[] => {
    const keys: string[] = new Array(rows);
    const views = inputs.map((name) => {
      const t = tensors[name]!;
      const bytesPerRow = t.data.byteLength / rows;
      return { bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), bytesPerRow };
    });
    const rowBytes = views.reduce((n, v) => n + v.bytesPerRow, 0);
    const row = new Uint8Array(rowBytes);
    for (let r = 0; r < rows; r++) {
      let off = 0;
      for (const v of views) {
        row.set(v.bytes.subarray(r * v.bytesPerRow, (r + 1) * v.bytesPerRow), off);
        off += v.bytesPerRow;
      }
      keys[r] =
        rowBytes <= EXACT_KEY_BYTES
          ? `p1:${modelTag}:${base64url(row)}`
          : `p1:${modelTag}:h:${base64url(sha256(row))}`;
    }
    return keys;
  };
}

export interface MemoryTierOptions {
  maxEntries: number;
  maxBytes: number;
  ttlMs: number;
}

const sizeOf = (key: string, row: CachedRow) => {
  let n = key.length * 2 + 64;
  for (const k in row) n += k.length * 2 + row[k]!.length * 8 + 32;
  return n;
};

/** L1: an LRU in this process, bounded by entries and bytes, with a TTL. */
export function createMemoryTier(opts: MemoryTierOptions) {
  const lru = new LRUCache<string, CachedRow>({
    max: opts.maxEntries,
    maxSize: opts.maxBytes,
    sizeCalculation: (v, k) => sizeOf(k, v),
    ttl: opts.ttlMs,
  });
  return {
    name: 'l1' as const,
    getSync: (keys: readonly string[]) => keys.map((k) => lru.get(k)),
    getMany: async (keys: readonly string[]) => keys.map((k) => lru.get(k)),
    setMany(entries: readonly [string, CachedRow][]) {
      for (const [k, v] of entries) lru.set(k, v);
    },
    get size() {
      return lru.size;
    },
    get bytes() {
      return lru.calculatedSize;
    },
  };
}

export type MemoryTier = ReturnType<typeof createMemoryTier>;

/** L1 (synchronous) in front of an optional L2; what L2 has is copied into L1. */
export function createTieredCache(l1: MemoryTier, l2?: CacheTier, observer?: CacheObserver) {
  return {
    l1,
    l2,
    /** L1 only, synchronously. */
    local(keys: readonly string[]): (CachedRow | undefined)[] {
      const rows = l1.getSync(keys);
      let hits = 0;
      for (const r of rows) if (r) hits++;
      observer?.lookup('l1', hits, keys.length - hits);
      return rows;
    },
    /** L2 only (one call for all keys); hits are copied into L1. */
    async remote(keys: readonly string[]): Promise<(CachedRow | undefined)[]> {
      if (!l2 || keys.length === 0) return keys.map(() => undefined);
      const found = await l2.getMany(keys);
      const promote: [string, CachedRow][] = [];
      found.forEach((row, j) => {
        if (row) promote.push([keys[j]!, row]);
      });
      l1.setMany(promote);
      observer?.lookup('l2', promote.length, keys.length - promote.length);
      return found;
    },
    set(entries: readonly [string, CachedRow][]) {
      if (entries.length === 0) return;
      l1.setMany(entries);
      l2?.setMany(entries);
    },
  };
}

export type TieredCache = ReturnType<typeof createTieredCache>;
