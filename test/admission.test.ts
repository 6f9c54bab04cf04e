/**
 * Admission control over real HTTP: past the in-flight bound requests are refused at once; large bodies
 * take turns, wait in a bounded line, and are refused before their body is read when the line is full.
 */
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from './reference.js';
import { json, startTestServer } from './server.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

describe('in-flight bound', () => {
  let server: Server;
  beforeAll(async () => {
    // Rows wait up to 600 ms for company, so requests stay in flight long enough to be counted.
    server = await startTestServer({ MAX_INFLIGHT_REQUESTS: '5', BATCH_MAX_DELAY_MS: '600' });
  });
  afterAll(() => server.close());

  it('takes exactly the bound, refuses the rest at once with 503 ERR_OVERLOADED, then takes more', async () => {
    const sent = performance.now();
    const results = await Promise.all(
      rows(12, 7, 11).map(async (features) => {
        const res = await server.post('/predict', { features: features.map(Math.abs), use_cache: false });
        return {
          status: res.status,
          ms: performance.now() - sent,
          retry: res.headers.get('retry-after'),
          body: await json(res),
        };
      }),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 503);
    expect(ok).toHaveLength(5);
    expect(refused).toHaveLength(7);
    for (const r of refused) {
      expect(r.body.error.code).toBe('ERR_OVERLOADED');
      expect(r.retry).toBe('1');
      expect(r.ms).toBeLessThan(500); // not held until the accepted ones finished
    }
    const metrics = await (await server.get('/metrics')).text();
    expect(metrics).toMatch(/^onnxserve_requests_in_flight 0$/m);
    expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
  });

  it('answers a refusal at the bound as the app answers errors, on every prediction route, and counts it', async () => {
    // Held in flight: the batcher waits 600 ms for company.
    const held = Promise.all(
      rows(5, 7, 21).map((f) => server.post('/predict', { features: f.map(Math.abs), use_cache: false })),
    );
    await new Promise((r) => setTimeout(r, 150));
    const before = await (await server.get('/metrics')).text();
    const refused = await Promise.all([
      server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] }, { 'x-request-id': 'shed-1' }),
      server.post('/predict/batch?x=1', { instances: [[1, 2, 3, 4, 5, 6, 7]] }),
      server.post('/v2/models/churn/infer', { inputs: [] }),
      server.post('/v2/models/churn/versions/1/infer', { inputs: [] }),
    ]);
    for (const res of refused) {
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('strict-transport-security')).toMatch(/max-age=/);
    }
    const [a, b, c, d] = await Promise.all(refused.map(json));
    for (const body of [a, b]) {
      expect(body.error).toEqual({ code: 'ERR_OVERLOADED', message: expect.stringMatching(/^5 prediction/) });
    }
    // The Open Inference Protocol's error shape: one message.
    for (const body of [c, d]) expect(body).toEqual({ error: expect.stringMatching(/^5 prediction/) });
    for (const r of await held) expect(r.status).toBe(200);
    const after = await (await server.get('/metrics')).text();
    const count = (text: string, route: string) =>
      Number(
        new RegExp(
          `^onnxserve_http_requests_total\\{[^}]*route="${route.replace(/[/:]/g, (ch) => `\\${ch}`)}"[^}]*status="503"[^}]*\\} (\\d+)`,
          'm',
        ).exec(text)?.[1] ?? 0,
      );
    for (const route of [
      '/predict',
      '/predict/batch',
      '/v2/models/:name/infer',
      '/v2/models/:name/versions/:version/infer',
    ]) {
      expect(count(after, route) - count(before, route)).toBe(1);
    }
    const errors = (text: string) =>
      Number(/^onnxserve_errors_total\{code="ERR_OVERLOADED"\} (\d+)/m.exec(text)?.[1] ?? 0);
    expect(errors(after) - errors(before)).toBe(4);
  });

  it('does not count reads: health, metadata and metrics answer while predictions are refused', async () => {
    const load = Promise.all(
      rows(5, 7, 12).map((f) => server.post('/predict', { features: f.map(Math.abs), use_cache: false })),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(
      (await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], use_cache: false })).status,
    ).toBe(503);
    expect((await server.get('/health/live')).status).toBe(200);
    expect((await server.get('/v2/models/churn')).status).toBe(200);
    expect((await server.get('/metrics')).status).toBe(200);
    for (const r of await load) expect(r.status).toBe(200);
  });
});

