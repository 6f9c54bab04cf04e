/**
 * Keys and rate limits inside workerd: the same middleware as on Node, with keys from the API_KEYS secret
 * and the Workers rate-limiting binding (wrangler.jsonc: KEY_RATE_LIMITER, 100 per 60 s) counting.
 */
import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../../src/core/index.js';
import { buildState, type Env } from '../src/index.js';

const PREDICT_KEY = generateKey();
const ADMIN_KEY = generateKey();
const API_KEYS = [
  keyLine('edge-scorer', ['predict'], keyDigestHex(PREDICT_KEY)),
  keyLine('edge-admin', ['admin'], keyDigestHex(ADMIN_KEY)),
].join('\n');
const ROW = { features: [12, 70.5, 846, 12, 2, 1, 3.5], use_cache: false };

async function appWith(vars: Partial<Env>) {
  const { app } = await buildState({ ...(env as unknown as Env), ...vars });
  return (path: string, init: RequestInit & { key?: string } = {}) => {
    const headers = new Headers(init.headers);
    if (init.key) headers.set('authorization', `Bearer ${init.key}`);
    if (init.body) headers.set('content-type', 'application/json');
    return app.request(`https://edge.test${path}`, { ...init, headers });
  };
}

describe('API keys on the edge', () => {
  it('keyed predictions: 401 without a key, 403 with the wrong scope, 200 with a predict key', async () => {
    const call = await appWith({ API_KEYS, AUTH_PREDICTIONS: 'keyed' });
    const body = JSON.stringify(ROW);
    const none = await call('/predict', { method: 'POST', body });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('ERR_UNAUTHENTICATED');
    const admin = await call('/predict', { method: 'POST', body, key: ADMIN_KEY });
    expect(admin.status).toBe(403);
    const ok = await call('/predict', { method: 'POST', body, key: PREDICT_KEY });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-content-type-options')).toBe('nosniff');
    expect((await call('/health')).status).toBe(200);
  });

  it('admin routes are refused with no admin key configured, and pass with one', async () => {
    const open = await appWith({});
    const off = await open('/audit');
    expect(off.status).toBe(403);
    expect(((await off.json()) as { error: { code: string } }).error.code).toBe('ERR_ADMIN_DISABLED');
    const keyed = await appWith({ API_KEYS });
    expect((await keyed('/audit', { key: PREDICT_KEY })).status).toBe(403);
    // Through to the route: the edge has no audit reader, so 503.
    expect((await keyed('/audit', { key: ADMIN_KEY })).status).toBe(503);
  });

  it('the rate-limiting binding refuses past its limit with 429, Retry-After and RateLimit-Policy', async () => {
    const name = `edge-limited-${Date.now()}`; // a count of its own in the binding
    const key = generateKey();
    const call = await appWith({
      API_KEYS: keyLine(name, ['predict'], keyDigestHex(key)),
      RATE_LIMIT_PER_KEY: '100',
      RATE_LIMIT_WINDOW_SECONDS: '60',
    });
    const statuses: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 110; i++) {
      const res = await call('/models', { key });
      statuses.push(res.status);
      if (res.status === 429) refused ??= res;
      else await res.arrayBuffer();
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(100);
    expect(statuses.slice(100).every((s) => s === 429)).toBe(true);
    expect(refused!.headers.get('retry-after')).toBe('60');
    expect(refused!.headers.get('ratelimit-policy')).toBe('"per-key";q=100;w=60');
    // Anonymous callers are not limited by the per-key binding.
    expect((await call('/models')).status).toBe(200);
  });

  it('CORS from the CORS_ORIGINS var', async () => {
    const call = await appWith({ CORS_ORIGINS: 'https://app.example' });
    const res = await call('/models', { headers: { origin: 'https://app.example' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const other = await call('/models', { headers: { origin: 'https://other.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});
