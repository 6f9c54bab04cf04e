/**
 * Who may do what, over real HTTP: every scope against every route group, keys held only as hashes,
 * per-key and per-address rate limits with the IETF RateLimit fields, CORS and security headers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ApiKey,
  digestsEqual,
  findKey,
  generateKey,
  keyDigestHex,
  keyLine,
  parseKeys,
} from '../src/core/access.js';
import { loadConfig } from '../src/node/config.js';
import { startMain } from './main-process.js';
import { json, startTestServer } from './server.js';
import { freshDatabase } from './services.js';

const PREDICT_KEY = generateKey();
const ADMIN_KEY = generateKey();
const BOTH_KEY = generateKey();
const API_KEYS = [
  keyLine('scorer', ['predict'], keyDigestHex(PREDICT_KEY)),
  keyLine('auditor', ['admin'], keyDigestHex(ADMIN_KEY)),
  keyLine('ops', ['predict', 'admin'], keyDigestHex(BOTH_KEY)),
].join('\n');
const ALL_KEYS = [PREDICT_KEY, ADMIN_KEY, BOTH_KEY];

const ROW = [12, 70.5, 846, 12, 2, 1, 3.5];
const NAMED = {
  tenure_months: 12,
  monthly_charges: 70.5,
  total_charges: 846,
  contract_length: 12,
  num_products: 2,
  support_tickets: 1,
  satisfaction_score: 3.5,
};
const V2_BODY = { inputs: [{ name: 'features', shape: [1, 7], datatype: 'FP32', data: ROW }] };

type Group = 'public' | 'predict' | 'admin';
/** One request of each route group the server has (the admin group: the audit log). */
const ROUTES: { group: Group; method: 'GET' | 'POST'; path: string; body?: unknown }[] = [
  { group: 'public', method: 'GET', path: '/health' },
  { group: 'public', method: 'GET', path: '/health/ready' },
  { group: 'public', method: 'GET', path: '/v2/health/ready' },
  { group: 'public', method: 'GET', path: '/v2' },
  { group: 'public', method: 'GET', path: '/openapi.json' },
  { group: 'public', method: 'GET', path: '/metrics' },
  { group: 'predict', method: 'POST', path: '/predict', body: { features: NAMED } },
  { group: 'predict', method: 'POST', path: '/predict/batch', body: { instances: [ROW, ROW] } },
  { group: 'predict', method: 'POST', path: '/v2/models/churn/infer', body: V2_BODY },
  { group: 'predict', method: 'POST', path: '/v2/models/churn/versions/2/infer', body: V2_BODY },
  { group: 'predict', method: 'GET', path: '/v2/models/churn' },
  { group: 'predict', method: 'GET', path: '/v2/models/churn/ready' },
  { group: 'predict', method: 'GET', path: '/models' },
  { group: 'predict', method: 'GET', path: '/models/churn' },
  { group: 'predict', method: 'GET', path: '/model/info' },
  { group: 'admin', method: 'GET', path: '/audit?limit=1' },
  { group: 'admin', method: 'GET', path: '/audit/00000000-0000-4000-8000-000000000000' },
];

