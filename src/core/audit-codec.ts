/**
 * The audit record's binary form: what the request path writes (a few field writes and a copy of the input
 * and output tensors' bytes, instead of a JSON text), what the segment log keeps, and what the stores are
 * given. Runtime-neutral: Node's log writer, the edge's queue producer and its consumer share it.
 *
 * A chunk is a run of frames. Frame: u32 payload length, u32 CRC-32 of the payload (0 until the log writer
 * computes it), then the payload (all little-endian):
 *
 *   0  u8   format (1)          1  u8  cache (0 none, 1 l1, 2 l2, 3 mixed)     2  u16 status
 *   4  u32  rows                8  f64 time (ms since the epoch)               16 f32 latency (ms)
 *   20 16 B id (a UUIDv7; zeros until the log writer assigns one)
 *   36 strings, each u32 byte length (0xFFFFFFFF for null) then UTF-8: request_id, route, model,
 *      model_version, model_sha256, client_id, api_key
 *      then the input tensor pack, then the output tensor pack.
 *
 * Tensor pack (stored as is in the `input` and `output` columns): u8 count, then per tensor: u32 name byte
 * length, name (UTF-8), u8 dtype code (DTYPE_CODES), u8 rank, u32 per dimension, u32 data byte length, the
 * data (little-endian, as the typed array holds it).
 */
import type { AuditRecord } from './audit.js';
import type { DType, Tensor } from './tensor.js';

export const AUDIT_FORMAT = 1;
export const FRAME_HEADER = 8;
export const ID_OFFSET = 20;
export const STRINGS_OFFSET = 36;
const NULL_LENGTH = 0xffffffff;

/** Dtype codes in the tensor pack: stable, never reordered. */
export const DTYPE_CODES: readonly DType[] = [
  'float32',
  'float64',
  'int8',
  'uint8',
  'int16',
  'uint16',
  'int32',
  'int64',
  'bool',
];
const CODE_OF = new Map(DTYPE_CODES.map((t, i) => [t, i]));
const CACHE_CODES = [null, 'l1', 'l2', 'mixed'] as const;
type CacheValue = (typeof CACHE_CODES)[number];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Records written one after another into a buffer that grows as needed; `take()` hands over the frames
 * written so far (the buffer itself, so it can be transferred to another thread without a copy).
 */
export class AuditChunkWriter {
  #buf: ArrayBuffer;
  #u8: Uint8Array;
  #view: DataView;
  #o = 0;
  #count = 0;
  readonly #initial: number;

  constructor(initialBytes = 64 * 1024) {
    this.#initial = initialBytes;
    this.#buf = new ArrayBuffer(initialBytes);
    this.#u8 = new Uint8Array(this.#buf);
    this.#view = new DataView(this.#buf);
  }

  /** Bytes of frames written. */
  get bytes(): number {
    return this.#o;
  }

  /** Records written. */
  get count(): number {
    return this.#count;
  }

  #ensure(more: number) {
    const need = this.#o + more;
    if (need <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < need) size *= 2;
    const next = new ArrayBuffer(size);
    const u8 = new Uint8Array(next);
    u8.set(this.#u8.subarray(0, this.#o));
    this.#buf = next;
    this.#u8 = u8;
    this.#view = new DataView(next);
  }

  #string(s: string | null) {
    if (s === null) {
      this.#ensure(4);
      this.#view.setUint32(this.#o, NULL_LENGTH, true);
      this.#o += 4;
      return;
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit; TextEncoder writes U+FFFD for a lone surrogate.
    this.#ensure(4 + 3 * s.length);
    const u8 = this.#u8;
    const at = this.#o + 4;
    // Ids, names and digests are ASCII: copied by hand, which is cheaper than a view and a native call per
    // string (hot path: seven strings per record). Anything else goes through TextEncoder.
    let n = 0;
    for (; n < s.length; n++) {
      const c = s.charCodeAt(n);
      if (c >= 0x80) break;
      u8[at + n] = c;
    }
    if (n < s.length) n = encoder.encodeInto(s, u8.subarray(at)).written;
    this.#view.setUint32(this.#o, n, true);
    this.#o = at + n;
  }

