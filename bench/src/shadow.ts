/**
 * `npm run bench:shadow`: what a shadow version costs the requests it shadows. Unique `/predict` (cache and
 * audit off) against two servers on copies of the shipped models, alternated round by round:
 *   off     churn version 2 serves (no policy)
 *   shadow  the same, with version 1 as a shadow of every request (traffic.json: sample 1)
 * At 50 connections, two ways: as fast as the server answers (closed loop: the shadow's CPU shows as lost
 * throughput), and at a fixed offered rate below capacity (BENCH_RATE, default 3,000 req/s), where the
 * latency a client sees is the question. The figure is the median over BENCH_ROUNDS rounds of each round's
 * p99 difference (shadow minus off), and of the req/s ratio.
 */
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniquePredictBody } from './bodies.js';
import { groupPids, load, loadAll, median, type Proc, settle, startProcess } from './harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const RATE = Number(process.env.BENCH_RATE ?? 3000);

function modelsDir(shadow: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-shadow-'));
  cpSync(join(ROOT, 'models'), dir, { recursive: true });
  if (shadow) {
    writeFileSync(
      join(dir, 'churn', 'traffic.json'),
      JSON.stringify({ split: {}, sticky: true, shadow: { version: '1', sample: 1 } }),
    );
  }
  return dir;
}

const specs = [
  { name: 'off', port: 8211, dir: modelsDir(false) },
  { name: 'shadow', port: 8212, dir: modelsDir(true) },
];
const procs: Proc[] = [];
try {
  for (const s of specs) {
    procs.push(
      await startProcess({
        name: s.name,
        cmd: process.execPath,
        args: [join(ROOT, 'dist/src/node/main.js')],
        // Admin routes open on both (local only): the shadow report is read at the end.
        env: {
          PORT: String(s.port),
          AUDIT: 'off',
          CACHE: 'off',
          MODELS_DIR: s.dir,
          DEFAULT_MODEL: 'churn',
          ADMIN_OPEN: 'true',
        },
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
  const shadowReport = async () =>
    (await (await fetch(`${procs[1]!.url}/models/churn/shadow`)).json()) as {
      requests: number;
      skipped: number;
      skipped_busy: number;
    };
  for (const mode of ['closed', 'rate'] as const) {
    const before = await shadowReport();
    const rps: Record<string, number[]> = {};
    const p99: Record<string, number[]> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [i, p] of procs.entries()) {
        const s = specs[i]!;
        await settle();
        const r = await loadAll(s.name, {
          url: p.url,
          path: '/predict',
          connections: 50,
          seconds: SECONDS,
          body: uniquePredictBody,
          serverPids: groupPids(p.child.pid!),
          ...(mode === 'rate' ? { rate: RATE } : {}),
        });
        rps[s.name] = [...(rps[s.name] ?? []), r.rps];
        p99[s.name] = [...(p99[s.name] ?? []), r.p99];
        console.log(
          `${mode} r${round} ${s.name.padEnd(7)} ${r.rps} req/s p50 ${r.p50} ms p99 ${r.p99} ms cpu ${r.serverCpu}`,
        );
      }
    }
    const diff = median(p99.shadow!.map((x, i) => x - p99.off![i]!));
    const ratio = median(rps.shadow!.map((x, i) => x / rps.off![i]!));
    console.log(
      `${mode === 'closed' ? 'closed loop' : `${RATE} req/s offered`}, 50 connections: shadow p99 ${diff >= 0 ? '+' : ''}${diff} ms ` +
        `(median of per-round differences), req/s ${ratio.toFixed(3)}× off; p99 off ${p99.off!.join(' ')}, shadow ${p99.shadow!.join(' ')}`,
    );
    // How many of this mode's requests the shadow ran (SHADOW_MAX_LOAD skips them while the server is busy).
    const after = await shadowReport();
    const ran = after.requests - before.requests;
    const busy = after.skipped_busy - before.skipped_busy;
    const full = after.skipped - before.skipped;
    console.log(
      `  shadowed ${ran} requests, skipped ${busy} while busy and ${full} for runs in flight: ${((100 * ran) / Math.max(1, ran + busy + full)).toFixed(1)} % shadowed`,
    );
  }
  // The shadow ran and was compared, or the figures above measured nothing: its report says which.
  const report = (await (await fetch(`${procs[1]!.url}/models/churn/shadow`)).json()) as {
    requests?: number;
  };
  console.log('shadow report:', JSON.stringify(report));
  if (!report.requests) throw new Error('the shadow server ran no shadow: the figures above compare nothing');
} finally {
  for (const p of procs) await p.stop();
}
