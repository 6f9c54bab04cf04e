/**
 * Request and response compression on the Open Inference Protocol routes, over real HTTP (node:http, so the
 * bytes on the wire are seen as sent): gzip and deflate both ways, binary tensor data compressed with its
 * header length intact, and hostile bodies (corrupt, truncated, unknown encodings, a decompression bomb with
 * and without a declared length) answered 4xx without the server's memory following the bomb.
 */
import { request } from 'node:http';
import { createGzip, deflateSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer({ CACHE: 'off' });
});
afterAll(async () => {
  await server?.close();
});

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** POST with exactly these headers and bytes (a Buffer is sent with its length; a generator, chunked). */
function post(path: string, headers: Record<string, string>, body: Buffer | Iterable<Buffer>): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    if (Buffer.isBuffer(body)) req.end(body);
    else {
      for (const chunk of body) req.write(chunk);
      req.end();
    }
  });
}

const INFER = '/v2/models/churn/versions/2/infer';
const rowsRequest = (n: number, extra: Record<string, unknown> = {}) =>
  Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: 'float_input',
          shape: [n, 7],
          datatype: 'FP32',
          data: Array.from({ length: n }, (_, r) => [24 + r, 75.5, 1800, 12, 2, 1, 4.5]),
        },
      ],
      ...extra,
    }),
  );

const plain = async (n: number) => JSON.parse((await post(INFER, {}, rowsRequest(n))).body.toString());

describe('compression on v2 routes', () => {
  it('takes a gzip body and answers gzip, the same answer as uncompressed', async () => {
    const want = await plain(200);
    const res = await post(
      INFER,
      { 'content-encoding': 'gzip', 'accept-encoding': 'gzip' },
      gzipSync(rowsRequest(200)),
    );
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe('gzip');
    expect(res.headers.vary).toMatch(/accept-encoding/i);
    expect(JSON.parse(gunzipSync(res.body).toString()).outputs).toEqual(want.outputs);
  });

  it('takes a deflate (zlib) body and answers deflate, as Python zlib.compress writes it', async () => {
    const want = await plain(200);
    const res = await post(
      INFER,
      { 'content-encoding': 'deflate', 'accept-encoding': 'deflate' },
      deflateSync(rowsRequest(200)),
    );
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe('deflate');
    expect(JSON.parse(inflateSync(res.body).toString()).outputs).toEqual(want.outputs);
  });

  it('compresses binary tensor data; Inference-Header-Content-Length still counts the uncompressed JSON', async () => {
    const res = await post(
      INFER,
      { 'accept-encoding': 'gzip' },
      rowsRequest(300, { parameters: { binary_data_output: true } }),
    );
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe('gzip');
    const body = gunzipSync(res.body);
    const n = Number(res.headers['inference-header-content-length']);
    const header = JSON.parse(body.subarray(0, n).toString());
    expect(
      header.outputs.map((o: { parameters: { binary_data_size: number } }) => o.parameters.binary_data_size),
    ).toEqual([300 * 8, 300 * 2 * 4]);
    expect(body.byteLength - n).toBe(300 * 8 + 300 * 8);
  });

  it('leaves small answers, and clients that offer nothing, uncompressed', async () => {
    const small = await post(INFER, { 'accept-encoding': 'gzip' }, rowsRequest(1));
    expect(small.status).toBe(200);
    expect(small.headers['content-encoding']).toBeUndefined();
    expect(JSON.parse(small.body.toString()).outputs).toHaveLength(2);
    const none = await post(INFER, {}, rowsRequest(300));
    expect(none.headers['content-encoding']).toBeUndefined();
    expect(JSON.parse(none.body.toString()).outputs).toHaveLength(2);
    const refused = await post(INFER, { 'accept-encoding': 'gzip;q=0, deflate;q=0' }, rowsRequest(300));
    expect(refused.headers['content-encoding']).toBeUndefined();
  });
});

describe('hostile compressed bodies', () => {
  const cases: [string, Record<string, string>, Buffer, number, RegExp][] = [
    ['an unknown encoding', { 'content-encoding': 'br' }, rowsRequest(1), 415, /content-encoding/],
    [
      'two encodings stacked',
      { 'content-encoding': 'gzip, gzip' },
      gzipSync(gzipSync(rowsRequest(1))),
      415,
      /content-encoding/,
    ],
    ['bytes that are not gzip', { 'content-encoding': 'gzip' }, rowsRequest(1), 400, /content-encoding/],
    [
      'truncated gzip',
      { 'content-encoding': 'gzip' },
      gzipSync(rowsRequest(50)).subarray(0, 100),
      400,
      /content-encoding/,
    ],
    [
      'gzip of something that is not JSON',
      { 'content-encoding': 'gzip' },
      gzipSync(Buffer.from('not json')),
      400,
      /JSON/,
    ],
    [
      'deflate labelled gzip',
      { 'content-encoding': 'gzip' },
      deflateSync(rowsRequest(1)),
      400,
      /content-encoding/,
    ],
  ];
  for (const [what, headers, body, status, message] of cases) {
    it(`answers ${status} to ${what}`, async () => {
      const res = await post(INFER, headers, body);
      expect(res.status, res.body.toString()).toBe(status);
      expect(JSON.parse(res.body.toString()).error).toMatch(message);
    });
  }

  /** 256 MiB of zeros, gzipped (about 256 KB), made a chunk at a time so this process never holds it whole. */
  async function bomb(): Promise<Buffer> {
    const gz = createGzip({ level: 9 });
    const out: Buffer[] = [];
    gz.on('data', (c: Buffer) => out.push(c));
    const done = new Promise((resolve) => gz.on('end', resolve));
    const zeros = Buffer.alloc(1 << 20);
    for (let i = 0; i < 256; i++) if (!gz.write(zeros)) await new Promise((r) => gz.once('drain', r));
    gz.end();
    await done;
    return Buffer.concat(out);
  }

  it('refuses a decompression bomb with 413 once the body limit is passed, declared length or not', async () => {
    const compressed = await bomb();
    expect(compressed.byteLength).toBeLessThan(1 << 20);
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sample = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 2);
    try {
      for (let i = 0; i < 3; i++) {
        const declared = await post(INFER, { 'content-encoding': 'gzip' }, compressed);
        expect(declared.status).toBe(413);
        expect(JSON.parse(declared.body.toString()).error).toMatch(/over 4194304 bytes/);
        // Chunked: no Content-Length for anything to judge by before reading.
        const chunks = function* () {
          for (let at = 0; at < compressed.byteLength; at += 16384) yield compressed.subarray(at, at + 16384);
        };
        const chunked = await post(INFER, { 'content-encoding': 'gzip' }, chunks());
        expect(chunked.status).toBe(413);
      }
    } finally {
      clearInterval(sample);
    }
    // 256 MiB per request inflated whole would show; the limit (4 MiB) and a chunk are all that is held.
    expect(peak - before).toBeLessThan(96 * 1024 * 1024);
    const after = await post(INFER, {}, rowsRequest(1));
    expect(after.status).toBe(200);
  });
});
