/** Uncached /predict against the bare Hono ceiling, alternated in one run (issue 2's figure). */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniquePredictBody } from './bodies.js';
import { groupPids, load, median, startProcess } from './harness.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const rounds = Number(process.env.ROUNDS ?? 3);
const seconds = Number(process.env.SECONDS ?? 10);
const connections = Number(process.env.CONNECTIONS ?? 100);

const ceiling = await startProcess({
  name: 'ceiling',
  cmd: process.execPath,
  args: ['--import', 'tsx', join(root, 'bench/src/ceiling.ts')],
  env: { PORT: '8100' },
  url: 'http://127.0.0.1:8100',
  readyPath: '/health',
});
const server = await startProcess({
  name: 'onnx-serve',
  cmd: process.execPath,
  args: [join(root, 'dist/src/node/main.js')],
  env: { PORT: '8101', ...(process.env.SERVER_ENV ? JSON.parse(process.env.SERVER_ENV) : {}) },
  url: 'http://127.0.0.1:8101',
  readyPath: '/health/ready',
});
const runs: Record<string, Awaited<ReturnType<typeof load>>[]> = { ceiling: [], predict: [] };
try {
  for (const p of [ceiling, server])
    await load({
      url: p.url,
      path: '/predict',
      connections,
      seconds: 3,
      body: uniquePredictBody,
      serverPids: [],
    });
  for (let r = 0; r < rounds; r++) {
    for (const [name, p] of [
      ['ceiling', ceiling],
      ['predict', server],
    ] as const) {
      const res = await load({
        url: p.url,
        path: '/predict',
        connections,
        seconds,
        body: uniquePredictBody,
        serverPids: groupPids(p.child.pid!),
      });
      runs[name]!.push(res);
      console.log(name, JSON.stringify(res));
    }
  }
} finally {
  await ceiling.stop();
  await server.stop();
}
for (const [name, rs] of Object.entries(runs)) {
  console.log(
    `${name}: median ${median(rs.map((r) => r.rps))} req/s (min ${Math.min(...rs.map((r) => r.rps))}, max ${Math.max(...rs.map((r) => r.rps))}), p50 ${median(rs.map((r) => r.p50))} ms, p99 ${median(rs.map((r) => r.p99))} ms`,
  );
}
console.log(
  `ratio predict/ceiling: ${(median(runs.predict!.map((r) => r.rps)) / median(runs.ceiling!.map((r) => r.rps))).toFixed(2)}`,
);
