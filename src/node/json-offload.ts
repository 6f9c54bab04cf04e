/**
 * Large request bodies parsed off the main thread (see workers/json-parser.ts): the main thread only hands
 * over the bytes and fills the packed document's holes (~2 ms for 10,000 × 64 numbers, against ~30 ms of
 * decoding and parsing plus the garbage it left).
 */
import { Piscina } from 'piscina';
import type { ParseReply } from '../../workers/json-parser.js';
import { unpackJson } from './json-pack.js';
import { compiledWorker } from './worker-file.js';

export interface JsonParser {
  /**
   * The document the bytes hold (what JSON.parse of their UTF-8 text gives); a SyntaxError with
   * JSON.parse's message when they hold none. Takes the bytes: when they are a whole buffer it is moved to
   * the parsing thread, and the caller must not read them again.
   */
  parse(bytes: Uint8Array): Promise<unknown>;
  close(): Promise<void>;
}

/** Far more than the largest body takes (~50 ms for 4 MiB). */
const PARSE_TIMEOUT_MS = 10_000;

export function createJsonParser(options: { threads: number; workerFile?: string }): JsonParser {
  const pool = new Piscina<Uint8Array, ParseReply>({
    filename: options.workerFile ?? compiledWorker('json-parser.js'),
    minThreads: options.threads,
    maxThreads: options.threads,
    idleTimeout: Number.MAX_SAFE_INTEGER,
    // Bounded by admission control (every caller is a prediction request in progress), not here.
    maxQueue: Number.POSITIVE_INFINITY,
    recordTiming: false,
  });
  const decoder = new TextDecoder();
  return {
    async parse(bytes) {
      const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
      // A backstop: a parse that never comes back (it should not) ends its thread, not the request's wait.
      const reply = await pool.run(Piscina.move(own ? bytes : bytes.slice()) as Uint8Array, {
        signal: AbortSignal.timeout(PARSE_TIMEOUT_MS),
      });
      switch (reply.kind) {
        case 'plain':
          return reply.value;
        case 'packed':
          return unpackJson(reply.packed);
        case 'invalid':
          throw new SyntaxError(reply.message);
        case 'inline':
          return JSON.parse(decoder.decode(reply.bytes));
      }
    },
    close: () => pool.destroy(),
  };
}
