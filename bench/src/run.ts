/**
 * `npm run bench`: every scenario, alternated round by round with its baseline, at 50 and 100 connections.
 * `npm run bench:quick`: each scenario once, briefly, to prove the harness end to end (CI).
 * Writes bench/results/latest.json, bench/RESULTS.md and bench/results/chart.svg.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { batchBodies, hotSetBody, uniquePredictBody, zipfBody } from './bodies.js';
import { renderChart } from './chart.js';
import { groupPids, type LoadResult, load, median, type Proc, settle, startProcess } from './harness.js';

const quick = process.argv.includes('--quick');
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PEER = process.env.PEER_DIR ?? join(ROOT, '..', 'shared', 'peers', 'fastapi-seed');
const SECONDS = Number(process.env.BENCH_SECONDS ?? (quick ? 1 : 8));
const WARMUP = quick ? 1 : 3;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 3));
const CONNECTIONS = quick ? [20] : [50, 100];
const REDIS = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

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

async function benchDatabase(name: string): Promise<string> {
  const c = new pg.Client({ connectionString: PG_ADMIN });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return PG_ADMIN.replace(/\/[^/]*$/, `/${name}`);
}

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
  node('off', 8102, { AUDIT: 'off', CACHE: 'off' }),
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
    title: '/predict, Zipf inputs (s = 1.1 over 20,000 rows)',
    server: 'core',
    path: '/predict',
    body: zipfBody(20_000, 1.1),
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

interface Run extends LoadResult {
  scenario: string;
  connections: number;
  round: number;
  rowsPerSecond: number;
  cacheHitRatio?: number;
}

async function cacheCounts(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (r: string) =>
    Number(
      new RegExp(`onnxserve_cache_lookups_total\\{tier="l1",result="${r}"\\} (\\d+)`).exec(text)?.[1] ?? 0,
    );
  return { hit: read('hit'), miss: read('miss') };
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
        const run: Run = { scenario: sc.id, connections, round, ...r, rowsPerSecond: r.rps * sc.rows };
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

// ---- report -------------------------------------------------------------------------------------
const byScenario = (id: string, c: number) => runs.filter((r) => r.scenario === id && r.connections === c);
const med = (id: string, c: number, k: keyof Run) => median(byScenario(id, c).map((r) => Number(r[k])));
const range = (id: string, c: number, k: keyof Run) => {
  const v = byScenario(id, c).map((r) => Number(r[k]));
  return `${Math.min(...v)}–${Math.max(...v)}`;
};

for (const sc of scenarios) {
  for (const c of CONNECTIONS) {
    const rs = byScenario(sc.id, c);
    if (rs.length === 0 || rs.every((r) => r.requests - r.non2xx - r.errors <= 0)) {
      throw new Error(`scenario ${sc.id} at ${c} connections answered no request`);
    }
  }
}

interface Target {
  name: string;
  value: number;
  goal: number;
  unit: string;
  pass: boolean;
  detail: string;
}
const targets: Target[] = [];
const top = CONNECTIONS.at(-1)!;
for (const c of CONNECTIONS) {
  const ceiling = med('ceiling', c, 'rps');
  const ratio = (id: string) => Math.round((med(id, c, 'rps') / ceiling) * 100) / 100;
  targets.push({
    name: `uncached /predict vs ceiling @${c}`,
    value: ratio('predict-unique'),
    goal: 1,
    unit: '×',
    pass: ratio('predict-unique') >= 1,
    detail: `${med('predict-unique', c, 'rps')} vs ${ceiling} req/s`,
  });
  targets.push({
    name: `cached /predict vs ceiling @${c}`,
    value: ratio('predict-hot'),
    goal: 1,
    unit: '×',
    pass: ratio('predict-hot') >= 1,
    detail: `${med('predict-hot', c, 'rps')} vs ${ceiling} req/s`,
  });
  const peer = Math.max(med('peer-w1', c, 'rps'), med('peer-w2', c, 'rps'));
  const peerBest = med('peer-w1', c, 'rps') >= med('peer-w2', c, 'rps') ? 'peer-w1' : 'peer-w2';
  const vsPeer = Math.round((med('both-on', c, 'rps') / peer) * 10) / 10;
  const lowerP99 = med('both-on', c, 'p99') < med(peerBest, c, 'p99');
  targets.push({
    name: `ours (cache + audit on) vs the Python peer's best @${c}`,
    value: vsPeer,
    goal: 15,
    unit: '×',
    pass: vsPeer >= 15 && lowerP99,
    detail: `${med('both-on', c, 'rps')} vs ${peer} req/s (${peerBest}); p99 ${med('both-on', c, 'p99')} vs ${med(peerBest, c, 'p99')} ms`,
  });
  const batchRows = Math.max(med('batch-64', c, 'rowsPerSecond'), med('batch-1000', c, 'rowsPerSecond'));
  targets.push({
    name: `batch rows/s, churn logistic regression @${c}`,
    value: batchRows,
    goal: 1_000_000,
    unit: 'rows/s',
    pass: batchRows >= 1_000_000,
    detail: `64 rows: ${med('batch-64', c, 'rowsPerSecond')}, 1,000 rows: ${med('batch-1000', c, 'rowsPerSecond')}`,
  });
  const scale =
    Math.round((med('mlp-2w', c, 'rowsPerSecond') / med('mlp-1w', c, 'rowsPerSecond')) * 100) / 100;
  targets.push({
    name: `mlp-large throughput, 2 workers vs 1 @${c}`,
    value: scale,
    goal: 1.7,
    unit: '×',
    pass: scale >= 1.7,
    detail: `${med('mlp-2w', c, 'rowsPerSecond')} vs ${med('mlp-1w', c, 'rowsPerSecond')} rows/s`,
  });
}

const sh = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
};
const machine = {
  cpus: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  commit: sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
  loadGenerator: 'autocannon 9 (in the runner process, sharing the 2 cores with the server)',
};
const outDir = join(ROOT, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const command = quick ? 'npm run bench:quick' : 'npm run bench';
const report = {
  command,
  started: started.toISOString(),
  finished: new Date().toISOString(),
  quick,
  seconds: SECONDS,
  rounds: ROUNDS,
  connections: CONNECTIONS,
  machine,
  scenarios: scenarios.map(({ id, title, server, path, rows }) => ({ id, title, server, path, rows })),
  targets,
  runs,
};
writeFileSync(join(outDir, quick ? 'quick.json' : 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);

if (!quick) {
  const lines: string[] = [];
  lines.push('# Benchmark results', '');
  lines.push(
    `Made by \`${command}\` on ${report.finished.slice(0, 16).replace('T', ' ')} UTC, commit ${machine.commit}: ${machine.cpus}, ${machine.memoryGiB} GiB, Node ${machine.node}.`,
  );
  lines.push(
    `Load: ${machine.loadGenerator}. Each figure is the median of ${ROUNDS} runs of ${SECONDS} s (min–max beside it); every scenario ran once per round, in turn, after a ${WARMUP} s warm-up, and each run waited for the machine to be ≥ 85 % idle first. All runs and their CPU and memory figures are in \`results/latest.json\`.`,
    '',
  );
  lines.push('## Targets', '', '| target | measured | goal | result | detail |', '|---|---|---|---|---|');
  for (const t of targets)
    lines.push(
      `| ${t.name} | ${t.value.toLocaleString('en-US')} ${t.unit} | ≥ ${t.goal.toLocaleString('en-US')} ${t.unit} | ${t.pass ? 'pass' : '**miss**'} | ${t.detail} |`,
    );
  for (const c of CONNECTIONS) {
    const ceiling = med('ceiling', c, 'rps');
    lines.push(
      '',
      `## ${c} connections`,
      '',
      '| scenario | req/s | rows/s | × ceiling | p50 ms | p90 ms | p99 ms | errors + non-2xx | server CPU (cores) | load-gen CPU | server RSS MiB | cache hits |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const sc of scenarios) {
      const rs = byScenario(sc.id, c);
      const hits =
        rs[0]?.cacheHitRatio !== undefined
          ? `${Math.round(median(rs.map((r) => r.cacheHitRatio!)) * 100)} %`
          : '';
      lines.push(
        `| ${sc.title} | ${med(sc.id, c, 'rps')} (${range(sc.id, c, 'rps')}) | ${med(sc.id, c, 'rowsPerSecond').toLocaleString('en-US')} | ${(med(sc.id, c, 'rps') / ceiling).toFixed(2)} | ${med(sc.id, c, 'p50')} | ${med(sc.id, c, 'p90')} | ${med(sc.id, c, 'p99')} | ${rs.reduce((n, r) => n + r.errors + r.non2xx, 0)} | ${med(sc.id, c, 'serverCpu')} | ${med(sc.id, c, 'loadgenCpu')} | ${med(sc.id, c, 'serverRssMiB')} | ${hits} |`,
      );
    }
  }
  lines.push('', '![throughput and p99 per scenario](results/chart.svg)', '');
  const notes = join(ROOT, 'bench', 'NOTES.md');
  if (existsSync(notes)) lines.push(readFileSync(notes, 'utf8'));
  writeFileSync(join(ROOT, 'bench', 'RESULTS.md'), `${lines.join('\n')}\n`);
  writeFileSync(
    join(outDir, 'chart.svg'),
    renderChart(
      scenarios.map((sc) => ({ label: sc.id, rps: med(sc.id, top, 'rps'), p99: med(sc.id, top, 'p99') })),
      `median of ${ROUNDS} runs at ${top} connections`,
    ),
  );
}
console.log('\ntargets:');
for (const t of targets)
  console.log(
    `  ${t.pass ? 'pass' : 'MISS'}  ${t.name}: ${t.value} ${t.unit} (goal ${t.goal}) — ${t.detail}`,
  );
console.log(`\nbench: ${runs.length} runs recorded in ${join(outDir, quick ? 'quick.json' : 'latest.json')}`);
