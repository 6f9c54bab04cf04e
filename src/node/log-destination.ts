/**
 * Where the process's log lines go: a file descriptor (stdout), written by one asynchronous write per 10 ms
 * (or 64 KiB) of lines. pino's own asynchronous destination (sonic-boom) cost about 3–5 µs of CPU
 * per line more than this (a microbenchmark of 60,000 access lines on this machine), where every request has
 * an access line; appending a line to a string costs a fraction of a µs, and lines go out together (a write
 * per event-loop turn still cost 2.5 µs a line under load at 50 connections, in a CPU profile).
 *
 * The event loop never waits for the descriptor: while a write is in flight, lines gather for the next one.
 * If the reader stops reading (a full pipe) and more than `maxPendingBytes` gather, further lines are dropped
 * and counted, and a line saying how many follows once writing resumes. At exit, `flushSync` writes what is
 * left, the write in flight included (as sonic-boom does: lines may appear twice, or torn if the reader is
 * behind, never not at all), waiting up to 2 s for a reader that is behind.
 */
import { write, writeSync } from 'node:fs';

const GATHER_BYTES = 64 * 1024;
/** At exit, the longest wait for a reader that is behind. */
const SYNC_WAIT_MS = 2000;
/** Something to Atomics.wait on: a synchronous pause without spinning. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

export interface LineWriter {
  write(line: string): void;
  flushSync(): void;
}

export function createLineWriter(
  fd = 1,
  maxPendingBytes = 16 * 1024 * 1024,
  /**
   * Lines gather this long before a write (or until 64 KiB have): one write call costs about what 40 lines'
   * text does (libuv's request and its callback), and at 50 connections a turn holds only a few lines.
   */
  gatherMs = 10,
): LineWriter {
  let pending = '';
  /** The bytes of the write in flight, until it completes. */
  let inFlight: Buffer | undefined;
  let writing = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let dropped = 0;

  const droppedLine = () => {
    const line = `${JSON.stringify({ level: 'warn', time: new Date().toISOString(), dropped, msg: 'log lines dropped: the output was not read' })}\n`;
    dropped = 0;
    return line;
  };

  const writeOut = (buf: Buffer) => {
    write(fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        // A non-blocking descriptor that is full: try again shortly. Anything else (a closed descriptor):
        // the lines are lost, as they would be for any writer.
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          setTimeout(() => writeOut(buf), 5);
          return;
        }
        inFlight = undefined;
        writing = false;
        return;
      }
      if (n < buf.length) {
        inFlight = buf.subarray(n);
        writeOut(inFlight);
        return;
      }
      inFlight = undefined;
      writing = false;
      if (pending !== '' || dropped > 0) flush();
    });
  };

  const flush = () => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (writing) return;
    if (dropped > 0) pending += droppedLine();
    if (pending === '') return;
    const buf = Buffer.from(pending);
    pending = '';
    writing = true;
    inFlight = buf;
    writeOut(buf);
  };

  return {
    write(line: string) {
      if (pending.length > maxPendingBytes) {
        dropped++;
        return;
      }
      pending += line;
      if (writing) return;
      if (pending.length >= GATHER_BYTES) flush();
      else if (timer === undefined) {
        timer = setTimeout(flush, gatherMs);
        timer.unref();
      }
    },
    flushSync() {
      if (dropped > 0) pending += droppedLine();
      // The write in flight may have written part of its bytes, or may still be writing them: they go again
      // whole. Lines may then appear twice, and when the reader is behind, the two writes can interleave and
      // tear a line or two (a write to a pipe is atomic only up to 4 KiB); nothing is lost.
      const parts = [inFlight, pending === '' ? undefined : Buffer.from(pending)];
      inFlight = undefined;
      pending = '';
      // Node makes a pipe on stdout non-blocking: a reader that is behind answers EAGAIN. Wait for it, a
      // little at a time, up to SYNC_WAIT_MS in all, rather than drop the last lines (the shutdown's among
      // them); a reader gone (EPIPE) or a descriptor closed loses them.
      const until = Date.now() + SYNC_WAIT_MS;
      for (const buf of parts) {
        if (!buf) continue;
        let off = 0;
        while (off < buf.length) {
          try {
            off += writeSync(fd, buf, off);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() >= until) return;
            Atomics.wait(PAUSE, 0, 0, 5);
          }
        }
      }
    },
  };
}