  #tensors(tensors: Record<string, Tensor>) {
    const names = Object.keys(tensors);
    this.#ensure(1);
    this.#u8[this.#o++] = names.length;
    for (const name of names) {
      const t = tensors[name]!;
      const data = t.data;
      this.#string(name);
      this.#ensure(6 + 4 * t.dims.length + data.byteLength);
      const v = this.#view;
      this.#u8[this.#o++] = CODE_OF.get(t.type)!;
      this.#u8[this.#o++] = t.dims.length;
      for (const d of t.dims) {
        v.setUint32(this.#o, d, true);
        this.#o += 4;
      }
      v.setUint32(this.#o, data.byteLength, true);
      this.#o += 4;
      if (t.type === 'float32' && data.length <= 64) {
        // A few values (a row of features, a row's probabilities): element writes beat making a view.
        for (let k = 0; k < data.length; k++) v.setFloat32(this.#o + 4 * k, data[k] as number, true);
      } else {
        this.#u8.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), this.#o);
      }
      this.#o += data.byteLength;
    }
  }

  /** Append one record's frame. */
  write(r: AuditRecord): void {
    this.#ensure(FRAME_HEADER + STRINGS_OFFSET);
    const start = this.#o;
    const p = start + FRAME_HEADER;
    const v = this.#view;
    v.setUint32(start + 4, 0, true);
    this.#u8[p] = AUDIT_FORMAT;
    this.#u8[p + 1] = r.cache === null ? 0 : r.cache === 'l1' ? 1 : r.cache === 'l2' ? 2 : 3;
    v.setUint16(p + 2, r.status, true);
    v.setUint32(p + 4, r.rows, true);
    v.setFloat64(p + 8, r.time, true);
    v.setFloat32(p + 16, r.latency_ms, true);
    this.#u8.fill(0, p + ID_OFFSET, p + STRINGS_OFFSET);
    this.#o = p + STRINGS_OFFSET;
    this.#string(r.request_id);
    this.#string(r.route);
    this.#string(r.model);
    this.#string(r.model_version);
    this.#string(r.model_sha256);
    this.#string(r.client_id);
    this.#string(r.api_key);
    this.#tensors(r.input);
    this.#tensors(r.output);
    this.#view.setUint32(start, this.#o - p, true);
    this.#count++;
  }

  /** The frames written so far, and a fresh buffer for the next ones. */
  take(): { buffer: ArrayBuffer; bytes: number; count: number } {
    const out = { buffer: this.#buf, bytes: this.#o, count: this.#count };
    this.#buf = new ArrayBuffer(this.#initial);
    this.#u8 = new Uint8Array(this.#buf);
    this.#view = new DataView(this.#buf);
    this.#o = 0;
    this.#count = 0;
    return out;
  }
}

/** One frame's payload: a view into its bytes, and where its parts start. */
export interface FramedRecord {
  /** The payload (format byte first). */
  payload: Uint8Array;
  /** Offsets in `payload` of each string's length prefix, in the order of the layout above. */
  strings: number[];
  /** Start and end (exclusive) of the input and output tensor packs in `payload`. */
  input: [number, number];
  output: [number, number];
}

/** The string fields, in order. */
export const STRING_FIELDS = [
  'request_id',
  'route',
  'model',
  'model_version',
  'model_sha256',
  'client_id',
  'api_key',
] as const;

/** Walk a payload's layout without copying anything: where its strings and tensor packs are. */
export function frameLayout(payload: Uint8Array): FramedRecord {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload[0] !== AUDIT_FORMAT) throw new Error(`audit record format ${payload[0]} is not known`);
  let o = STRINGS_OFFSET;
  const strings: number[] = [];
  for (let i = 0; i < STRING_FIELDS.length; i++) {
    strings.push(o);
    const n = v.getUint32(o, true);
    o += 4 + (n === NULL_LENGTH ? 0 : n);
  }
  const pack = (): [number, number] => {
    const start = o;
    const count = payload[o++]!;
    for (let t = 0; t < count; t++) {
      o += 4 + v.getUint32(o, true); // name
      const rank = payload[o + 1]!;
      o += 2 + 4 * rank;
      o += 4 + v.getUint32(o, true);
    }
    if (o > payload.byteLength) throw new Error('audit record is cut short');
    return [start, o];
  };
  const input = pack();
  const output = pack();
  return { payload, strings, input, output };
}

/** A string field's UTF-8 bytes (a view), or null. */
export function stringBytes(rec: FramedRecord, field: number): Uint8Array | null {
  const at = rec.strings[field]!;
  const p = rec.payload;
  const n = new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(at, true);
  return n === NULL_LENGTH ? null : p.subarray(at + 4, at + 4 + n);
}

/** The fixed fields of a payload. */
export function fixedFields(payload: Uint8Array) {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    cache: CACHE_CODES[payload[1]!] ?? null,
    status: v.getUint16(2, true),
    rows: v.getUint32(4, true),
    time: v.getFloat64(8, true),
    latencyMs: v.getFloat32(16, true),
    id: payload.subarray(ID_OFFSET, ID_OFFSET + 16),
  };
}

/** A decoded record, as the edge consumer and tests read it. */
export interface DecodedRecord {
  id: string;
  time: number;
  latency_ms: number;
  status: number;
  rows: number;
  cache: CacheValue;
  request_id: string;
  route: string;
  model: string;
  model_version: string;
  model_sha256: string;
  client_id: string | null;
  api_key: string | null;
  /** The tensor packs, as stored. */
  input: Uint8Array;
  output: Uint8Array;
}

export function decodeRecord(payload: Uint8Array): DecodedRecord {
  const rec = frameLayout(payload);
  const f = fixedFields(payload);
  const str = (i: number) => {
    const b = stringBytes(rec, i);
    return b === null ? null : decoder.decode(b);
  };
  return {
    id: uuidText(f.id),
    time: f.time,
    latency_ms: f.latencyMs,
    status: f.status,
    rows: f.rows,
    cache: f.cache,
    request_id: str(0) ?? '',
    route: str(1) ?? '',
    model: str(2) ?? '',
    model_version: str(3) ?? '',
    model_sha256: str(4) ?? '',
    client_id: str(5),
    api_key: str(6),
    input: payload.subarray(rec.input[0], rec.input[1]),
    output: payload.subarray(rec.output[0], rec.output[1]),
  };
}

/** The frames of a chunk: each payload as a view. Stops at a frame that does not fit (a torn tail). */
export function* framesOf(chunk: Uint8Array): Generator<Uint8Array> {
  const v = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  let o = 0;
  while (o + FRAME_HEADER <= chunk.byteLength) {
    const n = v.getUint32(o, true);
    if (o + FRAME_HEADER + n > chunk.byteLength) return;
    yield chunk.subarray(o + FRAME_HEADER, o + FRAME_HEADER + n);
    o += FRAME_HEADER + n;
  }
}

/** A tensor from a pack, its data copied into an aligned typed array. */
export interface PackedTensor {
  name: string;
  type: DType;
  dims: number[];
  data: Tensor['data'];
}

const ARRAYS: Record<DType, { new (b: ArrayBuffer): Tensor['data'] }> = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  bool: Uint8Array,
};

