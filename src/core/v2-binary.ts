/**
 * The Open Inference Protocol's binary tensor data extension, as Triton serves it. A request's body is a
 * JSON header of `Inference-Header-Content-Length` bytes followed by raw tensors (little-endian, row-major,
 * no padding), one per input whose `parameters.binary_data_size` says how many bytes it takes, in input
 * order. Outputs asked for with `parameters.binary_data: true` (or request-wide `binary_data_output: true`)
 * come back the same way. BYTES elements are a 4-byte little-endian length and then the bytes.
 *
 * Every way such a body can fail to add up is a 400 naming the field: this parser sees bytes from anyone.
 */
import { invalid } from './errors.js';
import { allocate, type DType, type Tensor, type TensorArray, toV2Datatype } from './tensor.js';

export const HEADER_LENGTH = 'Inference-Header-Content-Length';

// Typed arrays use the platform's byte order; every platform Node and workerd run on is little-endian,
// which is the order the extension sends. Refuse to run anywhere else rather than answer wrongly.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('the binary tensor data extension assumes a little-endian platform');
}

/** The JSON header and the binary section after it; no binary section without the header. */
export function splitInferBody(
  body: Uint8Array,
  headerLength: string | undefined,
): { json: Uint8Array; binary: Uint8Array | undefined } {
  if (headerLength === undefined) return { json: body, binary: undefined };
  const text = headerLength.trim();
  if (!/^\d{1,15}$/.test(text)) {
    throw invalid(
      'ERR_BAD_BINARY',
      HEADER_LENGTH,
      `${HEADER_LENGTH} must be a non-negative integer number of bytes, got '${headerLength.slice(0, 40)}'`,
    );
  }
  const n = Number(text);
  if (n > body.byteLength) {
    throw invalid(
      'ERR_BAD_BINARY',
      HEADER_LENGTH,
      `${HEADER_LENGTH} is ${n} bytes but the body holds only ${body.byteLength}`,
    );
  }
  // An empty binary section is a buffer of its own: the JSON then spans the whole body, whose buffer a
  // parser on another thread may take (AppDeps.parseLargeJson), leaving views of it unusable.
  return { json: body.subarray(0, n), binary: n === body.byteLength ? new Uint8Array(0) : body.subarray(n) };
}

interface RequestInput {
  data?: unknown[] | undefined;
  datatype: string;
  shape: number[];
  parameters?: Record<string, unknown> | undefined;
}

/**
 * Each input's binary bytes, in order (undefined where the input carries JSON `data`), checked to tile the
 * binary section exactly.
 */
export function binaryInputs(
  inputs: readonly RequestInput[],
  binary: Uint8Array | undefined,
): (Uint8Array | undefined)[] {
  let offset = 0;
  const out = inputs.map((input, k) => {
    const field = `inputs[${k}].parameters.binary_data_size`;
    const size = input.parameters?.binary_data_size;
    if (size === undefined) return undefined;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw invalid('ERR_BAD_BINARY', field, `${field} must be a non-negative integer, got ${String(size)}`);
    }
    if (input.data !== undefined) {
      throw invalid(
        'ERR_BAD_BINARY',
        field,
        `inputs[${k}] has both data and ${field}: send its values one way`,
      );
    }
    if (binary === undefined) {
      throw invalid(
        'ERR_BAD_BINARY',
        field,
        `${field} is given but the request has no ${HEADER_LENGTH} header, so no binary data`,
      );
    }
    if (offset + size > binary.byteLength) {
      throw invalid(
        'ERR_BAD_BINARY',
        field,
        `${field} asks for bytes ${offset}..${offset + size} of a binary section of ${binary.byteLength}`,
      );
    }
    const raw = binary.subarray(offset, offset + size);
    offset += size;
    if (input.datatype === 'BYTES') checkBytesElements(raw, input.shape, field);
    return raw;
  });
  if (binary !== undefined && offset !== binary.byteLength) {
    throw invalid(
      'ERR_BAD_BINARY',
      HEADER_LENGTH,
      `${binary.byteLength} bytes follow the ${HEADER_LENGTH} header, but the inputs' binary_data_size add up to ${offset}`,
    );
  }
  return out;
}

/** A BYTES tensor's elements: each a 4-byte little-endian length and that many bytes, as many as the shape holds. */
function checkBytesElements(raw: Uint8Array, shape: readonly number[], field: string): void {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let count = 0;
  for (let at = 0; at < raw.byteLength; count++) {
    if (at + 4 > raw.byteLength) {
      throw invalid(
        'ERR_BAD_BINARY',
        field,
        `${field}: BYTES element ${count} has a truncated length prefix`,
      );
    }
    const length = view.getUint32(at, true);
    at += 4 + length;
    if (at > raw.byteLength) {
      throw invalid(
        'ERR_BAD_BINARY',
        field,
        `${field}: BYTES element ${count} runs past its ${length} bytes`,
      );
    }
  }
  const want = shape.reduce((a, b) => a * b, 1);
  if (count !== want) {
    throw invalid(
      'ERR_BAD_BINARY',
      field,
      `${field}: ${count} BYTES elements for shape [${shape}], which holds ${want}`,
    );
  }
}

/** A tensor's values from its binary bytes, which must be exactly shape × element size. */
export function fromBinary(type: DType, raw: Uint8Array, count: number, field: string): TensorArray {
  // The element size from an empty array of the type: nothing the size of the claim is allocated first.
  const want = count * allocate(type, 0).BYTES_PER_ELEMENT;
  if (raw.byteLength !== want) {
    throw invalid(
      'ERR_BAD_BINARY',
      `${field}.parameters.binary_data_size`,
      `${field}.parameters.binary_data_size is ${raw.byteLength} bytes; ${count} ${toV2Datatype(type)} values take ${want}`,
    );
  }
  const data = allocate(type, count);
  new Uint8Array(data.buffer).set(raw);
  return data;
}

/** An output as the binary extension returns it: the JSON part, and its bytes (a view, not a copy). */
export function encodeV2Binary(name: string, t: Tensor) {
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return {
    tensor: {
      name,
      datatype: toV2Datatype(t.type),
      shape: t.dims,
      parameters: { binary_data_size: bytes.byteLength },
    },
    bytes,
  };
}

/** A response body: the JSON header, then each binary output's bytes in order; and its headers. */
export function binaryBody(header: unknown, parts: readonly Uint8Array[]) {
  const json = new TextEncoder().encode(JSON.stringify(header));
  let size = json.byteLength;
  for (const p of parts) size += p.byteLength;
  const body = new Uint8Array(size);
  body.set(json, 0);
  let offset = json.byteLength;
  for (const p of parts) {
    body.set(p, offset);
    offset += p.byteLength;
  }
  return {
    body,
    headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: String(json.byteLength) },
  };
}
