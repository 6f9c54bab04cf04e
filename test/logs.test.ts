/**
 * Logs as `npm start` writes them: every stdout line is one JSON object with time, level and msg; one
 * access line per request (route, model, version, status, latency, cache tier, rows, key name, request id),
 * sampled by ACCESS_LOG_SAMPLE; LOG_LEVEL filters; keys and feature values are never written.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { startMain } from './main-process.js';

const KEY = generateKey();
const API_KEYS = keyLine('scorer', ['predict'], keyDigestHex(KEY));
// Values no other line could hold by chance.
const features = (i: number) => [12.3456 + i, 70.98765, 846.13579, 12, 2, 1, 3.25];

/** `npm start` with `env`, `requests` sent to it, then SIGTERM: its output's lines, parsed. */
async function run(env: Record<string, string>, requests: (url: string) => Promise<void>, port?: number) {
  const main = startMain(port === undefined ? env : { ...env, PORT: String(port) });
  try {
    // At LOG_LEVEL=warn no line says where it listens: a port of its own, polled until ready.
    const url = port === undefined ? await main.url : `http://127.0.0.1:${port}`;
    if (port !== undefined) {
      await expect
        .poll(
          () =>
            fetch(`${url}/health/ready`).then(
              (r) => r.status,
              () => 0,
            ),
          { timeout: 30_000 },
        )
        .toBe(200);
    }
    await requests(url);
  } finally {
    main.child.kill('SIGTERM');
    await main.exited;
  }
  const lines = main
    .output()
    .split('\n')
    .filter((l) => l !== '');
  return lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`not a JSON line: ${l}`);
    }
  });
}

const predict = (url: string, i: number, headers: Record<string, string> = {}, body: object = {}) =>
  fetch(`${url}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ features: features(i), use_cache: false, ...body }),
  }).then((r) => r.text());

describe('logs', () => {
  it('are JSON lines; each request gets an access line with its request id, and nothing secret', async () => {
    const lines = await run({ API_KEYS }, async (url) => {
      await predict(url, 1, { 'x-request-id': 'req-header-1' });
      await predict(url, 2, { 'x-api-key': KEY }, { request_id: 'req-body-2' });
      await predict(url, 3, {}, { model: 'churn', version: '1', request_id: 'req-3' });
      await fetch(`${url}/predict`, { method: 'POST', headers: { 'x-request-id': 'bad-4' }, body: 'x' });
      await predict(url, 5, { authorization: `Bearer ${generateKey()}`, 'x-request-id': 'wrong-key-5' });
      await fetch(`${url}/v2/models/churn/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          id: 'v2-6',
          inputs: [{ name: 'float_input', datatype: 'FP32', shape: [1, 7], data: features(6) }],
        }),
      });
    });
    for (const l of lines) {
      expect(typeof l.time).toBe('string');
      expect(['debug', 'info', 'warn', 'error']).toContain(l.level);
      expect(typeof l.msg).toBe('string');
    }
    const access = lines.filter((l) => l.msg === 'request');
    const by = (id: string) => access.find((l) => l.request_id === id);
    expect(by('req-header-1')).toMatchObject({
      method: 'POST',
      route: '/predict',
      status: 200,
      model: 'churn',
      version: '2',
      rows: 1,
      cache: null,
      api_key: null,
      error: null,
    });
    expect(by('req-header-1')!.latency_ms).toBeGreaterThan(0);
    expect(by('req-body-2')).toMatchObject({ status: 200, api_key: 'scorer' });
    expect(by('req-3')).toMatchObject({ status: 200, version: '1' });
    expect(by('bad-4')).toMatchObject({ status: 415, error: 'ERR_CONTENT_TYPE', model: null });
    expect(by('wrong-key-5')).toMatchObject({ status: 401, error: 'ERR_UNAUTHENTICATED' });
    expect(by('v2-6')).toMatchObject({ route: '/v2/models/:name/infer', status: 200, model: 'churn' });
    expect(access).toHaveLength(6);
    const text = lines.map((l) => JSON.stringify(l)).join('\n');
    expect(text).not.toContain(KEY);
    expect(text).not.toContain(keyDigestHex(KEY));
    for (let i = 1; i <= 6; i++) expect(text).not.toContain(String(features(i)[0]));
    expect(text).not.toContain('70.98765');
  }, 60_000);

  it('traced (OTEL_EXPORTER_OTLP_ENDPOINT set): every access line names its trace, and the spans reach the collector', async () => {
    // An OTLP/HTTP collector that keeps what it is sent.
    const posts: { path: string; type: string; body: Buffer }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', () => {
        posts.push({
          path: req.url ?? '',
          type: req.headers['content-type'] ?? '',
          body: Buffer.concat(chunks),
        });
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const answered: Record<string, string> = {};
    try {
      const lines = await run({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }, async (url) => {
        for (const [id, headers] of [
          ['t-1', { traceparent: `00-${traceId}-00f067aa0ba902b7-01` }],
          ['t-2', {}],
          ['t-3', {}],
        ] as const) {
          const res = await fetch(`${url}/predict`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-request-id': id, ...headers },
            body: JSON.stringify({ features: features(1), use_cache: false }),
          });
          await res.text();
          answered[id] = res.headers.get('traceparent') ?? '';
        }
      });
      for (const l of lines)
        expect([typeof l.time, typeof l.level, typeof l.msg]).toEqual(['string', 'string', 'string']);
      const access = lines.filter((l) => l.msg === 'request');
      expect(access).toHaveLength(3);
      for (const l of access) {
        // Each line names the request's trace and span, as its answer's traceparent does.
        expect(answered[l.request_id as string]).toBe(`00-${l.trace_id}-${l.span_id}-01`);
      }
      expect(access.find((l) => l.request_id === 't-1')!.trace_id).toBe(traceId);
      expect(new Set(access.map((l) => l.trace_id)).size).toBe(3);
      // Exported as OTLP/HTTP protobuf (the default) to /v1/traces, the caller's trace id among the bytes;
      // the last spans are flushed at shutdown.
      const traces = posts.filter((p) => p.path === '/v1/traces');
      expect(traces.length).toBeGreaterThan(0);
      expect(traces[0]!.type).toBe('application/x-protobuf');
      const sent = Buffer.concat(traces.map((p) => p.body));
      for (const l of access) expect(sent.includes(Buffer.from(l.trace_id as string, 'hex'))).toBe(true);
    } finally {
      collector.close();
    }
  }, 60_000);

  it('ACCESS_LOG_SAMPLE keeps that share of access lines; LOG_LEVEL=warn keeps none of info', async () => {
    const send = async (url: string) => {
      for (let i = 0; i < 200; i += 20) {
        await Promise.all(Array.from({ length: 20 }, (_, k) => predict(url, i + k)));
      }
    };
    const sampled = (await run({ ACCESS_LOG_SAMPLE: '0.25' }, send)).filter((l) => l.msg === 'request');
    expect(sampled.length).toBeGreaterThan(20);
    expect(sampled.length).toBeLessThan(80);
    const off = await run({ ACCESS_LOG_SAMPLE: '0' }, send);
    expect(off.filter((l) => l.msg === 'request')).toEqual([]);
    const warn = await run({ LOG_LEVEL: 'warn' }, send, 18_000 + (process.pid % 1000));
    expect(warn.filter((l) => l.level === 'info')).toEqual([]);
  }, 90_000);
});