/** Read a tensor pack (the `input` or `output` column) back into tensors. */
export function decodeTensorPack(pack: Uint8Array): PackedTensor[] {
  const v = new DataView(pack.buffer, pack.byteOffset, pack.byteLength);
  const out: PackedTensor[] = [];
  let o = 0;
  const count = pack[o++] ?? 0;
  for (let t = 0; t < count; t++) {
    const nameLength = v.getUint32(o, true);
    const name = decoder.decode(pack.subarray(o + 4, o + 4 + nameLength));
    o += 4 + nameLength;
    const type = DTYPE_CODES[pack[o]!];
    if (!type) throw new Error(`tensor ${name}: dtype code ${pack[o]} is not known`);
    const rank = pack[o + 1]!;
    o += 2;
    const dims: number[] = [];
    for (let d = 0; d < rank; d++, o += 4) dims.push(v.getUint32(o, true));
    const bytes = v.getUint32(o, true);
    o += 4;
    // A copy of its own (aligned, and not a view into a pooled Node buffer).
    const copy = new Uint8Array(bytes);
    copy.set(pack.subarray(o, o + bytes));
    o += bytes;
    out.push({ name, type, dims, data: new ARRAYS[type](copy.buffer) });
  }
  return out;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** 16 bytes as the canonical UUID text. */
export function uuidText(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += HEX[b[i]!];
  }
  return s;
}

