/** Open Inference Protocol v2 (KServe / Triton) JSON tensors ↔ server tensors. */
import { invalid, ServeError } from './errors.js';
import { checkValue } from './features.js';
import type { ModelEntry } from './registry.js';
import {
  allocate,
  type DType,
  elementCount,
  fromV2Datatype,
  type Tensor,
  type TensorArray,
  toV2Datatype,
} from './tensor.js';
import { fromBinary } from './v2-binary.js';

export interface V2InputTensor {
  name: string;
  shape: number[];
  datatype: string;
  /** JSON values; absent when the input came as binary tensor data. */
  data?: unknown[] | undefined;
}

export interface V2OutputTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: (number | boolean)[];
}

/**
 * Row-major values from `data`, flat or nested as the shape says: each nesting level holds as many entries
 * as its dimension, and the innermost arrays hold the values of the dimensions left (so `[[7 values],
 * [7 values]]` for shape [2, 7]; `[[1], [2, …, 14]]` is refused even though it holds 14 values). Nesting
 * deeper than the tensor's rank is refused before any recursion: a client's 50,000-deep array must not
 * overflow the stack.
 */
function flatten(data: unknown[], shape: readonly number[], field: string): unknown[] {
  let depth = 0;
  for (let v: unknown = data; Array.isArray(v); v = v[0]) depth++;
  if (depth === 1) return data.some(Array.isArray) ? uneven(field) : data;
  if (depth > shape.length)
    throw invalid('ERR_INPUT_SHAPE', field, `${field} is nested deeper than the tensor's rank`);
  const out: unknown[] = [];
  const walk = (arr: unknown[], level: number, at: string) => {
    const last = level === depth - 1;
    const want = last ? elementCount(shape.slice(level)) : shape[level]!;
    if (arr.length !== want) {
      throw invalid(
        'ERR_INPUT_SHAPE',
        at,
        `${at} has ${arr.length} entries; shape [${shape}] nested ${depth} deep needs ${want} there`,
      );
    }
    if (last) {
      for (const v of arr) {
        if (Array.isArray(v)) uneven(field);
        out.push(v);
      }
      return;
    }
    arr.forEach((v, i) => {
      if (!Array.isArray(v)) uneven(field);
      walk(v as unknown[], level + 1, `${at}[${i}]`);
    });
  };
  walk(data, 0, field);
  return out;
}

/** A tensor's values from its JSON `data`, checked one by one. */
function fromJson(type: DType, input: V2InputTensor, count: number, field: string): TensorArray {
  if (input.data === undefined) {
    throw invalid(
      'ERR_VALIDATION',
      `${field}.data`,
      `${field}.data is required (or parameters.binary_data_size, with the tensor's bytes after the JSON)`,
    );
  }
  const values = flatten(input.data, input.shape, `${field}.data`);
  if (values.length !== count) {
    throw invalid(
      'ERR_INPUT_SHAPE',
      `${field}.data`,
      `shape [${input.shape}] holds ${count} values, data has ${values.length}`,
    );
  }
  const data = allocate(type, count);
  if (type === 'bool') {
    values.forEach((v, i) => {
      if (typeof v !== 'boolean')
        throw invalid('ERR_INPUT_TYPE', `${field}.data[${i}]`, `${field}.data[${i}] must be a boolean`);
      data[i] = v ? 1 : 0;
    });
  } else if (type === 'int64') {
    values.forEach((v, i) => {
      (data as BigInt64Array)[i] = BigInt(checkValue(v, type, `${field}.data[${i}]`));
    });
  } else {
    values.forEach((v, i) => {
      (data as Float32Array)[i] = checkValue(v, type, `${field}.data[${i}]`);
    });
  }
  return data;
}

/** Binary values hold whatever bits were sent: floats must still be finite, and booleans 0 or 1. */
function checkBinaryValues(type: DType, data: TensorArray, field: string): void {
  if (type === 'float32' || type === 'float64') {
    const values = data as Float32Array;
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i]!))
        throw invalid(
          'ERR_INPUT_VALUE',
          field,
          `${field}: binary value ${i} must be finite, got ${values[i]}`,
        );
    }
  } else if (type === 'bool') {
    const values = data as Uint8Array;
    for (let i = 0; i < values.length; i++) {
      if (values[i]! > 1)
        throw invalid('ERR_INPUT_VALUE', field, `${field}: binary value ${i} must be a BOOL byte, 0 or 1`);
    }
  }
}

const uneven = (field: string): never => {
  throw invalid('ERR_INPUT_SHAPE', field, `${field} mixes values and arrays at one nesting level`);
};

/**
 * Check request tensors against the model's signature; return them as tensors and their row count. `binary`
 * holds, per input, its bytes when it came as binary tensor data (see v2-binary.ts).
 */
