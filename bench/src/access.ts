/**
 * `npm run bench:access`: what API keys and rate limits cost. Unique `/predict` (cache and audit off, so
 * nothing else differs) against three servers, alternated round by round in the same run:
 *   open         no keys, no limits (the default)
 *   keyed-local  AUTH_PREDICTIONS=keyed, a per-key limit counted in process (rate-limiter-flexible memory)
 *   keyed-redis  the same, counted in Redis (one limit for every replica)
 * The limit is set far above the offered load, so every request is checked and counted but none refused:
 * the figure is the cost of checking, not of refusing. BENCH_ROUNDS rounds at 50 and 100 connections; in
 * each round every server is loaded in turn, and the ratio is taken within the round (this machine's speed
 * drifts by a third from minute to minute, the same for every server of a round): the figure is the median
 * of those ratios, of req/s and of server CPU per request.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKey, keyDigestHex, keyLine } from '../../src/core/index.js';
import { uniquePredictBody } from './bodies.js';
import { add, groupPids, loadAll, median, settle, startServerProcess, warmUp } from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
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
  for (const s of specs) procs.push(await startServerProcess(s.name, s.port, s.env, ROOT));
  await warmUp(
    procs,
    uniquePredictBody,
    specs.map((s) => s.headers),
  );
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
        const r = await loadAll(s.name, {
          url: p.url,
          path: '/predict',
          connections,
          seconds: SECONDS,
          body: uniquePredictBody,
          serverPids: groupPids(p.child.pid!),
          headers: s.headers,
        });
        add(rps, s.name, r.rps);
        add(p99, s.name, r.p99);
        add(cpu, s.name, r.serverCpu);
        add(usPerRequest, s.name, Math.round((r.serverCpu / r.rps) * 1e6));
        console.log(
          `${connections}c r${round} ${s.name.padEnd(12)} ${r.rps} req/s p99 ${r.p99} ms cpu ${r.serverCpu}`,
        );
      }
    }
    /** Each round's figure over the open server's in the same round; their median. */
    const pairedRatio = (m: Record<string, number[]>, name: string) =>
      median(m[name]!.map((x, i) => x / m.open![i]!)).toFixed(3);
    for (const s of specs) {
      console.log(
        `${connections}c ${s.name.padEnd(12)} req/s ${pairedRatio(rps, s.name)}× open, ` +
          `cpu/request ${pairedRatio(usPerRequest, s.name)}× open (medians of per-round ratios); ` +
          `median ${median(rps[s.name]!)} req/s, p99 ${median(p99[s.name]!)} ms, ` +
          `${median(usPerRequest[s.name]!)} µs cpu/request; rounds ${rps[s.name]!.join(' ')}`,
      );
    }
  }
} finally {
  for (const p of procs) await p.stop();
}