describe('large bodies', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startTestServer({
      HEAVY_BODY_BYTES: '2048',
      HEAVY_MAX_CONCURRENT: '1',
      HEAVY_MAX_WAITING: '2',
      BATCH_MAX_DELAY_MS: '300',
    });
  });
  afterAll(() => server.close());

  const heavy = (seed: number, headers: Record<string, string> = {}) =>
    server.post(
      '/predict/batch',
      { instances: rows(60, 7, seed).map((r) => r.map(Math.abs)), use_cache: false },
      headers,
    );

  it('take turns: one runs, two wait, the rest are refused at once; small requests are not held', async () => {
    const started = performance.now();
    const big = [1, 2, 3, 4, 5].map((seed) =>
      heavy(seed).then(async (r) => ({
        status: r.status,
        ms: performance.now() - started,
        body: await json(r),
      })),
    );
    await new Promise((r) => setTimeout(r, 100));
    const metrics = await (await server.get('/metrics')).text();
    expect(metrics).toMatch(/^onnxserve_heavy_requests_active 1$/m);
    expect(metrics).toMatch(/^onnxserve_heavy_requests_waiting 2$/m);
    // A small request meanwhile is not in the large requests' line.
    const small = await server.post('/predict', { features: [3, 40, 100, 12, 1, 2, 3], use_cache: false });
    expect(small.status).toBe(200);
    const results = await Promise.all(big);
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 503);
    expect(ok).toHaveLength(3);
    expect(refused).toHaveLength(2);
    for (const r of refused) {
      expect(r.body.error.code).toBe('ERR_OVERLOADED');
      expect(r.ms).toBeLessThan(250);
    }
    // One at a time: each waited for the one before (its 300 ms batch delay).
    const times = ok.map((r) => r.ms).sort((a, b) => a - b);
    expect(times[2]! - times[0]!).toBeGreaterThan(450);
    for (const r of ok) expect(r.body.count).toBe(60);
  });

  it('counts a compressed body as large whatever its length: its size is known only once inflated', async () => {
    const holder = heavy(7);
    await new Promise((r) => setTimeout(r, 50));
    const tiny = gzipSync(
      JSON.stringify({
        inputs: [{ name: 'float_input', shape: [1, 7], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6, 7] }],
        parameters: { use_cache: false },
      }),
    );
    expect(tiny.byteLength).toBeLessThan(2048);
    const small = fetch(`${server.url}/v2/models/churn/infer`, {
      method: 'POST',
      headers: { 'content-encoding': 'gzip' },
      body: tiny,
    });
    await new Promise((r) => setTimeout(r, 50));
    const metrics = await (await server.get('/metrics')).text();
    expect(metrics).toMatch(/^onnxserve_heavy_requests_waiting 1$/m);
    expect((await small).status).toBe(200);
    expect((await holder).status).toBe(200);
  });

  it('refuses before reading the body: the answer arrives while the client has sent only headers', async () => {
    const holders = [1, 2, 3].map((seed) => heavy(seed)); // one active, two waiting: the line is full
    await new Promise((r) => setTimeout(r, 100));
    const url = new URL(server.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write(
          'POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n',
        );
      });
      let data = '';
      socket.on('data', (d) => {
        data += d;
        if (data.includes('\r\n\r\n') && data.includes('}')) {
          socket.destroy();
          resolve(data);
        }
      });
      socket.on('error', reject);
      setTimeout(() => reject(new Error(`no answer before the body; got ${JSON.stringify(data)}`)), 2000);
    });
    expect(answer).toMatch(/^HTTP\/1.1 503/);
    expect(answer).toContain('ERR_OVERLOADED');
    for (const r of await Promise.all(holders)) expect(r.status).toBe(200);
  });

  it('a waiting request whose X-Timeout-Ms passes is answered 504 and leaves the line', async () => {
    const first = heavy(7);
    await new Promise((r) => setTimeout(r, 50));
    const started = performance.now();
    const late = await heavy(8, { 'x-timeout-ms': '100' });
    expect(late.status).toBe(504);
    expect((await json(late)).error.code).toBe('ERR_DEADLINE_EXCEEDED');
    expect(performance.now() - started).toBeLessThan(280);
    expect((await first).status).toBe(200);
    const metrics = await (await server.get('/metrics')).text();
    expect(metrics).toMatch(/^onnxserve_heavy_requests_waiting 0$/m);
    expect(metrics).toMatch(/^onnxserve_heavy_requests_active 0$/m);
  });
});

