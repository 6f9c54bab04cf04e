/**
 * What every use of Redis here shares (the shared cache tier, shared rate limits): a client that never
 * queues commands while disconnected, logs once when Redis is unreachable at start, and a guard that runs
 * each call under a timeout and a circuit breaker, probing in the background while the circuit is open, so
 * that a failing or slow Redis degrades service instead of holding requests.
 */
import { CircuitState, ConsecutiveBreaker, circuitBreaker, handleAll } from 'cockatiel';
import { Redis } from 'ioredis';
import { log } from './log.js';

export interface RedisGuardOptions {
  url: string;
  /** What this connection is for, in log lines: "the shared cache", "shared rate limits". */
  purpose: string;
  /** Most ms a call may wait on Redis before it counts as a failure. */
  timeoutMs: number;
  /** Consecutive failures that open the circuit: Redis is then skipped without waiting. */
  breakAfter: number;
  /** How often an open circuit probes Redis in the background. */
  probeMs: number;
  /** Told of every call: its name, how long it took, whether it succeeded. */
  onCall?: (op: string, seconds: number, ok: boolean) => void;
}

export function createGuardedRedis(opts: RedisGuardOptions) {
  const client = new Redis(opts.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: false,
  });
  let lastError = '';
  let everReady = false;
  const where = redactedUrl(opts.url);
  client.on('error', (err) => {
    const first = lastError === '' && !everReady;
    lastError = String(err?.message ?? err);
    // Configured but unreachable from the start: say so once (serving goes on without it).
    if (first)
      log('warn', `redis unreachable at start: serving without ${opts.purpose} until it answers`, {
        redis: where,
        error: lastError,
      });
  });
  client.on('ready', () => {
    if (!everReady && lastError !== '') log('info', 'redis connected', { redis: where, for: opts.purpose });
    everReady = true;
  });

  const breaker = circuitBreaker(handleAll, {
    halfOpenAfter: opts.probeMs,
    breaker: new ConsecutiveBreaker(opts.breakAfter),
  });

  const call = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const result = await breaker.execute(() => withinTimeout(fn(), opts.timeoutMs));
      opts.onCall?.(op, (performance.now() - started) / 1000, true);
      return result;
    } catch (err) {
      opts.onCall?.(op, (performance.now() - started) / 1000, false);
      throw err;
    }
  };

  // While the circuit is open, probe in the background so that no request is the one that waits.
  let probe: NodeJS.Timeout | undefined;
  breaker.onStateChange((state) => {
    if (state === CircuitState.Open)
      log('warn', `redis circuit open: skipping ${opts.purpose}`, { redis: where, error: lastError });
    if (state === CircuitState.Closed)
      log('info', `redis circuit closed: ${opts.purpose} back`, { redis: where });
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

  return {
    client,
    call,
    /** The circuit is closed: calls go to Redis (while it is open or half-open, only probes do). */
    closed: () => breaker.state === CircuitState.Closed,
    /** Connected, and the circuit closed (not while half-open: only a probe may use it then). */
    connected: () => client.status === 'ready' && breaker.state === CircuitState.Closed,
    /** The breaker's state as operators name it: closed, open, half-open (or isolated). */
    circuit: () => CIRCUIT_NAMES[breaker.state],
    /** Why Redis is not in use, for /health. */
    status(): string {
      if (client.status === 'ready' && breaker.state === CircuitState.Closed) return 'connected';
      if (breaker.state !== CircuitState.Closed)
        return `unavailable (circuit ${CIRCUIT_NAMES[breaker.state]})`;
      return `unavailable (${client.status}${lastError ? `: ${lastError}` : ''})`;
    },
    lastError: () => lastError,
    close() {
      if (probe) clearInterval(probe);
      client.disconnect();
    },
  };
}

export type GuardedRedis = ReturnType<typeof createGuardedRedis>;

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
export function withinTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
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
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis (unparseable URL)';
  }
}
