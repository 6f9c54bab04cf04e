/** Tensors as they cross every boundary in the server: HTTP ↔ batcher ↔ backend ↔ worker thread. */
export type DType =
  | 'float32'
  | 'float64'
  | 'int8'
  | 'uint8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'int64'
  | 'bool';

export type TensorArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | BigInt64Array;

export interface Tensor {
  type: DType;
  dims: number[];
  data: TensorArray;
}

interface DTypeInfo {
  /** Open Inference Protocol v2 datatype name. */
  v2: string;
  create: (length: number) => TensorArray;
}

const DTYPES: Record<DType, DTypeInfo> = {
  float32: { v2: 'FP32', create: (n) => new Float32Array(n) },
  float64: { v2: 'FP64', create: (n) => new Float64Array(n) },
  int8: { v2: 'INT8', create: (n) => new Int8Array(n) },
  uint8: { v2: 'UINT8', create: (n) => new Uint8Array(n) },
  int16: { v2: 'INT16', create: (n) => new Int16Array(n) },
  uint16: { v2: 'UINT16', create: (n) => new Uint16Array(n) },
  int32: { v2: 'INT32', create: (n) => new Int32Array(n) },
  int64: { v2: 'INT64', create: (n) => new BigInt64Array(n) },
  bool: { v2: 'BOOL', create: (n) => new Uint8Array(n) },
};

const FROM_V2 = new Map(Object.entries(DTYPES).map(([dtype, info]) => [info.v2, dtype as DType]));

export const isDType = (value: string): value is DType => value in DTYPES;
export const toV2Datatype = (type: DType): string => DTYPES[type].v2;
export const fromV2Datatype = (datatype: string): DType | undefined => FROM_V2.get(datatype);
export const allocate = (type: DType, length: number): TensorArray => DTYPES[type].create(length);

export const elementCount = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** Elements in one row: the product of every dimension after the first. */
export const rowSize = (dims: readonly number[]): number => elementCount(dims.slice(1));

/** Stack tensors of the same type and row shape along the first dimension. */
export function concatRows(parts: readonly Tensor[]): Tensor {
  const first = parts[0]!;
  if (parts.length === 1) return first;
  const rows = parts.reduce((n, p) => n + p.dims[0]!, 0);
  const data = allocate(first.type, rows * rowSize(first.dims));
  let offset = 0;
  for (const p of parts) {
    (data as Float32Array).set(p.data as Float32Array, offset);
    offset += p.data.length;
  }
  return { type: first.type, dims: [rows, ...first.dims.slice(1)], data };
}

/** Rows [start, end) of a tensor, copied into a buffer of their own (so it can be transferred alone). */
export function sliceRows(t: Tensor, start: number, end: number): Tensor {
  const per = rowSize(t.dims);
  return {
    type: t.type,
    dims: [end - start, ...t.dims.slice(1)],
    data: t.data.slice(start * per, end * per),
  };
}
