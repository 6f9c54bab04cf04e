/** The Worker builds with wrangler, and fits Cloudflare's paid-plan limit of 10 MB gzipped. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect, it } from 'vitest';

const EDGE = join(import.meta.dirname, '..', 'edge');
const LIMIT = 10 * 1024 * 1024;

it('wrangler deploy --dry-run builds the Worker under 10 MB gzipped', () => {
  const out = mkdtempSync(join(tmpdir(), 'edge-build-'));
  try {
    execFileSync(
      join(import.meta.dirname, '..', 'node_modules', '.bin', 'wrangler'),
      ['deploy', '--dry-run', '--outdir', out],
      {
        cwd: EDGE,
        stdio: 'pipe',
        env: { ...process.env, WRANGLER_SEND_METRICS: 'false' },
      },
    );
    const files = readdirSync(out).filter((f) => !f.endsWith('.map') && f !== 'README.md');
    expect(files).toContain('index.js');
    expect(files.some((f) => f.endsWith('.wasm'))).toBe(true);
    expect(files.filter((f) => f.endsWith('.onnx'))).toHaveLength(6);
    const gzipped = files.reduce((n, f) => n + gzipSync(readFileSync(join(out, f))).length, 0);
    expect(gzipped).toBeLessThan(LIMIT);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}, 120_000);
