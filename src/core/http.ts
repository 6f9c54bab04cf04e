/** Reading request bodies: type, size and JSON, checked inline (on the hot path every layer costs). */
import type { Context } from 'hono';
import type { z } from 'zod';
import { ServeError } from './errors.js';

const JSON_TYPE = /^application\/([a-z.+-]+\+)?json\s*(;|$)/i;

/** 413 for a body over the limit (the app's error handler also closes the connection: the rest is unread). */
export const bodyTooLarge = (maxBodyBytes: number) =>
  new ServeError('ERR_BODY_TOO_LARGE', `body is over ${maxBodyBytes} bytes`, { field: 'body' });

/** The X-Timeout-Ms a client sent (ms), undefined when it sent none; anything but a positive number is a 422. */
export function timeoutHeader(c: Context): number | undefined {
  const header = c.req.header('x-timeout-ms');
  if (header === undefined) return undefined;
  const ms = Number(header);
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new ServeError('ERR_VALIDATION', 'X-Timeout-Ms must be a positive number of milliseconds', {
      field: 'x-timeout-ms',
    });
  }
  return ms;
}

/** Zod's issue path as a field name: ['requests', 3, 'features'] → requests[3].features. */
export function fieldName(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)),
    '',
  );
}

/** The first issue of a failed parse as a ServeError naming its field. */
export function validationError(error: z.ZodError): ServeError {
  const issue = error.issues[0]!;
  const field = fieldName(issue.path);
  return new ServeError('ERR_VALIDATION', field ? `${field}: ${issue.message}` : issue.message, {
    field: field || undefined,
  });
}

/** Read a body stream with no declared length, refusing it once it passes `max` bytes. */
async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  tooLarge: () => Error,
): Promise<string> {
  if (!body) return '';
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
}

/**
 * A body reader for JSON POSTs: Content-Type, then size (declared or streamed), then JSON, then the route's
 * schema — the same zod object its OpenAPI operation publishes.
 */
export function createJsonReader(
  maxBodyBytes: number,
  /** Awaited before a large body's costly steps; by default, one turn of the event loop. */
  giveWay: () => Promise<void> = yieldTurn,
) {
  const tooLarge = () => bodyTooLarge(maxBodyBytes);

  return async function readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T>> {
    const type = c.req.header('content-type');
    if (!type || !JSON_TYPE.test(type)) {
      throw new ServeError(
        'ERR_CONTENT_TYPE',
        `Content-Type must be application/json, got ${type ?? 'none'}`,
        {
          field: 'content-type',
        },
      );
    }
    const declared = c.req.header('content-length');
    if (declared !== undefined && Number(declared) > maxBodyBytes) throw tooLarge();
    let text: string;
    try {
      text =
        declared !== undefined
          ? await c.req.text()
          : await readLimited(c.req.raw.body, maxBodyBytes, tooLarge);
    } catch (err) {
      if (err instanceof ServeError) throw err;
      throw new ServeError('ERR_CLIENT_CLOSED', 'the client closed the connection before its body arrived', {
        cause: err,
      });
    }
    // A large body's parse holds the event loop for tens of ms: let other requests' waiting callbacks run
    // first, and again before the schema walks the result, so small requests are not held behind both.
    const large = text.length >= YIELD_ABOVE_CHARS;
    if (large) await giveWay();
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ServeError('ERR_BAD_JSON', `malformed JSON body: ${(err as Error).message}`, {
        field: 'body',
      });
    }
    if (large) await giveWay();
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw validationError(parsed.error);
    return parsed.data;
  };
}

/** Bodies at least this long give way to other requests between their expensive steps. */
const YIELD_ABOVE_CHARS = 64 * 1024;

/** Resolve after the I/O callbacks already waiting have run (setImmediate where there is one). */
export const yieldTurn: () => Promise<void> =
  typeof globalThis.setImmediate === 'function'
    ? () => new Promise((resolve) => setImmediate(resolve))
    : () => new Promise((resolve) => setTimeout(resolve, 0));

export type JsonReader = ReturnType<typeof createJsonReader>;
