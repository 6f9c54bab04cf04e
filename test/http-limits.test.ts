/** Slow and idle clients cannot hold the server: header and request timeouts, and a connection cap. */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/node/config.js';
import { startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer({
    HTTP_HEADERS_TIMEOUT_MS: '500',
    HTTP_REQUEST_TIMEOUT_MS: '1000',
    HTTP_MAX_CONNECTIONS: '20',
  });
});
afterAll(() => server?.close());

/** A raw connection, with what the server sent and when it closed. */
function open(): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    let received = '';
    const started = performance.now();
    const socket = connect(Number(port), '127.0.0.1');
    const closed = new Promise<number>((r) => socket.on('close', () => r(performance.now() - started)));
    socket.on('data', (d) => (received += d));
    socket.on('error', () => {});
    socket.once('connect', () => resolve({ socket, received: () => received, closed }));
    socket.once('error', reject);
  });
}

/** Send `text` a byte at a time, every `ms`, until the socket closes. */
function trickle(socket: Socket, text: string, ms: number) {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || i >= text.length) return clearInterval(timer);
    socket.write(text[i++]!);
  }, ms);
  socket.on('close', () => clearInterval(timer));
}

const predict = () =>
  fetch(`${server.url}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ features: [1, 2, 3, 4, 5, 6, 7] }),
  });

describe('HTTP limits', () => {
  it('closes a client that sends its headers a byte at a time (slowloris), and keeps serving others', async () => {
    const slow = await open();
    slow.socket.write('POST /predict HTTP/1.1\r\nHost: x\r\n');
    trickle(
      slow.socket,
      'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n',
      100,
    );
    expect((await predict()).status).toBe(200);
    const after = await slow.closed;
    // Headers get 500 ms, checked at least every 250 ms: well before the trickle's 8 s.
    expect(after).toBeLessThan(3000);
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408/);
  });

  it('closes a client whose body trickles in past the request timeout', async () => {
    const slow = await open();
    slow.socket.write(
      'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n',
    );
    trickle(slow.socket, `{"features": [1, 2, 3, 4, 5, 6, 7], "pad": "${'x'.repeat(150)}"}`, 100);
    expect(await slow.closed).toBeLessThan(4000);
    expect(slow.received()).not.toMatch(/ 200 OK/);
  });

  it('past HTTP_MAX_CONNECTIONS, new connections are closed at once; freed slots serve again', async () => {
    const held = await Promise.all(Array.from({ length: 20 }, open));
    const extra = await open();
    expect(await extra.closed).toBeLessThan(1000);
    expect(extra.received()).toBe('');
    for (const h of held) h.socket.destroy();
    await Promise.all(held.map((h) => h.closed));
    await expect
      .poll(async () => (await predict().catch(() => undefined))?.status, { timeout: 5000 })
      .toBe(200);
  });

  it('refuses settings that contradict each other, naming both sides', () => {
    expect(() => loadConfig({ HTTP_HEADERS_TIMEOUT_MS: '5000', HTTP_REQUEST_TIMEOUT_MS: '1000' })).toThrow(
      /HTTP_HEADERS_TIMEOUT_MS=5000: must not exceed HTTP_REQUEST_TIMEOUT_MS=1000/,
    );
    expect(() => loadConfig({ MAX_ROWS_PER_REQUEST: '5000', BATCH_MAX_QUEUED_ROWS: '1000' })).toThrow(
      /MAX_ROWS_PER_REQUEST=5000: must not exceed BATCH_MAX_QUEUED_ROWS=1000/,
    );
  });
});
