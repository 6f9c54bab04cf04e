/**
 * `npm run bench`: every scenario, alternated round by round with its baseline, at 50 and 100 connections.
 * `npm run bench:quick`: each scenario once, briefly, to prove the harness end to end (CI).
 * Writes bench/results/latest.json, bench/RESULTS.md and bench/results/chart.svg.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { batchBodies, hotSetBody, uniquePredictBody, zipfBody } from './bodies.js';
import { benchDatabase, groupPids, load, type Proc, settle, startProcess } from './harness.js';
import { type Run, writeReport } from './report.js';

const quick = process.argv.includes('--quick');
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PEER = process.env.PEER_DIR ?? join(ROOT, '..', 'shared', 'peers', 'fastapi-seed');
const peerAvailable = existsSync(join(PEER, 'run'));
if (!peerAvailable && !quick)
  throw new Error(`the Python peer is not at ${PEER} (set PEER_DIR): the full bench compares against it`);
if (!peerAvailable)
  console.log(`NOTE: no Python peer at ${PEER} (set PEER_DIR): its scenarios are left out of this quick run`);
const SECONDS = Number(process.env.BENCH_SECONDS ?? (quick ? 1 : 8));
const WARMUP = quick ? 1 : 3;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 3));
const CONNECTIONS = quick ? [20] : [50, 100];
const REDIS = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

interface ServerSpec {
  name: string;
  port: number;
  start: () => Promise<Proc>;
}

const node = (name: string, port: number, env: Record<string, string>): ServerSpec => ({
  name,
  port,
  start: () =>
    startProcess({
      name,
      cmd: process.execPath,
      args: [join(ROOT, 'dist/src/node/main.js')],
      env: { PORT: String(port), AUDIT_DIR: join(ROOT, 'bench', 'runs', name), ...env },
      url: `http://127.0.0.1:${port}`,
      readyPath: '/health/ready',
      timeoutMs: 120_000,
    }),
});

const ourDb = await benchDatabase('bench_onnxserve');
const peerDb = await benchDatabase('bench_peer');

const servers: ServerSpec[] = [
  {
    name: 'ceiling',
    port: 8100,
    start: () =>
      startProcess({
        name: 'ceiling',
        cmd: process.execPath,
        args: ['--import', 'tsx', join(ROOT, 'bench/src/ceiling.ts')],
        env: { PORT: '8100' },
        url: 'http://127.0.0.1:8100',
        readyPath: '/health',
      }),
  },
  node('core', 8101, { AUDIT: 'off' }),
  // Batch scenarios keep up to 100 x 1,000 rows in flight: a queue bound that holds them, so they measure
  // throughput rather than load shedding (the default 20,000 rows answers the excess with 503).
  node('off', 8102, { AUDIT: 'off', CACHE: 'off', BATCH_MAX_QUEUED_ROWS: '200000' }),
  node('full', 8103, { REDIS_URL: `${REDIS}/9`, DATABASE_URL: ourDb }),
  node('one-worker', 8104, { AUDIT: 'off', CACHE: 'off', POOL_SIZE: '1' }),
  ...[1, 2].map((w) => ({
    name: `peer-w${w}`,
    port: 8899 + w,
    start: () =>
      startProcess({
        name: `peer-w${w}`,
        cmd: 'bash',
        args: [join(PEER, 'run'), '--workers', String(w)],
        env: { PORT: String(8899 + w), PEER_REDIS_URL: `${REDIS}/8`, PEER_DATABASE_URL: peerDb },
        url: `http://127.0.0.1:${8899 + w}`,
        readyPath: '/health',
        timeoutMs: 600_000,
      }),
  })),
];

interface Scenario {
  id: string;
  title: string;
  server: string;
  path: string;
  body: () => string;
  /** Rows per request, for rows/s. */
  rows: number;
}

