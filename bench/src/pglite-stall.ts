/**
 * Does the embedded audit store stall the event loop? Measures the main thread's timer lag (a 1 ms interval)
 * while writing 20 batches of 1,000 audit records with PGlite in the main thread, then through the
 * worker-thread store the server uses. `npx tsx bench/src/pglite-stall.ts`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { INSERT_SQL, SCHEMA_SQL } from '../../src/core/index.js';
import { createPgliteStore } from '../../src/node/index.js';

const batch = () =>
  JSON.stringify(
    Array.from({ length: 1000 }, (_, i) => ({
      id: crypto.randomUUID(),
      request_id: `r${i}`,
      time: new Date().toISOString(),
      route: '/predict',
      model: 'churn',
      model_version: '2',
      model_sha256: 'ab'.repeat(32),
      input: [i, 2, 3, 4, 5, 6, 7],
      output: { prediction: 0, probability: 0.16 },
      rows: 1,
      latency_ms: 1.2,
      cache: null,
      status: 200,
      client_id: null,
    })),
  );

async function measure(name: string, insert: (json: string) => Promise<unknown>) {
  const lags: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lags.push(now - last - 1);
    last = now;
  }, 1);
  const started = performance.now();
  for (let i = 0; i < 20; i++) await insert(batch());
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  lags.push(performance.now() - last - 1); // the gap since the last tick (all of it, if none came)
  lags.sort((a, b) => a - b);
  const q = (p: number) => Math.round(lags[Math.floor((lags.length - 1) * p)]! * 10) / 10;
  console.log(
    `${name}: 20,000 records in ${seconds.toFixed(2)} s; event-loop lag p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`,
  );
}

const dirA = mkdtempSync(join(tmpdir(), 'pglite-a-'));
const db = await PGlite.create(dirA);
await db.exec(SCHEMA_SQL);
await measure('PGlite in the main thread', (json) => db.query(INSERT_SQL, [json]));
await db.close();

const dirB = mkdtempSync(join(tmpdir(), 'pglite-b-'));
const store = createPgliteStore({ dir: dirB });
await store.init();
await measure('PGlite in its worker thread (the server)', (json) => store.insert(json));
await store.close();
rmSync(dirA, { recursive: true, force: true });
rmSync(dirB, { recursive: true, force: true });
