/**
 * Open Inference Protocol answers, compressed as the client offers (Accept-Encoding: gzip or deflate, what
 * Triton's client sends for response_compression_algorithm) when they are large enough to be worth it.
 * Decided where the answer is made, with its size in hand: a middleware that measures finished responses
 * would read every body back and move each answer off @hono/node-server's lightweight response path.
 */
import type { Context } from 'hono';
import { parseAccept } from 'hono/utils/accept';

/** Smaller answers go as they are: compressing them costs more CPU than the bytes it saves. */
export const COMPRESS_ABOVE_BYTES = 1024;

const ENCODINGS = ['gzip', 'deflate'] as const;
type Encoding = (typeof ENCODINGS)[number];

/** The encoding the client prefers among those served (gzip first on a tie), or none. */
export function acceptedEncoding(header: string | undefined): Encoding | undefined {
  if (!header) return undefined;
  const accepts = parseAccept(header);
  const wildcard = accepts.find((a) => a.type === '*')?.q;
  let best: { encoding: Encoding; q: number } | undefined;
  for (const encoding of ENCODINGS) {
    const q = accepts.find((a) => a.type.toLowerCase() === encoding)?.q ?? wildcard ?? 0;
    if (q > 0 && (!best || q > best.q)) best = { encoding, q };
  }
  return best?.encoding;
}

/** Send `body` with `headers`, compressed when the client offers an encoding and it is large enough. */
export function sendCompressible(
  c: Context,
  body: string | Uint8Array,
  headers: Record<string, string>,
): Response {
  // String length stands in for bytes: the threshold is a judgement, not a limit. A small answer is the
  // same whatever the client offers, so it goes as it is, with no Vary.
  const size = typeof body === 'string' ? body.length : body.byteLength;
  if (size < COMPRESS_ABOVE_BYTES) return c.body(body as string, 200, headers);
  const all = { ...headers, vary: 'Accept-Encoding' };
  const encoding = acceptedEncoding(c.req.header('accept-encoding'));
  if (!encoding) return c.body(body as string, 200, all);
  const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new CompressionStream(encoding));
  return c.body(stream, 200, { ...all, 'content-encoding': encoding });
}

/** A JSON answer on a v2 route (see sendCompressible). */
export const jsonCompressible = (c: Context, value: unknown): Response =>
  sendCompressible(c, JSON.stringify(value), { 'content-type': 'application/json' });
