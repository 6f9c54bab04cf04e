import { CircuitState, ConsecutiveBreaker, circuitBreaker, handleAll } from 'cockatiel';
import { Redis } from 'ioredis';
import type { CachedRow, CacheTier } from '../core/cache.js';
import { log } from './log.js';

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
  let everReady = false;
  const where = redactedUrl(opts.url);
  client.on('error', (err) => {
    const first = lastError === '' && !everReady;
    lastError = String(err?.message ?? err);
    // Configured but unreachable from the start: say so once (serving goes on without the shared tier).
    if (first)
      log('warn', 'redis unreachable at start: serving without the shared cache until it answers', {
        redis: where,
        error: lastError,
      });
  });
  client.on('ready', () => {
    if (!everReady && lastError !== '') log('info', 'redis connected', { redis: where });
    everReady = true;
  });

  const breaker = circuitBreaker(handleAll, {
    halfOpenAfter: opts.probeMs,
    breaker: new ConsecutiveBreaker(opts.breakAfter),
  });

  const call = async <T>(op: 'mget' | 'set' | 'ping', fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const result = await breaker.execute(() => withinTimeout(fn(), opts.timeoutMs));
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
    if (state === CircuitState.Open)
      log('warn', 'redis circuit open: lookups skip the shared cache', { redis: where, error: lastError });
    if (state === CircuitState.Closed)
      log('info', 'redis circuit closed: shared cache back', { redis: where });
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
    /** Connected, and the circuit closed: requests use the tier (not while half-open: only a probe may). */
    connected: () => client.status === 'ready' && breaker.state === CircuitState.Closed,
    /** The breaker's state as operators name it: closed, open, half-open (or isolated). */
    circuit: () => CIRCUIT_NAMES[breaker.state],
    /** Why the tier is not in use, for /health. */
    status(): string {
      if (client.status === 'ready' && breaker.state === CircuitState.Closed) return 'connected';
      if (breaker.state !== CircuitState.Closed)
        return `unavailable (circuit ${CIRCUIT_NAMES[breaker.state]})`;
      return `unavailable (${client.status}${lastError ? `: ${lastError}` : ''})`;
    },
    lastError: () => lastError,
    async close() {
      if (probe) clearInterval(probe);
      client.disconnect();
    },
  });
}

export type RedisTier = ReturnType<typeof createRedisTier>;

const CIRCUIT_NAMES: Record<CircuitState, string> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Isolated]: 'isolated',
};

class RedisTimeout extends Error {
  constructor(ms: number) {
    super(`redis did not answer within ${ms} ms`);
  }
}

/**
 * A timeout that counts Redis's time, not this thread's: when the timer fires, a reply that arrived while the
 * event loop was busy elsewhere (a large request's parse, a GC pause) is still unread in the socket. Waiting
 * one more poll phase (setImmediate runs after it) reads it, so a stalled loop is not blamed on Redis and
 * does not open the circuit.
 */
function withinTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (settled) return;
        settled = true;
        reject(new RedisTimeout(ms));
      });
    }, ms);
    work.then(
      (v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      },
      (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** The URL without its password, for logs. */
function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis (unparseable URL)';
  }
}

function decode(value: string | null | undefined): CachedRow | undefined {
  if (value == null) return undefined;
  try {
    return JSON.parse(value) as CachedRow;
  } catch {
    return undefined;
  }
}
