import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLineWriter } from './log-destination.js';

const file = () => {
  const path = join(mkdtempSync(join(tmpdir(), 'lines-')), 'out.log');
  return { path, fd: openSync(path, 'w'), read: () => readFileSync(path, 'utf8') };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the line writer', () => {
  it('gathers lines and writes them together, in order, within its gathering time', async () => {
    const out = file();
    const w = createLineWriter(out.fd, 16 * 1024 * 1024, 50);
    for (let i = 0; i < 100; i++) w.write(`line ${i}\n`);
    expect(out.read()).toBe(''); // not one write per line
    await sleep(300);
    expect(out.read()).toBe(Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join(''));
    closeSync(out.fd);
  });

  it('writes at once past 64 KiB gathered, without waiting for the timer', async () => {
    const out = file();
    const w = createLineWriter(out.fd, 16 * 1024 * 1024, 60_000);
    const line = `${'x'.repeat(1023)}\n`;
    for (let i = 0; i < 70; i++) w.write(line);
    await sleep(200);
    expect(out.read().length).toBeGreaterThanOrEqual(64 * 1024);
    w.flushSync();
    expect(out.read()).toBe(line.repeat(70));
    closeSync(out.fd);
  });

  it('holds lines under 64 KiB until its gathering time; flushSync writes them (as at exit)', async () => {
    const out = file();
    const w = createLineWriter(out.fd, 16 * 1024 * 1024, 60_000);
    w.write('a\n');
    w.write('b\n');
    await sleep(100); // many event-loop turns: no write per turn
    expect(out.read()).toBe('');
    w.flushSync();
    expect(out.read()).toBe('a\nb\n');
    closeSync(out.fd);
  });
});

describe('at exit, into a pipe whose reader is behind', () => {
  it('waits for the reader rather than dropping the last lines', async () => {
    const { spawn } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const built = fileURLToPath(new URL('../../dist/src/node/log-destination.js', import.meta.url));
    // The child touches process.stdout (as the server does), which makes a piped stdout non-blocking, writes
    // 3,000 lines (more than a pipe holds) and exits at once.
    const script = `
      import { createLineWriter } from ${JSON.stringify(built)};
      process.stdout;
      const w = createLineWriter(1);
      process.on('exit', () => w.flushSync());
      for (let n = 0; n < 3000; n++) w.write(JSON.stringify({ n, pad: 'x'.repeat(100) }) + '\\n');
      setTimeout(() => process.exit(0), 1);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child.stdout.pause();
    await sleep(500); // the child has exited, or is waiting for us
    const chunks: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stdout.resume();
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(0);
    // Every line arrives (lines of the write in flight at exit may come twice, and a copy torn: see flushSync).
    const seen = new Set<number>();
    for (const line of Buffer.concat(chunks).toString().split('\n')) {
      try {
        seen.add(JSON.parse(line).n);
      } catch {}
    }
    expect(seen.size).toBe(3000);
  });
});
