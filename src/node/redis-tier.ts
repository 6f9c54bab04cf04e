import type { CachedRow, CacheTier } from '../core/cache.js';
import { createGuardedRedis } from './redis-guard.js';

export interface RedisTierOptions {
  url: string;
  ttlSeconds: number;
  /** Most ms a lookup may wait on Redis before it counts as a miss (and a failure). */
  timeoutMs: number;
  /** Consecutive failures that open the circuit: Redis is then skipped without waiting. */
  breakAfter: number;
  /** How often an open circuit probes Redis in the background. */
  probeMs: number;
  observer?: RedisObserver;
}

export interface RedisObserver {
  call(op: 'mget' | 'set' | 'ping', seconds: number, ok: boolean): void;
}

interface PendingGet {
  keys: readonly string[];
  resolve: (rows: (CachedRow | undefined)[]) => void;
}

/**
 * L2: Redis shared by every replica. Lookups and writes of concurrent requests are coalesced into one MGET
 * and one pipeline per event-loop turn. Every call runs under a timeout and a circuit breaker: when Redis
 * fails or is slow, requests stop waiting on it, a background probe retries it, and it rejoins by itself.
 */
export function createRedisTier(opts: RedisTierOptions) {
  const redis = createGuardedRedis({
    url: opts.url,
    purpose: 'the shared cache',
    timeoutMs: opts.timeoutMs,
    breakAfter: opts.breakAfter,
    probeMs: opts.probeMs,
    onCall: (op, seconds, ok) => opts.observer?.call(op as 'mget' | 'set' | 'ping', seconds, ok),
  });
  const { client, call } = redis;
  // One command writes every row of an event-loop turn with its TTL: a pipeline would build a command
  // object per key on this thread, which cost more than the round trip it saves.
  client.defineCommand('setManyEx', {
    lua: "local ttl = ARGV[#ARGV] for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl) end return #KEYS",
  });

  let gets: PendingGet[] = [];
  let sets: (readonly [string, CachedRow])[] = [];
  let scheduled = false;
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  };

  function flush() {
    scheduled = false;
    const batch = gets;
    const writes = sets;
    gets = [];
    sets = [];
    if (batch.length > 0) {
      const keys = batch.flatMap((g) => g.keys);
      call('mget', () => client.mget(keys)).then(
        (values) => {
          let i = 0;
          for (const g of batch) {
            g.resolve(g.keys.map(() => decode(values[i++])));
          }
        },
        () => {
          for (const g of batch) g.resolve(g.keys.map(() => undefined));
        },
      );
    }
    if (writes.length > 0 && redis.closed()) {
      const args: (string | number)[] = [writes.length];
      for (const [k] of writes) args.push(k);
      for (const [, v] of writes) args.push(JSON.stringify(v));
      args.push(opts.ttlSeconds);
      call('set', () =>
        (client as unknown as { setManyEx(...a: (string | number)[]): Promise<number> }).setManyEx(...args),
      ).catch(() => {});
    }
  }

  const tier: CacheTier = {
    name: 'l2',
    getMany(keys) {
      if (redis.circuit() === 'open') return Promise.resolve(keys.map(() => undefined));
      return new Promise((resolve) => {
        gets.push({ keys, resolve });
        schedule();
      });
    },
    setMany(entries) {
      for (const e of entries) sets.push(e);
      schedule();
    },
  };

  return Object.assign(tier, {
    client,
    connected: redis.connected,
    circuit: redis.circuit,
    status: redis.status,
    lastError: redis.lastError,
    async close() {
      redis.close();
    },
  });
}

export type RedisTier = ReturnType<typeof createRedisTier>;

function decode(value: string | null | undefined): CachedRow | undefined {
  if (value == null) return undefined;
  try {
    return JSON.parse(value) as CachedRow;
  } catch {
    return undefined;
  }
}
