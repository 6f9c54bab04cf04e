/**
 * A parsed JSON document sent between threads cheaply. Structured clone of a parsed 3 MB body (10,000 rows
 * of 64 numbers as nested arrays) costs the receiving thread ~58 ms to deserialize, three times what
 * JSON.parse itself costs; the same numbers in one transferred Float64Array cost nothing to receive and
 * ~2 ms to turn back into arrays. So the thread that parses replaces every large array of numbers (a
 * vector) and every large array of such arrays (a matrix, the rows of `instances`) with a hole, sends their
 * numbers packed, and the receiver fills the holes with ordinary arrays: what JSON.parse would have made.
 *
 * Written here because it is specific to this hand-off; no library packs JSON for postMessage.
 */

/** Arrays holding fewer numbers than this stay in the document (cloned as they are). */
export const PACK_MIN_NUMBERS = 256;

/** Deeper documents are not packed: the caller parses them on its own thread (as it would without us). */
export const PACK_MAX_DEPTH = 256;

/**
 * Nor are documents that leave more values than this unpacked (10,000 `{"features": {…}}` rows): cloning
 * them costs the receiver more than parsing them (~5 ms at this bound).
 */
export const PACK_MAX_LEFT = 50_000;

type Key = string | number;

export interface PackedJson {
  /** The document, each packed array replaced by null. */
  value: unknown;
  /** Where each packed array goes: keys from the root. */
  paths: Key[][];
  /** Per packed array: -1 for a vector, else its number of rows. */
  rows: number[];
  /** Every packed number, array after array, row after row. */
  numbers: Float64Array;
  /** Each vector's length and each matrix row's length, in the same order. */
  lengths: Uint32Array;
}

/** A matrix's number count when `a` is an array of arrays (of anything), else -1. */
function matrixSize(a: readonly unknown[]): number {
  if (a.length === 0) return -1;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    const row = a[i];
    if (!Array.isArray(row)) return -1;
    n += row.length;
  }
  return n;
}

/**
 * Copy `v`'s numbers into `out` from `at`; false (part copied) at its first value that is not a number.
 * Checking and copying in one pass: two passes cost twice as much on 640,000 numbers.
 */
function copyNumbers(v: readonly unknown[], out: Float64Array, at: number): boolean {
  for (let j = 0; j < v.length; j++) {
    const x = v[j];
    if (typeof x !== 'number') return false;
    out[at + j] = x;
  }
  return true;
}

/**
 * Pack a parsed document: undefined when it holds nothing worth packing; 'inline' when it is better parsed
 * where it is needed, being nested deeper than PACK_MAX_DEPTH (a structured clone of it could overflow the
 * stack), leaving more than PACK_MAX_LEFT values unpacked, or holding a `__proto__` key.
 */
export function packJson(doc: unknown): PackedJson | 'inline' | undefined {
  const paths: Key[][] = [];
  const rows: number[] = [];
  const pieces: Float64Array[] = [];
  const lengths: number[] = [];
  let left = 0;
  /** `node`'s numbers packed (a vector, or a matrix when `rows`), or undefined if it holds anything else. */
  const pack = (node: unknown[], matrix: boolean, size: number) => {
    const piece = new Float64Array(size);
    if (!matrix) return copyNumbers(node, piece, 0) ? piece : undefined;
    let at = 0;
    for (let r = 0; r < node.length; r++) {
      const row = node[r] as unknown[];
      if (!copyNumbers(row, piece, at)) return undefined;
      at += row.length;
    }
    return piece;
  };
  // Iterative: a hostile document may nest 100,000 deep.
  const stack: { node: unknown; path: Key[] }[] = [{ node: doc, path: [] }];
  while (stack.length > 0) {
    const { node, path } = stack.pop()!;
    if (path.length > PACK_MAX_DEPTH) return 'inline';
    if (Array.isArray(node)) {
      const size = matrixSize(node);
      const matrix = size >= 0;
      const count = matrix ? size : node.length;
      const piece = count >= PACK_MIN_NUMBERS ? pack(node, matrix, count) : undefined;
      if (piece) {
        paths.push(path);
        pieces.push(piece);
        if (matrix) {
          rows.push(node.length);
          for (const row of node as unknown[][]) lengths.push(row.length);
        } else {
          rows.push(-1);
          lengths.push(node.length);
        }
        continue;
      }
      left += node.length;
      if (left > PACK_MAX_LEFT) return 'inline';
      for (let i = 0; i < node.length; i++) {
        const child = node[i];
        if (child !== null && typeof child === 'object') stack.push({ node: child, path: [...path, i] });
      }
    } else if (node !== null && typeof node === 'object') {
      for (const key in node) {
        if (++left > PACK_MAX_LEFT) return 'inline';
        // A document with a __proto__ key is parsed where it is used: a hole under it would be filled by
        // assignment (setting the object's prototype), and a subtree left unwalked could be nested too deep
        // for the clone back (found in review: 5,000 deep, the clone was never received and the task hung).
        if (key === '__proto__') return 'inline';
        const child = (node as Record<string, unknown>)[key];
        if (child !== null && typeof child === 'object') stack.push({ node: child, path: [...path, key] });
      }
    }
  }
  if (pieces.length === 0) return undefined;
  let numbers = pieces[0]!;
  if (pieces.length > 1) {
    numbers = new Float64Array(pieces.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of pieces) {
      numbers.set(p, at);
      at += p.length;
    }
  }
  // Holes last: a path may pass through an array that is itself never packed, never through a packed one.
  let value = doc;
  for (const path of paths) {
    if (path.length === 0) value = null;
    else (parentOf(value, path) as Record<Key, unknown>)[path[path.length - 1]!] = null;
  }
  return { value, paths, rows, numbers, lengths: Uint32Array.from(lengths) };
}

const parentOf = (root: unknown, path: readonly Key[]) => {
  let node = root;
  for (let i = 0; i < path.length - 1; i++) node = (node as Record<Key, unknown>)[path[i]!];
  return node;
};

/** The document packJson was given, with ordinary arrays where it packed them. */
export function unpackJson(packed: PackedJson): unknown {
  const { numbers, lengths } = packed;
  let k = 0;
  let l = 0;
  // `new Array(n)` filled in order: the fastest way to build these here (Array.from(subarray) is ~20×
  // slower on Node 20).
  const vector = () => {
    const n = lengths[l++]!;
    const out = new Array<number>(n);
    for (let j = 0; j < n; j++) out[j] = numbers[k++]!;
    return out;
  };
  let value = packed.value;
  for (let p = 0; p < packed.paths.length; p++) {
    const count = packed.rows[p]!;
    let array: unknown[];
    if (count === -1) array = vector();
    else {
      array = new Array<unknown>(count);
      for (let r = 0; r < count; r++) array[r] = vector();
    }
    const path = packed.paths[p]!;
    if (path.length === 0) value = array;
    else (parentOf(value, path) as Record<Key, unknown>)[path[path.length - 1]!] = array;
  }
  return value;
}
