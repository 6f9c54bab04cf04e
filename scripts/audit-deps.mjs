#!/usr/bin/env node
/**
 * Supply chain: `npm audit --omit=dev --audit-level=high`, what ships in the image. Fails on any high or
 * critical advisory. When the registry's audit endpoint cannot be reached (some networks, this project's
 * own CI machine among them, allow the registry's GETs but not the audit POST), it says so loudly and passes,
 * unless AUDIT_REQUIRED=1 (the GitHub workflow sets it): there, an unreachable endpoint fails too.
 */
import { spawnSync } from 'node:child_process';

const run = spawnSync('npm', ['audit', '--omit=dev', '--audit-level=high', '--json'], {
  encoding: 'utf8',
  maxBuffer: 64 * 1024 * 1024,
});
let report;
try {
  report = JSON.parse(run.stdout);
} catch {
  report = undefined;
}
const counts = report?.metadata?.vulnerabilities;
if (counts) {
  const serious = (counts.high ?? 0) + (counts.critical ?? 0);
  const summary = Object.entries(counts)
    .map(([level, n]) => `${level} ${n}`)
    .join(', ');
  if (serious > 0) {
    console.error(
      `npm audit: ${serious} high or critical advisories in production dependencies (${summary})`,
    );
    spawnSync('npm', ['audit', '--omit=dev', '--audit-level=high'], { stdio: 'inherit' });
    process.exit(1);
  }
  console.log(`npm audit: no high or critical advisories in production dependencies (${summary})`);
  process.exit(0);
}
const why = report?.message ?? report?.error?.summary ?? (run.stderr || 'no report').trim().split('\n').pop();
if (process.env.AUDIT_REQUIRED === '1') {
  console.error(`npm audit could not run: ${why}`);
  process.exit(1);
}
console.warn(`\n!! npm audit NOT CHECKED here: the registry's audit endpoint is unreachable (${why}).`);
console.warn(
  '!! The GitHub workflow runs it with AUDIT_REQUIRED=1; run `npm run audit:deps` where it is reachable.\n',
);