describe('the line for large bodies, probed', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startTestServer({
      HEAVY_BODY_BYTES: '2048',
      HEAVY_MAX_CONCURRENT: '1',
      HEAVY_MAX_WAITING: '2',
      REQUEST_TIMEOUT_MS: '1500',
      MAX_BODY_BYTES: '100000',
    });
  });
  afterAll(() => server.close());

  /** A raw client that sends headers (and maybe part of a body), then holds the connection open. */
  const holder = (headers: string, body = '') => {
    const { port, hostname } = new URL(server.url);
    const socket = connect(Number(port), hostname);
    let answer = '';
    socket.on('data', (d) => (answer += d));
    socket.on('error', () => {});
    socket.write(
      `POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}\r\n${body}`,
    );
    return { socket, answer: () => answer };
  };
  const gauges = async () => {
    const text = await (await server.get('/metrics')).text();
    const read = (name: string) => Number(new RegExp(`^onnxserve_${name} (\\S+)$`, 'm').exec(text)?.[1]);
    return {
      active: read('heavy_requests_active'),
      waiting: read('heavy_requests_waiting'),
      inFlight: read('requests_in_flight'),
    };
  };

  it('a client that trickles its body holds the place only until the deadline, and one that leaves frees its place in line', async () => {
    // The holder declares 5,000 bytes and sends 10: it keeps its connection, and for now the place.
    const trickler = holder('Content-Length: 5000\r\n', '{"instanc');
    await new Promise((r) => setTimeout(r, 100));
    const leavers = [holder('Transfer-Encoding: chunked\r\n'), holder('Transfer-Encoding: chunked\r\n')];
    await new Promise((r) => setTimeout(r, 100));
    expect(await gauges()).toMatchObject({ active: 1, waiting: 2 });
    for (const l of leavers) l.socket.destroy();
    await expect.poll(async () => (await gauges()).waiting, { timeout: 1000 }).toBe(0);
    // Past REQUEST_TIMEOUT_MS (1.5 s) the trickler no longer holds the place, though its socket is open.
    await expect.poll(async () => (await gauges()).active, { timeout: 3000 }).toBe(0);
    expect(trickler.socket.destroyed).toBe(false);
    const next = await server.post('/predict/batch', {
      instances: rows(60, 7, 3).map((r) => r.map(Math.abs)),
    });
    expect(next.status).toBe(200);
    trickler.socket.destroy();
  });

  it('refuses at once what it would refuse anyway: a bad X-Timeout-Ms, a body over the limit, and leaves other POSTs alone', async () => {
    const blocker = holder('Content-Length: 5000\r\n', '{');
    await new Promise((r) => setTimeout(r, 100));
    const started = performance.now();
    const big = { instances: rows(60, 7, 4).map((r) => r.map(Math.abs)) };
    const badTimeout = await server.post('/predict/batch', big, { 'x-timeout-ms': 'soon' });
    expect(badTimeout.status).toBe(422);
    expect((await json(badTimeout)).error.field).toBe('x-timeout-ms');
    const tooBig = await server.post('/predict/batch', { instances: rows(8000, 7, 5) });
    expect(tooBig.status).toBe(413);
    const notAPrediction = await server.post('/no-such-route', 'x'.repeat(5000));
    expect(notAPrediction.status).toBe(404);
    expect(performance.now() - started).toBeLessThan(500);
    blocker.socket.destroy();
  });
});

describe('a small request with a large answer', () => {
  let server: Server;
  beforeAll(async () => {
    // A heavy request's steps would wait up to 1 s for small requests in progress: a small one must not
    // wait for itself (it counts among them), nor for its small peers.
    server = await startTestServer({ HEAVY_YIELD_MS: '1000' });
  });
  afterAll(() => server?.close());

  it('is not held by the bound heavy requests wait under: 1,000+ rows in a body over 64 KiB, alone and beside its peers', async () => {
    const instances = rows(1500, 7, 21).map((f) => f.map((x) => Math.abs(x) + 0.123456789));
    const body = JSON.stringify({ instances });
    expect(body.length).toBeGreaterThan(64 * 1024); // parsed in steps that give way
    expect(body.length).toBeLessThan(256 * 1024); // and still small (under HEAVY_BODY_BYTES)
    for (const concurrent of [1, 4]) {
      const t0 = performance.now();
      const answers = await Promise.all(
        Array.from({ length: concurrent }, () => server.post('/predict/batch', body)),
      );
      const ms = performance.now() - t0;
      for (const res of answers) {
        expect(res.status).toBe(200);
        expect((await json(res)).predictions).toHaveLength(1500);
      }
      // Held, each would take 3 s (three steps that wait the whole 1 s); answered, well under one.
      expect(ms).toBeLessThan(1000);
    }
  });
});
