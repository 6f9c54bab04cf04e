/**
 * Piscina worker: parses large request bodies so the main thread does not. A 3 MB body held the main
 * thread ~30 ms (UTF-8 decode, JSON.parse) plus the garbage collection of what it made, and every small
 * request behind it waited that long. The document comes back packed (see json-pack.ts).
 */
import { packJson } from '../src/node/json-pack.js';
import { withTransfer } from './protocol.js';

export type ParseReply =
  /** The document as it is (nothing worth packing). */
  | { kind: 'plain'; value: unknown }
  | { kind: 'packed'; packed: import('../src/node/json-pack.js').PackedJson }
  /** JSON.parse's own message, for the same 400 the main thread gives. */
  | { kind: 'invalid'; message: string }
  /** Cheaper (or only possible) to parse where it is used: its bytes, given back for the caller to parse. */
  | { kind: 'inline'; bytes: Uint8Array };

const decoder = new TextDecoder();

export default function parse(bytes: Uint8Array): ParseReply {
  let doc: unknown;
  try {
    doc = JSON.parse(decoder.decode(bytes));
  } catch (err) {
    return { kind: 'invalid', message: (err as Error).message };
  }
  if (doc === null || typeof doc !== 'object') return { kind: 'plain', value: doc };
  const packed = packJson(doc);
  if (packed === 'inline') {
    return withTransfer<ParseReply>({ kind: 'inline', bytes }, [bytes.buffer as ArrayBuffer]);
  }
  if (packed === undefined) return { kind: 'plain', value: doc };
  return withTransfer<ParseReply>({ kind: 'packed', packed }, [
    packed.numbers.buffer as ArrayBuffer,
    packed.lengths.buffer as ArrayBuffer,
  ]);
}
