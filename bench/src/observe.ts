/**
 * `npm run bench:observe`: what seeing inside costs. Unique `/predict` (cache and audit off, so nothing else
 * differs) against servers alternated round by round in the same run:
 *   off          LOG_LEVEL=warn (no access lines), DRIFT=off, no tracing: the baseline
 *   logs+drift   LOG_LEVEL=info (an access line per request, on a pipe the bench drains), DRIFT=on (the
 *                shipped reference; every batch counted in the worker, the window read by scrapes)
 *   logs, drift  each of the two alone
 *   tracing      the baseline with OTEL_EXPORTER_OTLP_ENDPOINT set: every request traced (six spans) and
 *                exported as OTLP/HTTP protobuf to a local collector that accepts and discards
 *   tracing-1%   the same, sampling 1 % of traces (OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG 0.01)
 *   before       with BENCH_BASE_DIR set: an earlier build with neither tracing nor drift code, configured as
 *                `off` (what the code costs when it is off)
 * The collector runs in a process of its own. Prometheus scrapes /metrics once a second during every run
 * (the drift gauges are computed at scrape time). BENCH_ROUNDS rounds (default 10, of BENCH_SECONDS = 5 s
 * per server, the order rotated every round) at 50 connections; the figure is the median over rounds of each
 * round's ratio to `off`, of req/s and of server CPU per request (the steadier of the two on a shared machine).
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniquePredictBody } from './bodies.js';
import { add, groupPids, load, loadAll, median, settle, startProcess } from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const COLLECTOR_PORT = 8239;

/** An OTLP/HTTP collector that reads every body and discards it. */
const COLLECTOR = `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => { s.writeHead(200, { 'content-type': 'application/x-protobuf' }); s.end(); }); }).listen(${COLLECTOR_PORT}, '127.0.0.1');`;

const base = { AUDIT: 'off', CACHE: 'off', LOG_LEVEL: 'warn', DRIFT: 'off' };
const otlp = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${COLLECTOR_PORT}` };
const specs: { name: string; port: number; env: Record<string, string>; main?: string }[] = [
  { name: 'off', port: 8231, env: base },
  { name: 'logs+drift', port: 8232, env: { ...base, LOG_LEVEL: 'info', DRIFT: 'on' } },
  { name: 'logs', port: 8236, env: { ...base, LOG_LEVEL: 'info' } },
  { name: 'drift', port: 8237, env: { ...base, DRIFT: 'on' } },
  { name: 'tracing', port: 8233, env: { ...base, ...otlp } },
  {
    name: 'tracing-1%',
    port: 8234,
    env: {
      ...base,
      ...otlp,
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.01',
    },
  },
];

// The server as it was before any of this (BENCH_BASE_DIR: a built checkout of an earlier commit, e.g.
// `git worktree add /tmp/base <commit> && cd /tmp/base && ln -s $PWD/node_modules && npm run build`): what
// having the tracing and drift code costs when neither is on.
if (process.env.BENCH_BASE_DIR) {
  specs.push({
    name: 'before',
    port: 8235,
    env: base,
    main: join(process.env.BENCH_BASE_DIR, 'dist/src/node/main.js'),
  });
}

// BENCH_CONFIGS=off,logs,drift runs only those (off, the baseline, always runs).
if (process.env.BENCH_CONFIGS) {
  const wanted = new Set(['off', ...process.env.BENCH_CONFIGS.split(',')]);
  specs.splice(0, specs.length, ...specs.filter((s) => wanted.has(s.name)));
}

const collector = spawn(process.execPath, ['-e', COLLECTOR], { stdio: 'ignore' });
const procs = [];
/** Scrapes /metrics every second while a run lasts, as Prometheus would. */
const scraping = (url: string) => {
  const timer = setInterval(() => {
    fetch(`${url}/metrics`).then(
      (r) => r.text(),
      () => {},
    );
  }, 1000);
  return () => clearInterval(timer);
};
try {
  for (const s of specs) {
    procs.push(
      await startProcess({
        name: s.name,
        cmd: process.execPath,
        args: [s.main ?? join(ROOT, 'dist/src/node/main.js')],
        env: { PORT: String(s.port), ...s.env },
        url: `http://127.0.0.1:${s.port}`,
        readyPath: '/health/ready',
        timeoutMs: 120_000,
      }),
    );
  }
  for (const p of procs) {
    await load({
      url: p.url,
      path: '/predict',
      connections: 50,
      seconds: 3,
      body: uniquePredictBody,
      serverPids: [],
    });
  }
  const rps: Record<string, number[]> = {};
  const p99: Record<string, number[]> = {};
  const usPerRequest: Record<string, number[]> = {};
  for (let round = 1; round <= ROUNDS; round++) {
    // Each round starts with a different server, so none always follows the same one.
    for (let k = 0; k < procs.length; k++) {
      const i = (round + k) % procs.length;
      const p = procs[i]!;
      const s = specs[i]!;
      await settle(0.85, 3000);
      const stop = scraping(p.url);
      const r = await loadAll(s.name, {
        url: p.url,
        path: '/predict',
        connections: CONNECTIONS,
        seconds: SECONDS,
        body: uniquePredictBody,
        serverPids: groupPids(p.child.pid!),
      }).finally(stop);
      add(rps, s.name, r.rps);
      add(p99, s.name, r.p99);
      add(usPerRequest, s.name, Math.round((r.serverCpu / r.rps) * 1e6));
      console.log(
        `r${round} ${s.name.padEnd(11)} ${r.rps} req/s p99 ${r.p99} ms cpu ${r.serverCpu} (${Math.round((r.serverCpu / r.rps) * 1e6)} µs/request)`,
      );
    }
  }
  const pairedRatio = (m: Record<string, number[]>, name: string) =>
    median(m[name]!.map((x, i) => x / m.off![i]!)).toFixed(3);
  for (const s of specs) {
    console.log(
      `${CONNECTIONS}c ${s.name.padEnd(11)} req/s ${pairedRatio(rps, s.name)}× off, ` +
        `cpu/request ${pairedRatio(usPerRequest, s.name)}× off (medians of per-round ratios); ` +
        `median ${median(rps[s.name]!)} req/s, p99 ${median(p99[s.name]!)} ms, ` +
        `${median(usPerRequest[s.name]!)} µs cpu/request; rounds ${rps[s.name]!.join(' ')}`,
    );
  }
  // What a server with drift on says about the bench's rows (their support_tickets are uniform over 0–5, where
  // the training data's are Poisson: drift it should report).
  const driftServer = procs[specs.findIndex((s) => s.env.DRIFT === 'on')];
  if (driftServer) {
    const drift = (await (await fetch(`${driftServer.url}/models/churn/drift`)).json()) as {
      status: string;
      window: unknown;
      drifted_features: string[];
    };
    console.log(
      `${driftServer.name} server, /models/churn/drift:`,
      JSON.stringify({ status: drift.status, window: drift.window, drifted: drift.drifted_features }),
    );
  }
} finally {
  for (const p of procs) await p.stop();
  collector.kill();
}
