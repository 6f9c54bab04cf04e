/**
 * Large bodies parsed on the JSON thread (the default) answer exactly as when the main thread parses them
 * (JSON_PARSE_THREADS=0): the same predictions, the same errors, over every route that reads JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from './reference.js';
import { startTestServer } from './server.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

let threaded: Server;
let inline: Server;
beforeAll(async () => {
  [threaded, inline] = await Promise.all([
    startTestServer({ POOL_SIZE: '1' }),
    startTestServer({ POOL_SIZE: '1', JSON_PARSE_THREADS: '0' }),
  ]);
});
afterAll(() => Promise.all([threaded?.close(), inline?.close()]));

/** Status and body of the same request to both servers; request ids and timings left out. */
async function both(
  path: string,
  body: string | Uint8Array,
  headers: Record<string, string> = {},
): Promise<[Answer, Answer]> {
  const [a, b] = await Promise.all(
    [threaded, inline].map(async (s) => {
      const res = await fetch(s.url + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
      const text = await res.text();
      const parsed = JSON.parse(text, (k, v) =>
        ['request_id', 'id', 'latency_ms', 'timestamp'].includes(k) ? undefined : v,
      );
      return { status: res.status, body: parsed };
    }),
  );
  return [a!, b!];
}

// biome-ignore lint/suspicious/noExplicitAny: answers are checked by assertions, not types
type Answer = { status: number; body: any };

const big = (n: number) => rows(n, 64, 5).map((r) => r.map((v) => Math.round(v * 1000) / 1000));

describe('large bodies on the JSON thread', () => {
  it('answer /predict/batch rows as the main thread does', async () => {
    const body = JSON.stringify({ model: 'mlp-large', instances: big(2000), use_cache: false });
    expect(body.length).toBeGreaterThan(64 * 1024);
    const [a, b] = await both('/predict/batch', body);
    expect(a.status).toBe(200);
    expect(a.body.count).toBe(2000);
    expect(a).toEqual(b);
    // A large answer's text is written in slices: it reads as a small one (written whole) does.
    const small = await threaded.post('/predict/batch', {
      model: 'mlp-large',
      instances: big(2000).slice(0, 999),
      use_cache: false,
    });
    const large = await threaded.post('/predict/batch', body);
    expect(large.headers.get('content-type')).toBe(small.headers.get('content-type'));
    const [s, l] = await Promise.all([small.json(), large.json()]);
    expect(Object.keys(l)).toEqual(Object.keys(s));
    expect(l.predictions.slice(0, 999)).toEqual(s.predictions);
  });

  it('answer seed-style named rows (parsed on the main thread after all: too many objects to send)', async () => {
    const features = rows(3000, 7, 9).map((r) => ({
      tenure_months: Math.abs(r[0]!),
      monthly_charges: Math.abs(r[1]!),
      total_charges: Math.abs(r[2]!),
      contract_length: Math.abs(r[3]!),
      num_products: Math.abs(r[4]!),
      support_tickets: Math.abs(r[5]!),
      satisfaction_score: Math.abs(r[6]!),
    }));
    const body = JSON.stringify({ requests: features.map((f) => ({ features: f })), use_cache: false });
    const [a, b] = await both('/predict/batch', body);
    expect(a.status).toBe(200);
    expect(a).toEqual(b);
  });

  it('answer a v2 infer as the main thread does, JSON data and a JSON header with no binary after it', async () => {
    const data = big(1500).flat();
    const req = {
      inputs: [{ name: 'float_input', shape: [1500, 64], datatype: 'FP32', data }],
    };
    const [a, b] = await both('/v2/models/mlp-large/infer', JSON.stringify(req));
    expect(a.status).toBe(200);
    expect(a).toEqual(b);
    // The JSON header is the whole body: the binary section after it is empty (and must stay readable).
    const header = new TextEncoder().encode(
      JSON.stringify({
        inputs: [{ ...req.inputs[0], data: undefined, shape: [0, 64], parameters: { binary_data_size: 0 } }],
        pad: data,
      }),
    );
    const [c, d] = await both('/v2/models/mlp-large/infer', header, {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(header.byteLength),
    });
    expect(c.status).toBeLessThan(500);
    expect(c).toEqual(d);
  });

  it('refuse malformed and hostile large bodies with the same 4xx', async () => {
    const cut = JSON.stringify({ model: 'mlp-large', instances: big(1000) }).slice(0, -5);
    const [a, b] = await both('/predict/batch', cut);
    expect(a.status).toBe(400);
    expect(a.body.error.code).toBe('ERR_BAD_JSON');
    expect(a).toEqual(b);
    const deep = `{"model":"mlp-large","instances":${'['.repeat(60_000)}${']'.repeat(60_000)}}`;
    const [c, d] = await both('/predict/batch', deep);
    expect(c.status).toBe(422);
    expect(c).toEqual(d);
    const mixed = JSON.stringify({
      model: 'mlp-large',
      instances: [...big(999), [...big(1)[0]!.slice(1), 'x']],
    });
    const [e, f] = await both('/predict/batch', mixed);
    expect(e.status).toBe(422);
    expect(e.body.error.field).toBe('instances[999][63]');
    expect(e).toEqual(f);
  });
});