/**
 * Write a UUIDv7 (RFC 9562) for time `ms` into `out` at `at`: 48 bits of milliseconds, then random bits. Ids
 * made in time order sort in time order, so a store's primary key grows at its end instead of at random.
 * `random` supplies 10 random bytes; with `counter` (0..4095), its 12 bits replace the first random ones
 * (RFC 9562's fixed-length counter, method 1): a writer's ids are then unique and strictly ordered in their
 * first 64 bits, which the SQLite store uses as its rowid.
 */
export function writeUuidV7(
  out: Uint8Array,
  at: number,
  ms: number,
  random: Uint8Array,
  counter?: number,
): void {
  const t = Math.max(0, Math.floor(ms));
  // 48-bit big-endian milliseconds.
  const high = Math.floor(t / 2 ** 32);
  const low = t >>> 0;
  out[at] = (high >>> 8) & 0xff;
  out[at + 1] = high & 0xff;
  out[at + 2] = (low >>> 24) & 0xff;
  out[at + 3] = (low >>> 16) & 0xff;
  out[at + 4] = (low >>> 8) & 0xff;
  out[at + 5] = low & 0xff;
  out[at + 6] = 0x70 | ((counter === undefined ? random[0]! : counter >>> 8) & 0x0f);
  out[at + 7] = counter === undefined ? random[1]! : counter & 0xff;
  out[at + 8] = 0x80 | (random[2]! & 0x3f);
  for (let i = 3; i < 10; i++) out[at + 6 + i] = random[i]!;
}

/** One record's payload, its id assigned (for a producer with no log writer: the edge's queue sink). */
export function encodeRecord(r: AuditRecord, random10: Uint8Array): Uint8Array {
  const w = new AuditChunkWriter(1024);
  w.write(r);
  const { buffer, bytes } = w.take();
  const payload = new Uint8Array(buffer, FRAME_HEADER, bytes - FRAME_HEADER);
  writeUuidV7(payload, ID_OFFSET, r.time, random10);
  return payload;
}

/** Bytes as base64 (in slices: a spread of megabytes into String.fromCharCode would overflow the stack). */
export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * A tensor pack holding a JSON value (one uint8 tensor named `$json`): how a record from before the binary
 * form (its input and output as JSON) is kept, losslessly; the read routes show it as JSON again.
 */
export function jsonPack(value: unknown): Uint8Array {
  const text = encoder.encode(JSON.stringify(value) ?? 'null');
  const name = encoder.encode(JSON_TENSOR);
  const out = new Uint8Array(1 + 4 + name.length + 2 + 4 + 4 + text.length);
  const v = new DataView(out.buffer);
  let o = 0;
  out[o++] = 1;
  v.setUint32(o, name.length, true);
  out.set(name, o + 4);
  o += 4 + name.length;
  out[o++] = CODE_OF.get('uint8')!;
  out[o++] = 1;
  v.setUint32(o, text.length, true);
  v.setUint32(o + 4, text.length, true);
  out.set(text, o + 8);
  return out;
}

export const JSON_TENSOR = '$json';

/** The JSON value a `jsonPack` holds, or undefined for an ordinary pack. */
export function packedJson(tensors: readonly PackedTensor[]): { value: unknown } | undefined {
  const t = tensors[0];
  if (tensors.length !== 1 || t!.name !== JSON_TENSOR || t!.type !== 'uint8') return undefined;
  return { value: JSON.parse(decoder.decode(t!.data as Uint8Array)) };
}
