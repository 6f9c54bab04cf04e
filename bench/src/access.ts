/**
 * `npm run bench:access`: what API keys and rate limits cost. Unique `/predict` (cache and audit off, so
 * nothing else differs) against three servers, alternated round by round in the same run:
 *   open         no keys, no limits (the default)
 *   keyed-local  AUTH_PREDICTIONS=keyed, a per-key limit counted in process (rate-limiter-flexible memory)
 *   keyed-redis  the same, counted in Redis (one limit for every replica)
 * The limit is set far above the offered load, so every request is checked and counted but none refused:
 * the figure is the cost of checking, not of refusing. Medians of BENCH_ROUNDS rounds at 50 and 100
 * connections; the ratio is each keyed server's req/s over the open one's.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKey, keyDigestHex, keyLine } from '../../src/core/index.js';
import { uniquePredictBody } from './bodies.js';
import { groupPids, load, median, settle, startProcess } from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const REDIS = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const KEY = generateKey();
const keyed = {
  API_KEYS: keyLine('bench', ['predict'], keyDigestHex(KEY)),
  AUTH_PREDICTIONS: 'keyed',
  RATE_LIMIT_PER_KEY: '100000000',
};
const base = { AUDIT: 'off', CACHE: 'off' };
const specs: { name: string; port: number; env: Record<string, string>; headers: Record<string, string> }[] =
  [
    { name: 'open', port: 8201, env: base, headers: {} },
    { name: 'keyed-local', port: 8202, env: { ...base, ...keyed }, headers: { 'x-api-key': KEY } },
    {
      name: 'keyed-redis',
      port: 8203,
      env: { ...base, ...keyed, REDIS_URL: `${REDIS}/7` },
      headers: { 'x-api-key': KEY },
    },
  ];

const procs = [];
try {
  for (const s of specs) {
    procs.push(
      await startProcess({
        name: s.name,
        cmd: process.execPath,
        args: [join(ROOT, 'dist/src/node/main.js')],
        env: { PORT: String(s.port), ...s.env },
        url: `http://127.0.0.1:${s.port}`,
        readyPath: '/health/ready',
        timeoutMs: 120_000,
      }),
    );
  }
  for (const [i, p] of procs.entries()) {
    await load({
      url: p.url,
      path: '/predict',
      connections: 50,
      seconds: 3,
      body: uniquePredictBody,
      serverPids: [],
      headers: specs[i]!.headers,
    });
  }
  for (const connections of [50, 100]) {
    const rps: Record<string, number[]> = {};
    const p99: Record<string, number[]> = {};
    const cpu: Record<string, number[]> = {};
    // Server CPU per request: steadier than req/s on a shared 2-core machine.
    const usPerRequest: Record<string, number[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, p] of procs.entries()) {
        const s = specs[i]!;
        await settle();
        const r = await load({
          url: p.url,
          path: '/predict',
          connections,
          seconds: SECONDS,
          body: uniquePredictBody,
          serverPids: groupPids(p.child.pid!),
          headers: s.headers,
        });
        if (r.non2xx || r.errors) throw new Error(`${s.name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
        (rps[s.name] ??= []).push(r.rps);
        (p99[s.name] ??= []).push(r.p99);
        (cpu[s.name] ??= []).push(r.serverCpu);
        (usPerRequest[s.name] ??= []).push(Math.round((r.serverCpu / r.rps) * 1e6));
        console.log(
          `${connections}c r${round} ${s.name.padEnd(12)} ${r.rps} req/s p99 ${r.p99} ms cpu ${r.serverCpu}`,
        );
      }
    }
    const open = median(rps.open!);
    for (const s of specs) {
      const m = median(rps[s.name]!);
      console.log(
        `${connections}c ${s.name.padEnd(12)} median ${m} req/s (${(m / open).toFixed(3)}× open), ` +
          `p99 ${median(p99[s.name]!)} ms, server cpu ${median(cpu[s.name]!)}, ` +
          `${median(usPerRequest[s.name]!)} µs cpu/request (${(median(usPerRequest[s.name]!) / median(usPerRequest.open!)).toFixed(3)}× open); ` +
          `rounds ${rps[s.name]!.join(' ')}`,
      );
    }
  }
} finally {
  for (const p of procs) await p.stop();
}