export function decodeV2Inputs(
  entry: ModelEntry,
  inputs: readonly V2InputTensor[],
  binary: readonly (Uint8Array | undefined)[] = [],
): { tensors: Record<string, Tensor>; rows: number } {
  const tensors: Record<string, Tensor> = {};
  let rows = -1;
  inputs.forEach((input, k) => {
    const field = `inputs[${k}]`;
    const spec = entry.signature.inputs.find((i) => i.name === input.name);
    if (!spec) {
      const names = entry.signature.inputs.map((i) => i.name).join(', ');
      throw invalid(
        'ERR_INPUT_SHAPE',
        `${field}.name`,
        `model ${entry.name} has no input '${input.name}' (inputs: ${names})`,
      );
    }
    if (tensors[input.name])
      throw invalid('ERR_INPUT_SHAPE', `${field}.name`, `input '${input.name}' is given twice`);
    const type = fromV2Datatype(input.datatype);
    if (type === undefined || type !== spec.type) {
      throw invalid(
        'ERR_INPUT_TYPE',
        `${field}.datatype`,
        `input '${input.name}' takes ${toV2Datatype(spec.type!)}, got ${input.datatype}`,
      );
    }
    if (input.shape.length !== spec.shape.length) {
      throw invalid(
        'ERR_INPUT_SHAPE',
        `${field}.shape`,
        `input '${input.name}' has rank ${spec.shape.length}, got shape [${input.shape}]`,
      );
    }
    input.shape.forEach((d, j) => {
      if (d === 0) {
        throw invalid(
          'ERR_INPUT_SHAPE',
          `${field}.shape`,
          `input '${input.name}' has an empty dimension ${j}`,
        );
      }
      const want = spec.shape[j];
      if (typeof want === 'number' && want >= 0 && want !== d) {
        throw invalid(
          'ERR_INPUT_SHAPE',
          `${field}.shape`,
          `input '${input.name}' dimension ${j} must be ${want}, got ${d}`,
        );
      }
    });
    const count = elementCount(input.shape);
    const raw = binary[k];
    const data =
      raw !== undefined ? fromBinary(type, raw, count, field) : fromJson(type, input, count, field);
    if (raw !== undefined) checkBinaryValues(type, data, field);
    tensors[input.name] = { type, dims: [...input.shape], data };
    if (entry.batchable) {
      if (rows >= 0 && input.shape[0] !== rows) {
        throw invalid(
          'ERR_INPUT_SHAPE',
          `${field}.shape`,
          `every input must have the same batch size (${rows})`,
        );
      }
      rows = input.shape[0]!;
    }
  });
  const absent = entry.signature.inputs.find((i) => !tensors[i.name]);
  if (absent) throw invalid('ERR_INPUT_SHAPE', 'inputs', `input '${absent.name}' is missing`);
  return { tensors, rows: Math.max(rows, 1) };
}

/** Which outputs to return: those asked for, or all. */
export function selectV2Outputs(
  entry: ModelEntry,
  wanted: readonly { name: string }[] | undefined,
): string[] {
  const all = entry.signature.outputs.map((o) => o.name);
  if (!wanted || wanted.length === 0) return all;
  const seen = new Set<string>();
  return wanted.map((w, k) => {
    if (seen.has(w.name)) {
      throw new ServeError('ERR_OUTPUT_UNKNOWN', `output '${w.name}' is asked for twice`, {
        field: `outputs[${k}].name`,
      });
    }
    seen.add(w.name);
    if (!all.includes(w.name)) {
      throw new ServeError(
        'ERR_OUTPUT_UNKNOWN',
        `model ${entry.name} has no output '${w.name}' (outputs: ${all.join(', ')})`,
        {
          field: `outputs[${k}].name`,
        },
      );
    }
    return w.name;
  });
}

export function encodeV2Output(name: string, t: Tensor): V2OutputTensor {
  let data: (number | boolean)[];
  if (t.type === 'bool') data = Array.from(t.data as Uint8Array, (v) => v !== 0);
  else if (t.type === 'int64') data = Array.from(t.data as BigInt64Array, Number);
  else data = Array.from(t.data as Float32Array);
  return { name, datatype: toV2Datatype(t.type), shape: t.dims, data };
}

type Parameters = Record<string, unknown> | undefined;

interface V2Request {
  parameters?: Parameters;
  inputs: readonly { parameters?: Parameters }[];
  outputs?: readonly { name: string; parameters?: Parameters }[] | undefined;
}

/**
 * Extensions this server does not serve are refused by name, never ignored: an output asked for as the top
 * classes (`class_count`) or in shared memory would otherwise be answered in a form the client did not ask for.
 */
