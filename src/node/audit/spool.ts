import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const ACTIVE = 'audit-spool.jsonl';
const REPLAYING = /^audit-spool-\d+-\d+\.replaying\.jsonl$/;

const countLines = (text: string) => {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
};

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
    if (f === ACTIVE || REPLAYING.test(f)) rows += countLines(readFileSync(join(dir, f), 'utf8'));
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
    /** Hand every spooled line to `insert`, oldest first, `chunk` at a time. Returns lines replayed. */
    async replay(insert: (lines: string[]) => Promise<void>, chunk = 1000): Promise<number> {
      await writing;
      let replayed = 0;
      const pending = readdirSync(dir)
        .filter((f) => REPLAYING.test(f))
        .sort();
      let activeText = '';
      try {
        activeText = await readFile(active, 'utf8');
      } catch {}
      if (activeText.length > 0) {
        const moved = `audit-spool-${Date.now()}-${seq++}.replaying.jsonl`;
        await rename(active, join(dir, moved));
        pending.push(moved);
      }
      for (const f of pending) {
        const path = join(dir, f);
        const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l.length > 0);
        for (let i = 0; i < lines.length; i += chunk) await insert(lines.slice(i, i + chunk));
        await unlink(path);
        rows -= lines.length;
        replayed += lines.length;
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
