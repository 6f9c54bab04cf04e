/**
 * The Worker as wrangler bundles and runs it (wrangler dev, workerd): predictions answered on the edge reach
 * the machine's real Postgres through the audit Queue, its consumer and Hyperdrive.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { freshDatabase } from './services.js';

const EDGE = join(import.meta.dirname, '..', 'edge');
const port = 18787 + Math.floor(Math.random() * 500);
let stop: (() => void) | undefined;
afterAll(() => stop?.());

it('writes one audit row per edge prediction to Postgres, through the queue', async () => {
  const db = await freshDatabase('edge_audit');
  // Miniflare wants a password in the URL; the machine's Postgres trusts local connections.
  const url = db.url.replace('postgres@', 'postgres:local@');
  const child = spawn(
    join(import.meta.dirname, '..', 'node_modules', '.bin', 'wrangler'),
    ['dev', '--port', String(port), '--ip', '127.0.0.1'],
    {
      cwd: EDGE,
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: 'false',
        CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: url,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  );
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  stop = () => {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {}
  };
  try {
    await expect.poll(() => /Ready on/.test(log), { timeout: 60_000, interval: 250 }).toBe(true);
    const base = `http://127.0.0.1:${port}`;
    const post = (path: string, body: unknown) =>
      fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const statuses = await Promise.all(
      [
        ...Array.from({ length: 8 }, (_, i) =>
          post('/predict', { features: [i, 2, 3, 4, 5, 6, 7], request_id: `edge-${i}` }),
        ),
        post('/predict/batch', { instances: [[1, 1, 1, 1, 1, 1, 1]], request_id: 'edge-batch' }),
        post('/v2/models/iris/infer', {
          id: 'edge-v2',
          inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: [5, 3, 1, 0.2] }],
        }),
        post('/predict', { features: [1, 2] }), // refused: no record
      ].map((p) =>
        p.then(async (r) =>
          r.status === 200 || r.status === 422 ? r.status : `${r.status} ${await r.text()}`,
        ),
      ),
    );
    expect(statuses, `${JSON.stringify(statuses)}\n${log.slice(-3000)}`).toEqual([
      ...Array(10).fill(200),
      422,
    ]);
    await expect
      .poll(
        async () =>
          (
            await db
              .query('SELECT count(*)::int AS n FROM prediction_audit')
              .catch(() => ({ rows: [{ n: 0 }] }))
          ).rows[0].n,
        { timeout: 30_000, interval: 500 },
      )
      .toBe(10);
    const ids = (await db.query('SELECT request_id FROM prediction_audit ORDER BY request_id')).rows.map(
      (r) => r.request_id,
    );
    expect(ids).toEqual(expect.arrayContaining(['edge-0', 'edge-7', 'edge-batch', 'edge-v2']));
  } finally {
    stop();
    await db.drop();
  }
}, 120_000);