const scenarios: Scenario[] = [
  {
    id: 'ceiling',
    title: 'Ceiling: bare Hono, same JSON body, constant answer',
    server: 'ceiling',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
  {
    id: 'predict-unique',
    title: '/predict, unique inputs (nothing cacheable)',
    server: 'core',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
  {
    id: 'predict-hot',
    title: '/predict, hot set of 32 rows (all cache hits)',
    server: 'core',
    path: '/predict',
    body: hotSetBody(32),
    rows: 1,
  },
  {
    id: 'predict-zipf',
    title: '/predict, Zipf inputs (s = 1.05 over 5,000,000 rows)',
    server: 'core',
    path: '/predict',
    // A support far larger than L1 (100,000 entries): hits come from popularity, not from having seen it all.
    body: zipfBody(5_000_000, 1.05),
    rows: 1,
  },
  {
    id: 'batch-64',
    title: '/predict/batch, 64 rows, churn v1 (logistic regression)',
    server: 'off',
    path: '/predict/batch',
    body: batchBodies({ model: 'churn', version: '1', rows: 64, features: 7, pool: 500 }),
    rows: 64,
  },
  {
    id: 'batch-1000',
    title: '/predict/batch, 1,000 rows, churn v1 (logistic regression)',
    server: 'off',
    path: '/predict/batch',
    body: batchBodies({ model: 'churn', version: '1', rows: 1000, features: 7, pool: 60 }),
    rows: 1000,
  },
  {
    id: 'mlp-1w',
    title: 'mlp-large (64-256-256-2), 64-row batches, 1 worker',
    server: 'one-worker',
    path: '/predict/batch',
    body: batchBodies({ model: 'mlp-large', rows: 64, features: 64, pool: 200 }),
    rows: 64,
  },
  {
    id: 'mlp-2w',
    title: 'mlp-large (64-256-256-2), 64-row batches, 2 workers',
    server: 'off',
    path: '/predict/batch',
    body: batchBodies({ model: 'mlp-large', rows: 64, features: 64, pool: 200 }),
    rows: 64,
  },
  {
    id: 'both-off',
    title: '/predict unique, cache and audit off',
    server: 'off',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
  {
    id: 'both-on',
    title: '/predict unique, cache (L1 + Redis) and audit (Postgres) on',
    server: 'full',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
  {
    id: 'peer-w1',
    title: 'Python peer (FastAPI + sklearn, Redis + Postgres), 1 worker',
    server: 'peer-w1',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
  {
    id: 'peer-w2',
    title: 'Python peer (FastAPI + sklearn, Redis + Postgres), 2 workers',
    server: 'peer-w2',
    path: '/predict',
    body: uniquePredictBody,
    rows: 1,
  },
];

async function cacheCounts(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (r: string) =>
    Number(
      new RegExp(`onnxserve_cache_lookups_total\\{tier="l1",result="${r}"\\} (\\d+)`).exec(text)?.[1] ?? 0,
    );
  return { hit: read('hit'), miss: read('miss') };
}

if (!peerAvailable) {
  servers.splice(0, servers.length, ...servers.filter((s) => !s.name.startsWith('peer')));
  scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => !s.server.startsWith('peer')));
}

const running = new Map<string, Proc>();
const runs: Run[] = [];
const started = new Date();
try {
  for (const s of servers) {
    process.stdout.write(`starting ${s.name}… `);
    running.set(s.name, await s.start());
    console.log('ready');
  }
  for (const sc of scenarios) {
    const p = running.get(sc.server)!;
    await load({
      url: p.url,
      path: sc.path,
      connections: 50,
      seconds: WARMUP,
      body: sc.body,
      serverPids: [],
    });
  }
  for (const connections of CONNECTIONS) {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const sc of scenarios) {
        const p = running.get(sc.server)!;
        await settle();
        const before = sc.server === 'core' ? await cacheCounts(p.url) : undefined;
        const r = await load({
          url: p.url,
          path: sc.path,
          connections,
          seconds: SECONDS,
          body: sc.body,
          serverPids: groupPids(p.child.pid!),
        });
        // Only answered rows count: a shed request (503) carries none.
        const ok = r.requests > 0 ? (r.requests - r.non2xx - r.errors) / r.requests : 0;
        const run: Run = {
          scenario: sc.id,
          connections,
          round,
          ...r,
          rowsPerSecond: Math.round(r.rps * ok * sc.rows),
        };
        if (before) {
          const after = await cacheCounts(p.url);
          const lookups = after.hit - before.hit + (after.miss - before.miss);
          run.cacheHitRatio = lookups ? Math.round(((after.hit - before.hit) / lookups) * 1000) / 1000 : 0;
        }
        runs.push(run);
        console.log(
          `${connections}c r${round} ${sc.id.padEnd(15)} ${String(r.rps).padStart(7)} req/s p50 ${r.p50} p99 ${r.p99} ms  errors ${r.errors} non2xx ${r.non2xx}  cpu ${r.serverCpu}/${r.loadgenCpu}`,
        );
      }
    }
  }
} finally {
  for (const p of running.values()) await p.stop();
}

writeReport({
  quick,
  seconds: SECONDS,
  warmup: WARMUP,
  rounds: ROUNDS,
  connections: CONNECTIONS,
  started,
  scenarios,
  runs,
  root: ROOT,
});
