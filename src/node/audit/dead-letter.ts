import { mkdirSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Records the store refused for their data (not for being down): kept on disk, one JSON line each with
 * the store's reason, so a bad record is set aside and never blocks the records behind it.
 */
export function createDeadLetter(dir: string) {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'audit-dead-letter.jsonl');
  let rows = 0;
  let writing: Promise<unknown> = Promise.resolve();
  return {
    path,
    get rows() {
      return rows;
    },
    append(line: string, reason: string): Promise<void> {
      rows++;
      const text = `${JSON.stringify({ time: new Date().toISOString(), reason, record: line })}\n`;
      const done = writing.then(() => appendFile(path, text));
      writing = done.catch(() => {});
      return done;
    },
  };
}

export type DeadLetter = ReturnType<typeof createDeadLetter>;
