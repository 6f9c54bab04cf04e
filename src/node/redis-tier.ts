import {
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleAll,
  TimeoutStrategy,
  timeout,
  wrap,
} from 'cockatiel';
import { Redis } from 'ioredis';
import type { CachedRow, CacheTier } from '../core/cache.js';

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
  const client = new Redis(opts.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: false,
  });
  // One command writes every row of an event-loop turn with its TTL: a pipeline would build a command
  // object per key on this thread, which cost more than the round trip it saves.
  client.defineCommand('setManyEx', {
    lua: "local ttl = ARGV[#ARGV] for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl) end return #KEYS",
  });
  let lastError = '';
  client.on('error', (err) => {
    lastError = String(err?.message ?? err);
  });

  const breaker = circuitBreaker(handleAll, {
    halfOpenAfter: opts.probeMs,
    breaker: new ConsecutiveBreaker(opts.breakAfter),
  });
  const policy = wrap(breaker, timeout(opts.timeoutMs, TimeoutStrategy.Aggressive));

  const call = async <T>(op: 'mget' | 'set' | 'ping', fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const result = await policy.execute(fn);
      opts.observer?.call(op, (performance.now() - started) / 1000, true);
      return result;
    } catch (err) {
      opts.observer?.call(op, (performance.now() - started) / 1000, false);
      throw err;
    }
  };

  // While the circuit is open, probe in the background so that no request is the one that waits.
  let probe: NodeJS.Timeout | undefined;
  breaker.onStateChange((state) => {
    if (state === CircuitState.Open && !probe) {
      probe = setInterval(() => {
        call('ping', () => client.ping()).catch(() => {});
      }, opts.probeMs);
      probe.unref();
    } else if (state === CircuitState.Closed && probe) {
      clearInterval(probe);
      probe = undefined;
    }
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
    if (writes.length > 0 && breaker.state === CircuitState.Closed) {
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
      if (breaker.state === CircuitState.Open) return Promise.resolve(keys.map(() => undefined));
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
    /** Connected, and the circuit lets requests through. */
    connected: () => client.status === 'ready' && breaker.state !== CircuitState.Open,
    circuit: () => CircuitState[breaker.state].toLowerCase(),
    lastError: () => lastError,
    async close() {
      if (probe) clearInterval(probe);
      client.disconnect();
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
