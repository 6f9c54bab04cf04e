/**
 * Rate limits on Node, counted by rate-limiter-flexible: in Redis when a URL is given, so that every replica
 * sharing it enforces one limit; in this process otherwise. When Redis fails or is slow (a timeout and a
 * circuit breaker, as for the shared cache), each replica counts in process until Redis is back: limits stay
 * enforced, per replica, rather than refusing everything or letting everything through.
 */
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { RateDecision, RateLimiter, RatePolicy } from '../core/access.js';
import { createGuardedRedis, type GuardedRedis } from './redis-guard.js';

export interface RateLimiterOptions {
  /** Shared counts; absent = in process. */
  redis?: { url: string; timeoutMs: number; breakAfter: number; probeMs: number };
}

export interface NodeRateLimiter extends RateLimiter {
  /** `shared` while counts go to Redis; `local` when there is none, or it is down (counts in process). */
  mode(): 'shared' | 'local';
  /** Requests counted in process because Redis could not be used. */
  fallbacks(): number;
  close(): void;
}

const decision = (res: RateLimiterRes, allowed: boolean, points: number): RateDecision => ({
  allowed,
  remaining: allowed ? Math.min(points, res.remainingPoints) : 0,
  resetSeconds: Math.ceil(res.msBeforeNext / 1000),
});

/** Limit names in Redis carry the policy, so that keys with different limits never share a count. */
const prefix = (p: RatePolicy) => `onnxserve:rl:${p.points}:${p.windowSeconds}`;

export function createRateLimiter(opts: RateLimiterOptions = {}): NodeRateLimiter {
  const redis: GuardedRedis | undefined = opts.redis
    ? createGuardedRedis({ ...opts.redis, purpose: 'shared rate limits (counting in process)' })
    : undefined;
  // One limiter per distinct policy (keys may have their own rate); a handful at most.
  const memory = new Map<string, RateLimiterMemory>();
  const shared = new Map<string, RateLimiterRedis>();
  let fellBack = 0;

  const local = (p: RatePolicy) => {
    const id = prefix(p);
    let l = memory.get(id);
    if (!l) {
      l = new RateLimiterMemory({ points: p.points, duration: p.windowSeconds, keyPrefix: id });
      memory.set(id, l);
    }
    return l;
  };
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

  /** Allowed or refused by a limiter; anything else it throws is a failure of its store. */
  const ask = async (limiter: RateLimiterMemory | RateLimiterRedis, subject: string, p: RatePolicy) => {
    try {
      return decision(await limiter.consume(subject), true, p.points);
    } catch (err) {
      if (err instanceof RateLimiterRes) return decision(err, false, p.points);
      throw err;
    }
  };

  return {
    async consume(subject, policy) {
      if (redis?.closed()) {
        try {
          return await redis.call('limit', () => ask(inRedis(redis, policy), subject, policy));
        } catch {
          // Redis failed or was slow: count this request here (below).
        }
      }
      if (redis) fellBack++;
      return ask(local(policy), subject, policy);
    },
    mode: () => (redis?.connected() ? 'shared' : 'local'),
    fallbacks: () => fellBack,
    close() {
      redis?.close();
    },
  };
}
