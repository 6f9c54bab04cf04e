/** The machine's real Redis and Postgres, and helpers to get a private corner of each. */
import { spawn } from 'node:child_process';
import { createServer, Socket as NetSocket, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import pg from 'pg';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** A Redis database index of its own, emptied: fails (never skips) when Redis is not running. */
export async function freshRedisDb(db: number): Promise<string> {
  const client = new Redis(`${REDIS_URL}/${db}`, {
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    lazyConnect: true,
  });
  try {
    await client.connect();
    await client.flushdb();
  } catch (err) {
    throw new Error(`Redis at ${REDIS_URL} is required for this test (start it: see README): ${err}`);
  } finally {
    client.disconnect();
  }
  return `${REDIS_URL}/${db}`;
}

/** A Postgres database of its own, created empty: fails (never skips) when Postgres is not running. */
export async function freshDatabase(
  prefix: string,
): Promise<{ url: string; query: (sql: string) => Promise<pg.QueryResult>; drop: () => Promise<void> }> {
  const name = `${prefix}_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(`Postgres at ${PG_URL} is required for this test (start it: see README): ${err}`);
  }
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = PG_URL.replace(/\/[^/]*$/, `/${name}`);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  // An idle connection the server ends (a forced drop of the database, an admin's terminate) is reported
  // here; unheard, it would be an unhandled error that fails the whole run.
  pool.on('error', () => {});
  return {
    url,
    query: (sql) => pool.query(sql),
    async drop() {
      await pool.end();
      const a = new pg.Client({ connectionString: PG_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

/**
 * A TCP proxy in front of a service that a test can cut and restore, like a network failure, or hold: every
 * connection (new ones too) stays open but no byte passes either way, like a server or network that has
 * stopped answering without refusing anything.
 */
export async function createProxy(targetPort: number, targetHost = '127.0.0.1') {
  const sockets = new Set<Socket>();
  const pairs = new Set<[Socket, Socket]>();
  let holding = false;
  let server: Server | undefined;
  let port = 0;
  const flow = ([client, upstream]: [Socket, Socket]) => {
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const stopFlow = ([client, upstream]: [Socket, Socket]) => {
    client.unpipe(upstream);
    upstream.unpipe(client);
    client.pause();
    upstream.pause();
  };
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((client) => {
        const upstream = new NetSocket();
        const pair: [Socket, Socket] = [client, upstream];
        sockets.add(client);
        sockets.add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
          pairs.delete(pair);
        };
        client.pause();
        upstream.connect(targetPort, targetHost, () => {
          pairs.add(pair);
          if (!holding) flow(pair);
          else upstream.pause();
        });
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
      });
      server.listen(port, '127.0.0.1', () => {
        port = (server!.address() as { port: number }).port;
        resolve();
      });
    });
  await listen();
  return {
    get port() {
      return port;
    },
    /** Refuse new connections and break the open ones. */
    async cut() {
      await new Promise<void>((resolve) => {
        server!.close(() => resolve());
        for (const s of sockets) s.destroy();
        sockets.clear();
      });
    },
    restore: listen,
    /** Keep every connection open and accept new ones, but pass no bytes. */
    hold() {
      holding = true;
      for (const pair of pairs) stopFlow(pair);
    },
    /** Pass bytes again (what was held is delivered). */
    release() {
      holding = false;
      for (const pair of pairs) flow(pair);
    },
    close() {
      for (const s of sockets) s.destroy();
      server?.close();
    },
  };
}

/** A redis-server of the test's own on a spare port, which the test may kill and restart. */
export async function startRedisServer(port: number, extraArgs: string[] = []) {
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs],
    { stdio: 'ignore' },
  );
  const client = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {}); // refused while the server starts: expected
  for (let i = 0; i < 50; i++) {
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      return proc;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`redis-server did not start on port ${port}`);
}
