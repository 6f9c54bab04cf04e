/**
 * `npm run audit:deps`, CI's supply-chain step, read against the reports npm audit gives. The registry's
 * audit endpoint cannot be reached from this machine, so a stand-in `npm` on PATH prints each report.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const SCRIPT = join(import.meta.dirname, '..', 'scripts', 'audit-deps.mjs');

function run(report: unknown, env: Record<string, string> = {}) {
  const bin = mkdtempSync(join(tmpdir(), 'fake-npm-'));
  writeFileSync(join(bin, 'report.json'), JSON.stringify(report));
  // `npm audit … --json` prints the report; the human-readable rerun prints a line.
  writeFileSync(
    join(bin, 'npm'),
    `#!/bin/sh\ncase "$*" in *--json*) cat "${join(bin, 'report.json')}";; *) echo "human report";; esac\n`,
  );
  chmodSync(join(bin, 'npm'), 0o755);
  const r = spawnSync(process.execPath, [SCRIPT], {
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, AUDIT_REQUIRED: '', ...env },
    encoding: 'utf8',
  });
  return { code: r.status, out: r.stdout + r.stderr };
}

const counts = (high: number, critical: number, moderate = 0) => ({
  metadata: {
    vulnerabilities: { info: 0, low: 0, moderate, high, critical, total: high + critical + moderate },
  },
});

it('fails on a high or critical advisory, passes on lower ones', () => {
  expect(run(counts(1, 0)).code).toBe(1);
  expect(run(counts(0, 2))).toMatchObject({ code: 1 });
  const ok = run(counts(0, 0, 3));
  expect(ok.code).toBe(0);
  expect(ok.out).toMatch(/no high or critical advisories.*moderate 3/);
});

it('says loudly when the audit endpoint is unreachable, and fails then only where it is required', () => {
  const blocked = {
    message: '405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
  };
  const here = run(blocked);
  expect(here.code).toBe(0);
  expect(here.out).toMatch(/npm audit NOT CHECKED here.*405 Method Not Allowed/);
  expect(run(blocked, { AUDIT_REQUIRED: '1' }).code).toBe(1);
});
