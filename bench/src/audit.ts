/**
 * `npm run bench:audit`: what the audit log costs. Unique `/predict` (every request a new row, so every one
 * is a model run and an audit record) against servers alternated round by round in the same run:
 *   off        AUDIT=off (npm start's defaults otherwise: the in-process cache)
 *   embedded   npm start's defaults: the audit log into the embedded SQLite file
 *   postgres   DATABASE_URL and REDIS_URL: Postgres audit and the Redis cache tier, on this same machine
 * With BEFORE_DIR set to another checkout's root (built), its server joins as embedded-before and
 * postgres-before, for a before/after in one run.
 *
 * Per round every server is loaded in turn and each figure is taken over `off`'s in the same round (this
 * machine's speed drifts by a third from minute to minute); the report is the median of those ratios. It
 * also says how much of a core Postgres took (every `postgres` process on the machine, during each
 * postgres run) and the server's own CPU per request.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniquePredictBody } from './bodies.js';
import {
  add,
  benchDatabase,
  groupPids,
  loadAll,
  median,
  settle,
  startServerProcess,
  warmUp,
} from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? '50,100').split(',').map(Number);
const REDIS = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const BEFORE = process.env.BEFORE_DIR;

/** CPU seconds of every `postgres` process on the machine (the server and its background workers). */
function postgresCpuSeconds(): number {
  let ticks = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const f = stat.split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {}
  }
  return ticks / 100;
}

interface Spec {
  name: string;
  port: number;
  root: string;
  env: () => Promise<Record<string, string>>;
  postgres: boolean;
}
const dir = (name: string) => {
  const d = join(ROOT, 'bench', 'runs', `audit-${name}`);
  rmSync(d, { recursive: true, force: true });
  return d;
};
/** The two audited configurations of one build: the embedded default, and Postgres with Redis. */
const audited = (suffix: string, root: string, port: number, redisDb: number): Spec[] => [
  {
    name: `embedded${suffix}`,
    port,
    root,
    postgres: false,
    env: async () => ({ AUDIT_DIR: dir(`embedded${suffix}`) }),
  },
  {
    name: `postgres${suffix}`,
    port: port + 1,
    root,
    postgres: true,
    env: async () => ({
      AUDIT_DIR: dir(`postgres${suffix}`),
      DATABASE_URL: await benchDatabase(`bench_audit_${suffix ? 'before' : 'after'}`),
      REDIS_URL: `${REDIS}/${redisDb}`,
    }),
  },
];
const specs: Spec[] = [
  { name: 'off', port: 8301, root: ROOT, postgres: false, env: async () => ({ AUDIT: 'off' }) },
  ...audited('', ROOT, 8302, 8),
  ...(BEFORE ? audited('-before', BEFORE, 8304, 9) : []),
];

// BENCH_VARIANTS="name:KEY=V,KEY2=V2;name2:…": more servers with settings of their own (experiments), over
// the embedded defaults; DATABASE_URL=fresh gives one a database of its own.
for (const [i, variant] of (process.env.BENCH_VARIANTS ?? '').split(';').filter(Boolean).entries()) {
  const name = variant.slice(0, variant.indexOf(':') >>> 0);
  const settings = variant.includes(':') ? variant.slice(variant.indexOf(':') + 1) : '';
  const extra = Object.fromEntries(
    settings
      .split(',')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  specs.push({
    name,
    port: 8310 + i,
    root: ROOT,
    postgres: false,
    env: async () => ({
      AUDIT_DIR: dir(name),
      ...extra,
      ...(extra.DATABASE_URL === 'fresh'
        ? { DATABASE_URL: await benchDatabase(`bench_audit_${name.replace(/\W/g, '_')}`) }
        : {}),
    }),
  });
}

const procs = [];
try {
  for (const s of specs) {
    procs.push(await startServerProcess(s.name, s.port, { LOG_LEVEL: 'warn', ...(await s.env()) }, s.root));
  }
  await warmUp(procs, uniquePredictBody);
  for (const connections of CONNECTIONS) {
    const rps: Record<string, number[]> = {};
    const p99: Record<string, number[]> = {};
    const us: Record<string, number[]> = {};
    const pgCores: Record<string, number[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, p] of procs.entries()) {
        const s = specs[i]!;
        await settle();
        const pg0 = postgresCpuSeconds();
        const t0 = performance.now();
        const r = await loadAll(s.name, {
          url: p.url,
          path: '/predict',
          connections,
          seconds: SECONDS,
          body: uniquePredictBody,
          serverPids: groupPids(p.child.pid!),
        });
        const pgShare = (postgresCpuSeconds() - pg0) / ((performance.now() - t0) / 1000);
        add(rps, s.name, r.rps);
        add(p99, s.name, r.p99);
        add(us, s.name, Math.round((r.serverCpu / r.rps) * 1e6));
        if (s.postgres) add(pgCores, s.name, Math.round(pgShare * 100) / 100);
        console.log(
          `${connections}c r${round} ${s.name.padEnd(16)} ${r.rps} req/s p99 ${r.p99} ms, server ${r.serverCpu} cores` +
            (s.postgres ? `, postgres ${pgShare.toFixed(2)} cores` : ''),
        );
      }
    }
    const paired = (m: Record<string, number[]>, name: string) =>
      median(m[name]!.map((x, i) => x / m.off![i]!)).toFixed(3);
    for (const s of specs) {
      console.log(
        `${connections}c ${s.name.padEnd(16)} req/s ${paired(rps, s.name)}× off; ` +
          `median ${median(rps[s.name]!)} req/s, p99 ${median(p99[s.name]!)} ms, ` +
          `${median(us[s.name]!)} µs server cpu/request` +
          (s.postgres
            ? `, postgres ${median(pgCores[s.name]!)} cores (${Math.round((median(pgCores[s.name]!) / median(rps[s.name]!)) * 1e6)} µs/request)`
            : '') +
          `; rounds ${rps[s.name]!.join(' ')}`,
      );
    }
  }
} finally {
  for (const p of procs) await p.stop();
}