function send(base: string, r: (typeof ROUTES)[number], headers: Record<string, string> = {}) {
  return fetch(base + r.path, {
    method: r.method,
    headers: { ...(r.body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: r.body === undefined ? undefined : JSON.stringify(r.body),
  });
}

/** The `{error: {code}}` or, under /v2, `{error: "…"}` body of a refusal. */
async function refusal(res: Response) {
  const body = (await res.json()) as { error: string | { code: string; message: string } };
  return typeof body.error === 'string' ? { code: undefined, message: body.error } : body.error;
}

describe('keys, unit: parsing and constant-time matching', () => {
  it('reads name:scopes:sha256[:rate] lines and refuses anything that could be a key itself', () => {
    const keys = parseKeys(`# ops keys\n${API_KEYS}\n\nbulk:predict:${keyDigestHex('x')}:50`);
    expect(keys.map((k) => [k.name, k.scopes, k.rate])).toEqual([
      ['scorer', ['predict'], undefined],
      ['auditor', ['admin'], undefined],
      ['ops', ['predict', 'admin'], undefined],
      ['bulk', ['predict'], 50],
    ]);
    for (const bad of [
      `scorer:predict:${PREDICT_KEY}`, // the key where its digest belongs
      'scorer:predict:abc',
      `scorer:root:${keyDigestHex('x')}`,
      `scorer:predict:${keyDigestHex('x')}:0`,
      `a b:predict:${keyDigestHex('x')}`,
      `dup:predict:${keyDigestHex('x')}\ndup:admin:${keyDigestHex('y')}`,
      `ops:predict:${keyDigestHex('x')}\nci:predict:${keyDigestHex('x')}`, // one key, two names
      `osk_AbC123:predict:${keyDigestHex('x')}`, // a key pasted as the name would be logged
      'just-a-key',
    ]) {
      let message = '';
      try {
        parseKeys(bad);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, bad).toMatch(/^API key entry \d/);
      // The message names the entry by position, never by echoing it: it may hold a pasted key.
      expect(message).not.toContain(PREDICT_KEY);
      expect(message).not.toContain('just-a-key');
    }
  });

  it('compares the presented key with every configured digest, whichever matches', () => {
    const keys: ApiKey[] = parseKeys(API_KEYS);
    for (const [presented, want] of [
      [PREDICT_KEY, 'scorer'],
      [BOTH_KEY, 'ops'],
      ['osk_wrong', undefined],
    ] as const) {
      let compared = 0;
      const counting = (a: Uint8Array, b: Uint8Array) => {
        compared++;
        return digestsEqual(a, b);
      };
      expect(findKey(keys, presented, counting)?.name).toBe(want);
      expect(compared).toBe(keys.length); // no early exit on a match
    }
    const d = new Uint8Array(32).fill(7);
    const e = Uint8Array.from(d);
    expect(digestsEqual(d, e)).toBe(true);
    for (const i of [0, 17, 31]) {
      e[i] = 8;
      expect(digestsEqual(d, e)).toBe(false);
      e[i] = 7;
    }
    expect(digestsEqual(d, d.subarray(0, 31))).toBe(false);
  });

  it('reads comments after an entry', () => {
    expect(parseKeys(`ci:predict:${keyDigestHex('x')}   # the CI runner`).map((k) => k.name)).toEqual(['ci']);
  });

  it('refuses at start what would silently misbehave, without repeating secrets', () => {
    const refused = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (err) {
        return (err as Error).message;
      }
      return 'started';
    };
    // Keyed, but no key can predict: every prediction would be refused.
    expect(refused({ AUTH_PREDICTIONS: 'keyed', API_KEYS: '# none yet' })).toMatch(
      /no key with the predict scope/,
    );
    expect(
      refused({ AUTH_PREDICTIONS: 'keyed', API_KEYS: keyLine('a', ['admin'], keyDigestHex(ADMIN_KEY)) }),
    ).toMatch(/no key with the predict scope/);
    expect(refused({ CORS_ORIGINS: 'https://a.example/' })).toMatch(
      /CORS_ORIGINS: "https:\/\/a.example\/" is not an origin/,
    );
    expect(refused({ CORS_ORIGINS: ' , ' })).toMatch(/CORS_ORIGINS: no origin listed/);
    expect(refused({ CORS_ORIGINS: 'https://a.example, http://localhost:3000' })).toBe('started');
    // A malformed URL's password is not echoed.
    const bad = refused({
      REDIS_URL: 'redis//:hunter2secret@host:6379',
      DATABASE_URL: 'pg//u:pw-secret@h/db',
    });
    expect(bad).toMatch(/REDIS_URL: must be a redis/);
    expect(bad).not.toContain('hunter2secret');
    expect(bad).not.toContain('pw-secret');
  });

  it('keeps only digests in the configuration', () => {
    const config = loadConfig({ API_KEYS, AUTH_PREDICTIONS: 'keyed' });
    const dumped = JSON.stringify(config, (_k, v) =>
      v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v,
    );
    for (const key of ALL_KEYS) expect(dumped).not.toContain(key);
    expect(dumped).toContain(keyDigestHex(PREDICT_KEY));
    expect(() => loadConfig({ AUTH_PREDICTIONS: 'keyed' })).toThrow(
      /AUTH_PREDICTIONS=keyed: no key with the predict scope/,
    );
    expect(() => loadConfig({ API_KEYS: `scorer:predict:${PREDICT_KEY}` })).toThrow(
      /API_KEYS: API key entry 1/,
    );
  });
});

describe('each scope against each route group (AUTH_PREDICTIONS=keyed)', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    db = await freshDatabase('access');
    server = await startTestServer({
      API_KEYS,
      AUTH_PREDICTIONS: 'keyed',
      AUDIT: 'on',
      DATABASE_URL: db.url,
      AUDIT_FLUSH_MS: '20',
    });
  });
  afterAll(async () => {
    await server?.close();
    await db?.drop();
  });

  // What each caller gets from each group: through (the route's own answer) or the refusal's status+code.
  const callers: { who: string; headers: Record<string, string>; expect: Record<Group, string> }[] = [
    {
      who: 'no key',
      headers: {},
      expect: { public: 'through', predict: '401 ERR_UNAUTHENTICATED', admin: '401 ERR_UNAUTHENTICATED' },
    },
    {
      who: 'an unknown key',
      headers: { authorization: 'Bearer osk_not-a-configured-key' },
      expect: { public: 'through', predict: '401 ERR_UNAUTHENTICATED', admin: '401 ERR_UNAUTHENTICATED' },
    },
    {
      who: 'a predict key (Bearer)',
      headers: { authorization: `Bearer ${PREDICT_KEY}` },
      expect: { public: 'through', predict: 'through', admin: '403 ERR_FORBIDDEN' },
    },
    {
      who: 'a predict key (X-API-Key)',
      headers: { 'x-api-key': PREDICT_KEY },
      expect: { public: 'through', predict: 'through', admin: '403 ERR_FORBIDDEN' },
    },
    {
      who: 'an admin key',
      headers: { 'x-api-key': ADMIN_KEY },
      expect: { public: 'through', predict: '403 ERR_FORBIDDEN', admin: 'through' },
    },
    {
      who: 'a predict+admin key',
      headers: { authorization: `bearer ${BOTH_KEY}` },
      expect: { public: 'through', predict: 'through', admin: 'through' },
    },
  ];

  for (const caller of callers) {
    it(`${caller.who}`, async () => {
      const seen: string[] = [];
      const want: string[] = [];
      for (const r of ROUTES) {
        const res = await send(server.url, r, caller.headers);
        let got: string;
        if (res.status === 401 || res.status === 403) {
          const err = await refusal(res);
          // /v2 errors are {"error": "message"}: the code is then read from the status alone.
          got = `${res.status} ${err.code ?? (res.status === 401 ? 'ERR_UNAUTHENTICATED' : 'ERR_FORBIDDEN')}`;
          if (res.status === 401) expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
          expect(err.message.length).toBeGreaterThan(10);
        } else {
          await res.arrayBuffer();
          // Through: the route's own answer (the unknown audit id is the route's own 404).
          got = res.status < 500 ? 'through' : `${res.status}`;
        }
        seen.push(`${r.method} ${r.path}: ${got}`);
        want.push(`${r.method} ${r.path}: ${caller.expect[r.group]}`);
      }
      expect(seen).toEqual(want);
    });
  }

  it('names the key in the audit record, never the key itself', async () => {
    const res = await server.post(
      '/predict',
      { features: NAMED, request_id: 'keyed-audit' },
      { 'x-api-key': PREDICT_KEY },
    );
    expect(res.status).toBe(200);
    await expect
      .poll(
        async () =>
          (await db.query("SELECT api_key FROM prediction_audit WHERE request_id = 'keyed-audit'")).rows,
        {
          timeout: 5000,
        },
      )
      .toEqual([{ api_key: 'scorer' }]);
    const found = await json(await server.get('/audit?request_id=keyed-audit', { 'x-api-key': ADMIN_KEY }));
    expect(found.records[0].api_key).toBe('scorer');
    const everything = await db.query('SELECT row_to_json(a)::text AS r FROM prediction_audit a');
    expect(everything.rows.length).toBeGreaterThan(0);
    for (const { r } of everything.rows) for (const key of ALL_KEYS) expect(r).not.toContain(key);
  });

  it('publishes who may call what in the OpenAPI document', async () => {
    const doc = await json(await server.get('/openapi.json'));
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['ApiKey', 'Bearer']);
    expect(doc.paths['/predict'].post.security).toEqual([{ ApiKey: ['predict'] }, { Bearer: ['predict'] }]);
    expect(doc.paths['/audit'].get.security).toEqual([{ ApiKey: ['admin'] }, { Bearer: ['admin'] }]);
    expect(doc.paths['/health'].get.security).toEqual([]);
    expect(Object.keys(doc.paths['/predict'].post.responses)).toEqual(
      expect.arrayContaining(['401', '403', '429']),
    );
  });
});

