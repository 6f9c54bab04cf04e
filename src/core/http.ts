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
  // A key the schema does not take is named as the field, so the client sees which one.
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  const field = fieldName(path);
  return new ServeError('ERR_VALIDATION', field ? `${field}: ${issue.message}` : issue.message, {
    field: field || undefined,
  });
}

/** Read a body stream to its end, refusing it once it passes `max` bytes. */
async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  tooLarge: () => Error,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return all;
}

type Compression = 'gzip' | 'deflate';

/** Content-Encodings a request body may carry (Open Inference Protocol routes): what Triton's client sends. */
const ENCODINGS: Record<string, Compression | null> = {
  identity: null,
  gzip: 'gzip',
  'x-gzip': 'gzip',
  // HTTP's "deflate" is the zlib format, as DecompressionStream's 'deflate' (and Python's zlib.compress).
  deflate: 'deflate',
};

function contentEncoding(c: Context): Compression | null {
  const header = c.req.header('content-encoding');
  if (header === undefined || header.trim() === '') return null;
  const format = ENCODINGS[header.trim().toLowerCase()];
  if (format === undefined) {
    throw new ServeError(
      'ERR_CONTENT_ENCODING',
      `content-encoding: ${header} is not served; send gzip, deflate or identity`,
      { field: 'content-encoding' },
    );
  }
  return format;
}

/**
 * Decompress a body read whole, stopping as soon as the output passes `max` bytes: a few kilobytes of gzip
 * can claim gigabytes, and only `max` of them (plus one chunk) are ever held.
 */
async function inflate(
  compressed: Uint8Array,
  format: Compression,
  max: number,
  tooLarge: () => Error,
): Promise<Uint8Array> {
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(compressed);
      controller.close();
    },
  });
  try {
    return await readLimited(source.pipeThrough(new DecompressionStream(format)), max, tooLarge);
  } catch (err) {
    if (err instanceof ServeError) throw err;
    throw new ServeError(
      'ERR_BAD_ENCODING',
      `content-encoding: the body is not valid ${format} data (${(err as Error).message})`,
      { field: 'content-encoding', cause: err },
    );
  }
}

/** What an Open Inference Protocol body may be labelled: nothing (Triton's client), JSON, or octet-stream. */
const V2_TYPE = /^application\/(([a-z.+-]+\+)?json|octet-stream)\s*(;|$)/i;

/**
 * Body readers for POSTs: Content-Type, then size (declared or streamed), then JSON, then the route's
 * schema — the same zod object its OpenAPI operation publishes.
 */
export function createBodyReader(
  maxBodyBytes: number,
  /** Awaited before a large body's costly steps; by default, one turn of the event loop. */
  giveWay: (c?: Context) => Promise<void> = yieldTurn,
  /** Parses a large body elsewhere (see AppDeps.parseLargeJson); absent = here. */
  parseLarge?: (bytes: Uint8Array) => Promise<unknown>,
) {
  const tooLarge = () => bodyTooLarge(maxBodyBytes);

  /** The body's bytes as sent, at most maxBodyBytes. */
  const readRaw = async (c: Context): Promise<Uint8Array> => {
    const declared = c.req.header('content-length');
    if (declared !== undefined && Number(declared) > maxBodyBytes) throw tooLarge();
    try {
      return declared !== undefined
        ? new Uint8Array(await c.req.arrayBuffer())
        : await readLimited(c.req.raw.body, maxBodyBytes, tooLarge);
    } catch (err) {
      if (err instanceof ServeError) throw err;
      throw new ServeError('ERR_CLIENT_CLOSED', 'the client closed the connection before its body arrived', {
        cause: err,
      });
    }
  };

  /** Bytes as JSON checked against `schema`. */
  const parseJson = async <T extends z.ZodType>(
    bytes: Uint8Array,
    schema: T,
    c?: Context,
  ): Promise<z.output<T>> => {
    // A large body's parse holds the event loop for tens of ms: it goes to parseLarge where there is one;
    // else other requests' waiting callbacks run first. Either way they run again before the schema walks
    // the result, so small requests are not held behind both.
    const large = bytes.byteLength >= YIELD_ABOVE_BYTES;
    if (large && !parseLarge) await giveWay(c);
    let raw: unknown;
    try {
      raw = large && parseLarge ? await parseLarge(bytes) : JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      throw new ServeError('ERR_BAD_JSON', `malformed JSON body: ${err.message}`, {
        field: 'body',
      });
    }
    if (large) await giveWay(c);
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw validationError(parsed.error);
    return parsed.data;
  };

  /**
   * An Open Inference Protocol body, as Triton serves them: no Content-Type is JSON (Triton's own client
   * sends none), octet-stream is a JSON header with binary tensors after it; a gzip or deflate
   * Content-Encoding is undone, and the limit holds for the decompressed bytes too.
   */
  const readV2Body = async (c: Context): Promise<Uint8Array> => {
    const type = c.req.header('content-type');
    if (type && !V2_TYPE.test(type)) {
      throw new ServeError(
        'ERR_CONTENT_TYPE',
        `content-type: must be application/json or application/octet-stream (or none), got ${type}`,
        { field: 'content-type' },
      );
    }
    const format = contentEncoding(c);
    const raw = await readRaw(c);
    return format ? inflate(raw, format, maxBodyBytes, tooLarge) : raw;
  };

  return {
    parseJson,
    readV2Body,

    /** A JSON body: Content-Type must say JSON. */
    async readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T>> {
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
      return parseJson(await readRaw(c), schema, c);
    },

    /** An Open Inference Protocol body that may be empty (Triton's client sends none to some routes). */
    async readOptionalV2Json<T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T> | undefined> {
      const bytes = await readV2Body(c);
      return bytes.byteLength === 0 ? undefined : parseJson(bytes, schema, c);
    },
  };
}

/** Bodies at least this long give way to other requests between their expensive steps. */
const YIELD_ABOVE_BYTES = 64 * 1024;

/** Resolve after the I/O callbacks already waiting have run (setImmediate where there is one). */
export const yieldTurn: () => Promise<void> =
  typeof globalThis.setImmediate === 'function'
    ? () => new Promise((resolve) => setImmediate(resolve))
    : () => new Promise((resolve) => setTimeout(resolve, 0));

export type BodyReader = ReturnType<typeof createBodyReader>;
