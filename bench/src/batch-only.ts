/** One scenario alone: /predict/batch with 1,000 rows against a server on :8102 (`tsx bench/src/batch-only.ts PID`). */
import { batchBodies } from './bodies.js';
import { groupPids, load, median, settle } from './harness.js';

const pid = Number(process.argv[2]);
const body = batchBodies({ model: 'churn', version: '1', rows: 1000, features: 7, pool: 60 });
await load({
  url: 'http://127.0.0.1:8102',
  path: '/predict/batch',
  connections: 50,
  seconds: 3,
  body,
  serverPids: [],
});
for (const connections of [50, 100]) {
  const rows: number[] = [];
  for (let round = 0; round < 3; round++) {
    await settle();
    const r = await load({
      url: 'http://127.0.0.1:8102',
      path: '/predict/batch',
      connections,
      seconds: 8,
      body,
      serverPids: groupPids(pid),
    });
    const ok = (r.requests - r.non2xx - r.errors) / r.requests;
    rows.push(Math.round(r.rps * ok * 1000));
    console.log(
      `${connections}c: ${r.rps} req/s, non-2xx ${r.non2xx}, p99 ${r.p99} ms, cpu ${r.serverCpu}/${r.loadgenCpu}`,
    );
  }
  console.log(`${connections}c median ${median(rows)} rows/s (${Math.min(...rows)}–${Math.max(...rows)})`);
}