describe('defaults: predictions open, admin routes off until an admin key exists', () => {
  it('serves predictions without a key (a forwarded Authorization is not its business), refuses admin routes', async () => {
    const server = await startTestServer({});
    const keyed = await startTestServer({ API_KEYS });
    try {
      expect((await server.post('/predict', { features: NAMED })).status).toBe(200);
      // No keys configured: a gateway's own Authorization header passes through unread.
      const forwarded = await server.post(
        '/predict',
        { features: NAMED },
        { authorization: 'Bearer gw-token' },
      );
      expect(forwarded.status).toBe(200);
      // Keys configured, predictions still open: a wrong key is told so.
      expect((await keyed.post('/predict', { features: NAMED })).status).toBe(200);
      const wrong = await keyed.post('/predict', { features: NAMED }, { 'x-api-key': 'osk_typo' });
      expect(wrong.status).toBe(401);
      expect((await refusal(wrong)).code).toBe('ERR_UNAUTHENTICATED');
      const scorer = await keyed.post('/predict', { features: NAMED }, { 'x-api-key': PREDICT_KEY });
      expect(scorer.status).toBe(200);
      for (const headers of [{}, { 'x-api-key': 'osk_typo' }] as Record<string, string>[]) {
        const res = await server.get('/audit', headers);
        if ('x-api-key' in headers) {
          expect(res.status).toBe(401);
          continue;
        }
        expect(res.status).toBe(403);
        const err = await refusal(res);
        expect(err.code).toBe('ERR_ADMIN_DISABLED');
        expect(err.message).toMatch(/no key with the admin scope/);
      }
    } finally {
      await Promise.all([server.close(), keyed.close()]);
    }
  });

  it('ADMIN_OPEN=true opens admin routes without a key, and says so at start', async () => {
    const main = startMain({ ADMIN_OPEN: 'true' });
    try {
      const url = await main.url;
      const res = await fetch(`${url}/audit`);
      expect(res.status).toBe(503); // through to the route: audit is off in this process
      expect((await refusal(res)).code).toBe('ERR_AUDIT_UNAVAILABLE');
      expect(main.output()).toMatch(/"level":"warn".*ADMIN_OPEN=true: admin routes answer without a key/);
    } finally {
      main.child.kill('SIGTERM');
      await main.exited;
    }
  });
});

