/** One load run against a server already listening: `tsx bench/src/load-once.ts URL [path] [seconds]`. */
import { uniquePredictBody } from './bodies.js';
import { groupPids, load } from './harness.js';

const [url = 'http://127.0.0.1:8101', path = '/predict', seconds = '8', pid] = process.argv.slice(2);
const r = await load({
  url,
  path,
  connections: 100,
  seconds: Number(seconds),
  body: uniquePredictBody,
  serverPids: pid ? groupPids(Number(pid)) : [],
});
console.log(JSON.stringify({ ...r, cpuMicrosPerRequest: Math.round((r.serverCpu / r.rps) * 1e6) }));