export function refuseUnservedExtensions(req: V2Request): void {
  const refuse = (field: string, what: string) => {
    throw invalid('ERR_VALIDATION', field, `${field}: the ${what} extension is not served here`);
  };
  req.inputs.forEach((t, k) => {
    if (t.parameters?.shared_memory_region !== undefined)
      refuse(`inputs[${k}].parameters.shared_memory_region`, 'shared memory');
  });
  req.outputs?.forEach((t, k) => {
    if (t.parameters?.shared_memory_region !== undefined)
      refuse(`outputs[${k}].parameters.shared_memory_region`, 'shared memory');
    const classes = t.parameters?.class_count;
    if (classes !== undefined && classes !== 0)
      refuse(`outputs[${k}].parameters.class_count`, 'classification');
  });
}

const booleanParameter = (value: unknown, field: string): boolean | undefined => {
  if (value === undefined || typeof value === 'boolean') return value;
  throw invalid('ERR_VALIDATION', field, `${field} must be true or false`);
};

/**
 * Per output to return (in `names`' order): whether it goes as binary tensor data. An output's own
 * `parameters.binary_data` decides; without it, the request's `parameters.binary_data_output` (Triton's
 * client sets it whenever it names no outputs).
 */
export function binaryOutputs(req: V2Request, names: readonly string[]): boolean[] {
  const all = booleanParameter(req.parameters?.binary_data_output, 'parameters.binary_data_output');
  const own = new Map<string, boolean | undefined>();
  req.outputs?.forEach((o, k) => {
    own.set(o.name, booleanParameter(o.parameters?.binary_data, `outputs[${k}].parameters.binary_data`));
  });
  return names.map((n) => own.get(n) ?? all === true);
}

/**
 * The deadline a request asks for, in ms: `parameters.timeout_ms`, or Triton's `parameters.timeout` in
 * microseconds (what its client sends for `infer(timeout=…)`); undefined when it asks for none.
 */
export function requestTimeoutMs(parameters: Parameters): number | undefined {
  const check = (value: unknown, field: string) => {
    if (value !== undefined && (typeof value !== 'number' || !(value > 0)))
      throw invalid('ERR_VALIDATION', field, `${field} must be a positive number`);
    return value as number | undefined;
  };
  const ms = check(parameters?.timeout_ms, 'parameters.timeout_ms');
  if (ms !== undefined) return ms;
  const us = check(parameters?.timeout, 'parameters.timeout');
  return us === undefined ? undefined : us / 1000;
}

/** What the model configuration reports about how the server runs models. */
export interface ServingSettings {
  batching?: { maxBatchRows: number; maxQueueDelayMs: number; maxQueuedRows: number } | false | undefined;
  /** Execution threads, each holding a session of every model. */
  instances?: number | undefined;
  requestTimeoutMs?: number | undefined;
}

/**
 * A version's configuration as Triton reports it (GET /v2/models/{name}/config): its tensors with Triton's
 * type names, and this server's batching, queue and instance settings — what it does, not defaults. With
 * batching, dims leave out the batch dimension (Triton's convention); a tensor that is only the batch
 * dimension is dims [1] reshaped to [], as Triton writes it.
 */
export function modelConfig(entry: ModelEntry, settings: ServingSettings) {
  const batching = entry.batchable && settings.batching ? settings.batching : undefined;
  const tensor = (t: ModelEntry['signature']['inputs'][number]) => {
    const dims = t.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1));
    const inner = batching ? dims.slice(1) : dims;
    return {
      name: t.name,
      data_type: `TYPE_${toV2Datatype(t.type!)}`,
      format: 'FORMAT_NONE' as const,
      dims: inner.length > 0 ? inner : [1],
      ...(inner.length > 0 ? {} : { reshape: { shape: [] } }),
    };
  };
  return {
    name: entry.name,
    platform: 'onnxruntime_onnx' as const,
    backend: 'onnxruntime' as const,
    // Every version in the repository is loaded and served.
    version_policy: { all: {} },
    max_batch_size: batching ? batching.maxBatchRows : 0,
    input: entry.signature.inputs.map(tensor),
    output: entry.signature.outputs.map(tensor),
    ...(batching
      ? {
          dynamic_batching: {
            max_queue_delay_microseconds: Math.round(batching.maxQueueDelayMs * 1000),
            preferred_batch_size: [],
            preserve_ordering: true,
            default_queue_policy: {
              timeout_action: 'REJECT' as const,
              default_timeout_microseconds: Math.round((settings.requestTimeoutMs ?? 30_000) * 1000),
              allow_timeout_override: true,
              max_queue_size: batching.maxQueuedRows,
            },
          },
        }
      : {}),
    instance_group: [
      settings.instances !== undefined
        ? { name: entry.name, kind: 'KIND_CPU' as const, count: settings.instances }
        : { name: entry.name, kind: 'KIND_MODEL' as const, count: 1 },
    ],
    default_model_filename: 'model.onnx',
  };
}