describe('logs', () => {
  it('name keys, never hold them: not at start, not for refused or accepted requests', async () => {
    const main = startMain({ API_KEYS, AUTH_PREDICTIONS: 'keyed', RATE_LIMIT_PER_KEY: '2' });
    try {
      const url = await main.url;
      const post = (headers: Record<string, string>) =>
        fetch(`${url}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ features: NAMED }),
        });
      const wrong = generateKey();
      const statuses = [
        (await post({ 'x-api-key': PREDICT_KEY })).status,
        (await post({ authorization: `Bearer ${wrong}` })).status,
        (await post({ 'x-api-key': ADMIN_KEY })).status,
        (await post({ 'x-api-key': PREDICT_KEY })).status,
        (await post({ 'x-api-key': PREDICT_KEY })).status, // third in the window: 429
        (await fetch(`${url}/audit`, { headers: { 'x-api-key': BOTH_KEY } })).status,
      ];
      expect(statuses.slice(0, 3)).toEqual([200, 401, 403]);
      expect(statuses).toContain(429);
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/onnxserve_access_refused_total\{reason="unknown_key",key="unknown"\} 1/);
      expect(metrics).toMatch(/onnxserve_access_refused_total\{reason="scope",key="auditor"\} 1/);
      expect(metrics).toMatch(/onnxserve_access_refused_total\{reason="rate_limited",key="scorer"\} [1-9]/);
      main.child.kill('SIGTERM');
      await main.exited;
      const output = main.output();
      // The start-up line names the keys and scopes.
      const accessLine = output.split('\n').find((l) => l.includes('"msg":"access"'));
      expect(accessLine).toMatch(/"name":"scorer","scopes":\["predict"\]/);
      for (const key of [...ALL_KEYS, wrong]) {
        expect(output).not.toContain(key);
        expect(metrics).not.toContain(key);
      }
      // Not even the digests: they are all an offline guess needs to check a candidate key.
      for (const key of ALL_KEYS) expect(output).not.toContain(keyDigestHex(key));
    } finally {
      main.child.kill('SIGTERM');
      await main.exited;
    }
  });
});

describe('rate limits in one process', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    server = await startTestServer({
      API_KEYS: `${API_KEYS}\nbulk:predict:${keyDigestHex('osk_bulk-key')}:8`,
      RATE_LIMIT_PER_KEY: '4',
      RATE_LIMIT_PER_ADDRESS: '3',
      RATE_LIMIT_WINDOW_SECONDS: '60',
      TRUST_PROXY_HOPS: '1',
    });
  });
  afterAll(() => server?.close());

  it('allows a key its limit per window, then 429 with Retry-After and the RateLimit fields', async () => {
    const answers = [];
    for (let i = 0; i < 6; i++)
      answers.push(await server.post('/predict', { features: NAMED }, { 'x-api-key': PREDICT_KEY }));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 429, 429]);
    expect(answers[0]!.headers.get('ratelimit-policy')).toBe('"per-key";q=4;w=60');
    expect(answers[0]!.headers.get('ratelimit')).toMatch(/^"per-key";r=3;t=(59|60)$/);
    expect(answers[3]!.headers.get('ratelimit')).toMatch(/^"per-key";r=0;t=\d+$/);
    const refused = answers[4]!;
    const retry = Number(refused.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    const err = await refusal(refused);
    expect(err.code).toBe('ERR_RATE_LIMITED');
    expect(err.message).toMatch(/over 4 requests per 60 s for key "scorer"/);
    // v2 clients get the v2 error body, the same limit.
    const v2 = await server.post('/v2/models/churn/infer', V2_BODY, {
      authorization: `Bearer ${PREDICT_KEY}`,
    });
    expect(v2.status).toBe(429);
    expect(typeof (await json(v2)).error).toBe('string');
    // Another key has its own count; a key's own rate overrides the default.
    expect((await server.post('/predict', { features: NAMED }, { 'x-api-key': BOTH_KEY })).status).toBe(200);
    const bulk = [];
    for (let i = 0; i < 9; i++)
      bulk.push((await server.post('/predict', { features: NAMED }, { 'x-api-key': 'osk_bulk-key' })).status);
    expect(bulk.filter((s) => s === 200)).toHaveLength(8);
    // Public routes are never limited.
    for (let i = 0; i < 10; i++) expect((await server.get('/health')).status).toBe(200);
  });

  it('limits anonymous callers per address: the nearest trusted proxy’s entry, not what the client claims', async () => {
    const from = (chain: string) =>
      server.post('/predict', { features: NAMED }, { 'x-forwarded-for': chain });
    const a = [];
    // The client prepends made-up addresses; the entry the trusted proxy added (rightmost) is what counts.
    for (let i = 0; i < 5; i++) a.push((await from(`10.9.9.${i}, 203.0.113.7`)).status);
    expect(a).toEqual([200, 200, 200, 429, 429]);
    const refused = await from('203.0.113.7');
    expect(refused.headers.get('ratelimit-policy')).toBe('"per-address";q=3;w=60');
    expect((await refusal(refused)).message).toMatch(/from this address/);
    expect((await from('198.51.100.1')).status).toBe(200);
  });

  it('counts guessed keys against the address: guesses past its limit get 429, not an answer', async () => {
    const guess = (i: number) =>
      server.post(
        '/predict',
        { features: NAMED },
        { 'x-forwarded-for': '192.0.2.99', 'x-api-key': `osk_guess${i}` },
      );
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await guess(i)).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429, 429]);
  });

  it('closes the connection after refusing a large body it did not read', async () => {
    const { request } = await import('node:http');
    const url = new URL(server.url);
    /** Headers of an 8 MB body and its first bytes, nothing more: the answer must not wait for the rest. */
    const unread = (path: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path,
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'content-length': String(8 * 1024 * 1024),
              ...headers,
            },
          },
          (res) => {
            res.resume();
            resolve({ status: res.statusCode!, connection: res.headers.connection });
          },
        );
        req.on('error', reject);
        req.write('{"features": ');
      });
    // POST /audit is not served (405): answered before the body too.
    expect(await unread('/audit')).toEqual({ status: 405, connection: 'close' });
    const refused = await unread('/predict', {
      'x-api-key': 'osk_wrong-key-for-a-big-body',
      'x-forwarded-for': '192.0.2.150',
    });
    expect(refused).toEqual({ status: 401, connection: 'close' });
  });
});

describe('CORS and security headers', () => {
  it('are standard on every response; CORS only for listed origins, and off by default', async () => {
    const off = await startTestServer({});
    const on = await startTestServer({
      CORS_ORIGINS: 'https://app.example, https://admin.example',
      API_KEYS,
    });
    try {
      for (const res of [
        await off.post('/predict', { features: NAMED }),
        await off.get('/nowhere'),
        await off.post('/predict', '{"features": ', {}),
        await off.get('/audit'),
        await off.post('/predict', { features: NAMED }, { 'x-api-key': 'osk_bad' }),
      ]) {
        await res.arrayBuffer();
        expect(res.headers.get('x-content-type-options')).toBe('nosniff');
        expect(res.headers.get('x-frame-options')).toBe('DENY');
        expect(res.headers.get('referrer-policy')).toBe('no-referrer');
        expect(res.headers.get('strict-transport-security')).toMatch(/^max-age=\d+/);
        expect(res.headers.get('cross-origin-resource-policy')).toBe('same-origin');
        expect(res.headers.get('access-control-allow-origin')).toBeNull();
      }
      // Off: a preflight is not answered as CORS.
      const noPreflight = await fetch(`${off.url}/predict`, {
        method: 'OPTIONS',
        headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
      });
      expect(noPreflight.headers.get('access-control-allow-origin')).toBeNull();

      const preflight = await fetch(`${on.url}/predict`, {
        method: 'OPTIONS',
        headers: {
          origin: 'https://app.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type, authorization',
        },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example');
      expect(preflight.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
      expect(preflight.headers.get('access-control-allow-headers')).toMatch(/X-API-Key/);
      const answered = await on.post('/predict', { features: NAMED }, { origin: 'https://admin.example' });
      expect(answered.status).toBe(200);
      expect(answered.headers.get('access-control-allow-origin')).toBe('https://admin.example');
      expect(answered.headers.get('access-control-expose-headers')).toMatch(/RateLimit/);
      expect(answered.headers.get('vary')).toMatch(/Origin/);
      const stranger = await on.post('/predict', { features: NAMED }, { origin: 'https://evil.example' });
      expect(stranger.headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await Promise.all([off.close(), on.close()]);
    }
  });
});
