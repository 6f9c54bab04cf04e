/**
 * `npm run bench:fairness`: does one client's load hurt another's latency?
 *
 * 1. Small beside heavy: small unique churn `/predict` requests (4 sequential clients), alone and then while
 *    20 clients loop 10,000-row `mlp-large` `/predict/batch` requests (~3 MB bodies) against one worker
 *    (POOL_SIZE=1). Reports small p50/p99 in both phases and the heavy requests' answers.
 * 2. Overload: unique `/predict` at 10 connections (the unloaded p99), then 1,000 connections two ways:
 *    autocannon (each sends again the moment it is answered, refused or not) and clients that wait out
 *    Retry-After after a 503, as production clients do. Latency is split by status, so the p99 of accepted
 *    requests is read apart from refusals.
 *
 * Each phase runs ROUNDS times (medians reported). Audit is off (its cost is measured by the main suite).
 * SERVER_ENV='{"K":"V"}' varies the server's settings; SERVER_MAIN runs another build.
 */
import { spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { uniquePredictBody } from './bodies.js';
import { median, settle, startProcess } from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const EXTRA_ENV = JSON.parse(process.env.SERVER_ENV ?? '{}') as Record<string, string>;
const ONLY = process.env.BENCH_ONLY; // 'fairness' | 'overload'

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const round = (x: number) => Math.round(x * 10) / 10;

/** Latencies (ms) of answered and refused requests as rates and percentiles. */
const byStatus = (ok: number[], refused: number[], other: number, errors: number, seconds: number) => ({
  okPerSec: Math.round(ok.length / seconds),
  okP50: round(percentile(ok, 50)),
  okP99: round(percentile(ok, 99)),
  refusedPerSec: Math.round(refused.length / seconds),
  refusedP99: round(percentile(refused, 99)),
  other,
  errors,
});

/** Each figure's median over the rounds. */
function printMedians(label: string, rounds: Record<string, number>[]) {
  const keys = Object.keys(rounds[0]!);
  const medians = Object.fromEntries(keys.map((k) => [k, median(rounds.map((x) => x[k]!))]));
  console.log(`${label} median of ${rounds.length}: ${JSON.stringify(medians)}`);
}

async function server(port: number, env: Record<string, string>) {
  return startProcess({
    name: `onnx-serve:${port}`,
    cmd: process.execPath,
    // SERVER_MAIN runs another build (a worktree of an earlier commit) for a before/after comparison.
    args: [process.env.SERVER_MAIN ?? join(ROOT, 'dist/src/node/main.js')],
    env: { PORT: String(port), AUDIT: 'off', ...env, ...EXTRA_ENV },
    url: `http://127.0.0.1:${port}`,
    readyPath: '/health/ready',
    timeoutMs: 120_000,
  });
}

/** Sequential clients sending small unique /predict requests until `stop`; every latency in ms. */
async function smallClients(url: string, clients: number, stop: () => boolean) {
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (!stop()) {
        const body = uniquePredictBody();
        const t = performance.now();
        const res = await fetch(`${url}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        await res.arrayBuffer();
        latencies.push(performance.now() - t);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    }),
  );
  return { latencies, statuses: Object.fromEntries(statuses) };
}

/** 2 decimals keep 10,000 × 64 values near 3 MB, under the 4 MiB body limit. */
function heavyBodies() {
  let i = 0;
  const bodies = Array.from({ length: 6 }, () =>
    JSON.stringify({
      model: 'mlp-large',
      use_cache: false,
      instances: Array.from({ length: 10_000 }, () => {
        i++;
        return Array.from({ length: 64 }, (_, k) => Math.round(Math.sin(i * 31 + k) * 100) / 100);
      }),
    }),
  );
  let n = 0;
  return () => bodies[n++ % bodies.length]!;
}

/**
 * The heavy clients, in a process of their own: sending 3 MB bodies and reading 600 kB answers would
 * otherwise hold the event loop that times the small requests, and their latency would be the bench's.
 */
async function heavyClients(url: string, seconds: number) {
  const body = heavyBodies();
  const until = performance.now() + seconds * 1000;
  const statuses = new Map<number, number>();
  const latencies: number[] = [];
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        const res = await fetch(`${url}/predict/batch`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: body(),
        });
        await res.arrayBuffer();
        latencies.push(performance.now() - t);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    }),
  );
  process.stdout.write(
    JSON.stringify({ statuses: Object.fromEntries(statuses), p50: percentile(latencies, 50) }),
  );
}

function spawnHeavy(url: string, seconds: number) {
  const child = spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url), 'heavy', url, String(seconds)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise<{ statuses: Record<string, number>; p50: number }>((resolve, reject) =>
    child.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`heavy clients exited ${code}`)),
    ),
  );
}

async function fairness() {
  const s = await server(8181, { POOL_SIZE: '1' });
  try {
    const rounds: Record<string, number>[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      await settle();
      let until = performance.now() + SECONDS * 1000;
      const alone = await smallClients(s.url, 4, () => performance.now() > until);
      await settle();
      const heavy = spawnHeavy(s.url, SECONDS + 1);
      // Let the heavy clients fill the server before small requests are timed.
      await new Promise((r) => setTimeout(r, 1500));
      until = performance.now() + SECONDS * 1000 - 1000;
      const beside = await smallClients(s.url, 4, () => performance.now() > until);
      const h = await heavy;
      const heavyOk = h.statuses['200'] ?? 0;
      const row = {
        aloneP50: round(percentile(alone.latencies, 50)),
        aloneP99: round(percentile(alone.latencies, 99)),
        besideP50: round(percentile(beside.latencies, 50)),
        besideP99: round(percentile(beside.latencies, 99)),
        besideN: beside.latencies.length,
        heavyOk,
        heavyRefused: Object.entries(h.statuses)
          .filter(([k]) => k !== '200')
          .reduce((a, [, v]) => a + v, 0),
        heavyP50: round(h.p50),
        heavyRowsPerSec: Math.round((heavyOk * 10_000) / (SECONDS + 1)),
      };
      console.log(
        `fairness round ${r + 1}: ${JSON.stringify(row)} small statuses ${JSON.stringify(beside.statuses)} heavy ${JSON.stringify(h.statuses)}`,
      );
      rounds.push(row);
    }
    printMedians('fairness', rounds);
  } finally {
    await s.stop();
  }
}

/** autocannon with latency kept per status class. */
async function loadByStatus(url: string, connections: number, seconds: number) {
  const ok: number[] = [];
  const refused: number[] = [];
  let other = 0;
  let instance!: autocannon.Instance;
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(
      {
        url: `${url}/predict`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        connections,
        duration: seconds,
        timeout: 30,
        requests: [{ setupRequest: (req) => ({ ...req, body: uniquePredictBody() }) }],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
  instance.on('response', (_client, status, _bytes, ms) => {
    if (status === 200) ok.push(ms);
    else if (status === 503) refused.push(ms);
    else other++;
  });
  const result = await done;
  return byStatus(ok, refused, other, result.errors + result.timeouts, seconds);
}

/**
 * Clients that honour Retry-After, as production clients do: each of `connections` loops sending unique
 * /predict requests over keep-alive; after a 503 it waits Retry-After seconds before its next request.
 * Latency is kept per status. (autocannon retries at once, so with it refusals only multiply the load.)
 */
async function politeClients(url: string, connections: number, seconds: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const { hostname, port } = new URL(url);
  const ok: number[] = [];
  const refused: number[] = [];
  let other = 0;
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const send = (body: string) =>
    new Promise<{ status: number; retryAfter: number }>((resolve, reject) => {
      const req = request(
        {
          agent,
          hostname,
          port,
          path: '/predict',
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, retryAfter: Number(res.headers['retry-after'] ?? 0) }),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  await Promise.all(
    Array.from({ length: connections }, async (_, k) => {
      // Staggered starts, as real clients arrive: not 1,000 requests in the same millisecond.
      await new Promise((r) => setTimeout(r, (k * 1000) / connections));
      while (performance.now() < until) {
        const t = performance.now();
        try {
          const { status, retryAfter } = await send(uniquePredictBody());
          const ms = performance.now() - t;
          if (status === 200) ok.push(ms);
          else if (status === 503) {
            refused.push(ms);
            await new Promise((r) => setTimeout(r, Math.max(retryAfter, 0.1) * 1000));
          } else other++;
        } catch {
          errors++;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }),
  );
  agent.destroy();
  return byStatus(ok, refused, other, errors, seconds);
}

async function overload() {
  const s = await server(8182, {});
  try {
    const rounds: Record<string, number>[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      await settle();
      const base = await loadByStatus(s.url, 10, SECONDS);
      await settle();
      // autocannon: 1,000 connections, each sending again the moment it is answered, refused or not.
      const blunt = await loadByStatus(s.url, 1000, SECONDS);
      await settle();
      const polite = await politeClients(s.url, 1000, SECONDS);
      const row = {
        unloadedP99: base.okP99,
        unloadedPerSec: base.okPerSec,
        bluntOkPerSec: blunt.okPerSec,
        bluntOkP99: blunt.okP99,
        bluntRefusedPerSec: blunt.refusedPerSec,
        bluntRefusedP99: blunt.refusedP99,
        politeOkPerSec: polite.okPerSec,
        politeOkP50: polite.okP50,
        politeOkP99: polite.okP99,
        politeRefusedPerSec: polite.refusedPerSec,
        politeRefusedP99: polite.refusedP99,
        errors: blunt.errors + polite.errors + blunt.other + polite.other,
        politeRatio: round(polite.okP99 / base.okP99),
      };
      console.log(`overload round ${r + 1}: ${JSON.stringify(row)}`);
      rounds.push(row);
    }
    printMedians('overload', rounds);
  } finally {
    await s.stop();
  }
}

if (process.argv[2] === 'heavy') {
  await heavyClients(process.argv[3]!, Number(process.argv[4]));
} else {
  if (ONLY !== 'overload') await fairness();
  if (ONLY !== 'fairness') await overload();
}
