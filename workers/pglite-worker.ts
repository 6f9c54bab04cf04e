/** Owns the embedded PGlite database, off the main thread. */
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import { INSERT_SQL, SCHEMA_SQL } from '../src/core/audit-sql.js';
import type { PgliteReply, PgliteRequest } from './pglite-protocol.js';

const { dir } = workerData as { dir: string };
let db: PGlite | undefined;

parentPort!.on('message', async (req: PgliteRequest) => {
  const reply: PgliteReply = { id: req.id };
  try {
    if (req.op === 'init') {
      db ??= await PGlite.create(dir);
      await db.exec(SCHEMA_SQL);
    } else if (req.op === 'insert') {
      const res = await db!.query(INSERT_SQL, [req.json]);
      reply.count = res.affectedRows ?? 0;
    } else if (req.op === 'query') {
      reply.rows = (await db!.query(req.sql!, req.params)).rows;
    } else if (req.op === 'close') {
      await db?.close();
      db = undefined;
    }
  } catch (err) {
    reply.error = String((err as Error)?.message ?? err);
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string') reply.code = code;
  }
  parentPort!.postMessage(reply);
});
