/**
 * Rate limits on Node, counted by rate-limiter-flexible: in Redis when a URL is given, so that every replica
 * sharing it enforces one limit; in this process otherwise. When Redis fails or is slow (a timeout and a
 * circuit breaker, as for the shared cache), each replica counts in process until Redis is back: limits stay
 * enforced, per replica, rather than refusing everything or letting everything through.
 */
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { RateDecision, RateLimiter, RatePolicy } from '../core/access.js';
import { createGuardedRedis, type GuardedRedis } from './redis-guard.js';
import type { RedisObserver } from './redis-tier.js';

export interface RateLimiterOptions {
  /** Shared counts; absent = in process. */
  redis?: { url: string; timeoutMs: number; breakAfter: number; probeMs: number };
  /** Told of every Redis call (`limit`, `ping`): redis_calls_total and redis_call_seconds. */
  observer?: RedisObserver;
}

export interface NodeRateLimiter extends RateLimiter {
  /** `shared` while counts go to Redis; `local` when there is none, or it is down (counts in process). */
  mode(): 'shared' | 'local';
  /** Requests counted in process because Redis could not be used. */
  fallbacks(): number;
  close(): void;
}

/** Limit names in Redis carry the policy, so that keys with different limits never share a count. */
const prefix = (p: RatePolicy) => `onnxserve:rl:${p.points}:${p.windowSeconds}`;

export function createRateLimiter(opts: RateLimiterOptions = {}): NodeRateLimiter {
  const redis: GuardedRedis | undefined = opts.redis
    ? createGuardedRedis({
        ...opts.redis,
        purpose: 'shared rate limits (counting in process)',
        onCall: (op, seconds, ok) => opts.observer?.call(op, seconds, ok),
      })
    : undefined;
  // One Redis limiter per distinct policy (keys may have their own rate); a handful at most.
  const shared = new Map<string, RateLimiterRedis>();
  const local = createLocalCounter();
  let fellBack = 0;

  const inRedis = (r: GuardedRedis, p: RatePolicy) => {
    const id = prefix(p);
    let l = shared.get(id);
    if (!l) {
      l = new RateLimiterRedis({
        storeClient: r.client,
        points: p.points,
        duration: p.windowSeconds,
        keyPrefix: id,
        rejectIfRedisNotReady: true,
        // A caller already over the limit is refused here until its window ends, without asking Redis:
        // a flood costs Redis nothing.
        inMemoryBlockOnConsumed: p.points,
      });
      shared.set(id, l);
    }
    return l;
  };

  /** `n` requests counted in one call; a refusal is an answer, anything else a failure of the store. */
  const count = async (limiter: RateLimiterRedis, subject: string, n: number) => {
    try {
      return await limiter.consume(subject, n);
    } catch (err) {
      if (err instanceof RateLimiterRes) return err;
      throw err;
    }
  };

  /** One group's requests counted together: in Redis while its circuit is closed, else here. */
  const settle = async (g: Group) => {
    const n = g.waiters.length;
    let res: RateLimiterRes | undefined;
    if (redis?.closed()) {
      try {
        res = await redis.call('limit', () => count(inRedis(redis, g.policy), g.subject, n));
      } catch {
        // Redis failed or was slow: counted here (below).
      }
    }
    if (res) {
      for (const [i, d] of decide(res, n, g.policy).entries()) g.waiters[i]!(d);
      return;
    }
    fellBack += n;
    for (const w of g.waiters) w(local.consume(g.subject, g.policy));
  };

  // Requests of one event-loop turn for the same subject and policy are counted with one call (one Redis
  // round trip), exactly as if counted one by one: per request, the round trip and the reply's parsing cost
  // this thread a fifth of its throughput (bench:access). rate-limiter-flexible consumes n points at once;
  // which of the n are within the limit is worked out above.
  let groups = new Map<string, Group>();
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const ready = groups;
    groups = new Map();
    for (const g of ready.values()) {
      settle(g).catch(() => {
        // Even in-process counting failed (it cannot, short of a bug): let the requests through.
        for (const w of g.waiters) w({ allowed: true, resetSeconds: 0 });
      });
    }
  };

  return {
    consume(subject, policy) {
      // In process only: counted at once, and answered at once.
      if (!redis) return local.consume(subject, policy);
      return new Promise<RateDecision>((resolve) => {
        const id = `${prefix(policy)}|${subject}`;
        let g = groups.get(id);
        if (!g) {
          g = { subject, policy, waiters: [] };
          groups.set(id, g);
        }
        g.waiters.push(resolve);
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    mode: () => (redis?.connected() ? 'shared' : 'local'),
    fallbacks: () => fellBack,
    close() {
      redis?.close();
    },
  };
}

/**
 * Fixed windows counted in this process, as rate-limiter-flexible counts them (a subject's window opens
 * with its first request and lasts the policy's window), so that a replica whose Redis is down limits
 * callers the same way. Hand-written because this runs on every keyed request and rate-limiter-flexible's
 * memory limiter answers only through a promise: here the answer is synchronous and the guard in front of
 * a route need not wait a turn for it (bench:access). Entries whose window has ended are swept when the
 * table has doubled since the last sweep, so memory follows the callers of the current window.
 */
export function createLocalCounter(now: () => number = Date.now) {
  // Per policy, then per subject: no key string is built per request. Policies are told apart by identity
  // (the guard passes the one object each limit is made as, once).
  const byPolicy = new Map<RatePolicy, Map<string, { count: number; endsAt: number }>>();
  let open = 0;
  let sweepAt = 1024;
  const sweep = (t: number) => {
    open = 0;
    for (const windows of byPolicy.values()) {
      for (const [k, w] of windows) if (w.endsAt <= t) windows.delete(k);
      open += windows.size;
    }
    sweepAt = Math.max(1024, open * 2);
  };
  return {
    consume(subject: string, policy: RatePolicy): RateDecision {
      const t = now();
      let windows = byPolicy.get(policy);
      if (windows === undefined) {
        windows = new Map();
        byPolicy.set(policy, windows);
      }
      let w = windows.get(subject);
      if (w === undefined || w.endsAt <= t) {
        if (w === undefined && ++open >= sweepAt) sweep(t);
        w = { count: 0, endsAt: t + policy.windowSeconds * 1000 };
        windows.set(subject, w);
      }
      w.count++;
      const allowed = w.count <= policy.points;
      return {
        allowed,
        remaining: allowed ? policy.points - w.count : 0,
        resetSeconds: Math.ceil((w.endsAt - t) / 1000),
      };
    },
    /** Subjects with a window open or not yet swept. */
    size: () => {
      let n = 0;
      for (const windows of byPolicy.values()) n += windows.size;
      return n;
    },
  };
}

/**
 * What `n` requests counted together were told: the count before them is `consumedPoints - n`, so the first
 * (points - before) are within the limit. A caller blocked in memory (already over, this window) gets a
 * result that counted nothing: all n are refused.
 */
function decide(res: RateLimiterRes, n: number, policy: RatePolicy): RateDecision[] {
  const before = res.consumedPoints === 0 ? policy.points : res.consumedPoints - n;
  const resetSeconds = Math.ceil(res.msBeforeNext / 1000);
  const decisions: RateDecision[] = [];
  for (let i = 0; i < n; i++) {
    const allowed = before + i + 1 <= policy.points;
    decisions.push({ allowed, remaining: allowed ? policy.points - before - i - 1 : 0, resetSeconds });
  }
  return decisions;
}

interface Group {
  subject: string;
  policy: RatePolicy;
  waiters: ((d: RateDecision) => void)[];
}
