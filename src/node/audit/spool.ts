import { closeSync, mkdirSync, openSync, readdirSync, readSync } from 'node:fs';
import { appendFile, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

const ACTIVE = 'audit-spool.jsonl';
const REPLAYING = /^audit-spool-\d+-\d+\.replaying\.jsonl$/;

/** Lines in a file, read a megabyte at a time (a spool of large records may be hundreds of MB). */
function countLines(path: string): number {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let n = 0;
  try {
    for (;;) {
      const read = readSync(fd, buf, 0, buf.length, null);
      if (read === 0) return n;
      for (let i = buf.indexOf(10); i !== -1 && i < read; i = buf.indexOf(10, i + 1)) n++;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * An append-only file of audit records (one JSON per line) for when the database cannot take them. Replay
 * moves the file aside first, so records spooled meanwhile start a new file; a replayed file is deleted
 * only once every line of it is in the database, and a crash mid-replay replays it again next time
 * (inserts skip records already there).
 */
export function createSpool(dir: string) {
  mkdirSync(dir, { recursive: true });
  const active = join(dir, ACTIVE);
  let rows = 0;
  for (const f of readdirSync(dir)) {
    if (f === ACTIVE || REPLAYING.test(f)) rows += countLines(join(dir, f));
  }
  let writing: Promise<unknown> = Promise.resolve();
  let seq = 0;

  return {
    dir,
    get rows() {
      return rows;
    },
    /** Append lines in order; resolves once they are in the file. */
    append(lines: readonly string[]): Promise<void> {
      if (lines.length === 0) return writing.then(() => {});
      rows += lines.length;
      const text = `${lines.join('\n')}\n`;
      const done = writing.then(() => appendFile(active, text));
      writing = done.catch(() => {});
      return done;
    },
    /**
     * Hand every spooled line to `insert`, oldest first, at most `chunk` lines and `chunkBytes` bytes at a
     * time (at least one line), read as a stream: a spool of large records (hundreds of MB) is never held in
     * memory whole, nor sent as one statement. Returns lines replayed.
     */
    async replay(
      insert: (lines: string[]) => Promise<void>,
      chunk = 1000,
      chunkBytes = 8 * 1024 * 1024,
    ): Promise<number> {
      await writing;
      let replayed = 0;
      const pending = readdirSync(dir)
        .filter((f) => REPLAYING.test(f))
        .sort();
      let hasActive = false;
      try {
        hasActive = (await stat(active)).size > 0;
      } catch {}
      if (hasActive) {
        const moved = `audit-spool-${Date.now()}-${seq++}.replaying.jsonl`;
        await rename(active, join(dir, moved));
        pending.push(moved);
      }
      for (const f of pending) {
        const path = join(dir, f);
        let lines: string[] = [];
        let bytes = 0;
        let inFile = 0;
        const send = async () => {
          if (lines.length === 0) return;
          const batch = lines;
          lines = [];
          bytes = 0;
          await insert(batch);
        };
        // Read a megabyte at a time and wait for each insert before reading on (readline's async iterator
        // reads ahead without bound, which held a 560 MB spool in memory).
        const fh = await open(path, 'r');
        try {
          const buf = Buffer.allocUnsafe(1024 * 1024);
          const decoder = new StringDecoder('utf8');
          let partial = '';
          for (;;) {
            const { bytesRead } = await fh.read(buf, 0, buf.length, null);
            if (bytesRead === 0) break;
            const text = partial + decoder.write(buf.subarray(0, bytesRead));
            let start = 0;
            for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
              const line = text.slice(start, nl);
              start = nl + 1;
              if (line.length === 0) continue;
              if (lines.length > 0 && (lines.length >= chunk || bytes + line.length > chunkBytes))
                await send();
              lines.push(line);
              bytes += line.length;
              inFile++;
            }
            partial = text.slice(start);
          }
          const last = partial + decoder.end();
          if (last.length > 0) {
            lines.push(last);
            inFile++;
          }
        } finally {
          await fh.close();
        }
        await send();
        await unlink(path);
        rows -= inFile;
        replayed += inFile;
      }
      return replayed;
    },
    /** Wait for appends and flush them to disk. */
    async sync() {
      await writing;
      try {
        const fh = await open(active, 'r');
        await fh.sync();
        await fh.close();
      } catch {}
    },
  };
}

export type Spool = ReturnType<typeof createSpool>;
