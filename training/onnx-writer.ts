import onnxProto, { type onnx as OnnxTypes } from 'onnx-proto';
import type { Network } from './network.js';

// onnx-proto is CommonJS: its namespace arrives on the default export at run time.
const onnx = (onnxProto as unknown as { onnx: typeof OnnxTypes }).onnx;

export interface OnnxExportOptions {
  /** Graph name written into the model. */
  name: string;
  docString?: string;
  opset?: number;
}

function floatTensor(name: string, dims: number[], values: number[]): OnnxTypes.ITensorProto {
  const data = Float32Array.from(values);
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/**
 * Write a dense network as an ONNX classifier with skl2onnx's conventions: input `float_input`
 * [N, F] float32, outputs `label` [N] int64 and `probabilities` [N, C] float32.
 */
export function networkToOnnx(net: Network, opts: OnnxExportOptions): Uint8Array {
  const nodes: OnnxTypes.INodeProto[] = [];
  const initializer: OnnxTypes.ITensorProto[] = [];
  let current = 'float_input';
  net.layers.forEach((layer, l) => {
    const inDim = layer.w.length;
    const outDim = layer.b.length;
    initializer.push(floatTensor(`W${l}`, [inDim, outDim], layer.w.flat()));
    initializer.push(floatTensor(`B${l}`, [outDim], layer.b));
    const out = l === net.layers.length - 1 ? 'logits' : `h${l}`;
    nodes.push({ opType: 'Gemm', input: [current, `W${l}`, `B${l}`], output: [out], name: `gemm${l}` });
    current = out;
    if (l < net.layers.length - 1) {
      nodes.push({ opType: 'Relu', input: [out], output: [`${out}_relu`], name: `relu${l}` });
      current = `${out}_relu`;
    }
  });
  const intAttr = (name: string, i: number): OnnxTypes.IAttributeProto => ({
    name,
    i,
    type: onnx.AttributeProto.AttributeType.INT,
  });
  nodes.push({
    opType: 'Softmax',
    input: [current],
    output: ['probabilities'],
    name: 'softmax',
    attribute: [intAttr('axis', 1)],
  });
  nodes.push({
    opType: 'ArgMax',
    input: ['probabilities'],
    output: ['label'],
    name: 'argmax',
    attribute: [intAttr('axis', 1), intAttr('keepdims', 0)],
  });

  const features = net.layers[0]!.w.length;
  const classes = net.layers.at(-1)!.b.length;
  const { FLOAT, INT64 } = onnx.TensorProto.DataType;
  const model: OnnxTypes.IModelProto = {
    irVersion: 7,
    producerName: 'onnx-serve',
    producerVersion: '1',
    docString: opts.docString ?? '',
    opsetImport: [{ domain: '', version: opts.opset ?? 13 }],
    graph: {
      name: opts.name,
      node: nodes,
      initializer,
      input: [valueInfo('float_input', FLOAT, ['N', features])],
      output: [valueInfo('label', INT64, ['N']), valueInfo('probabilities', FLOAT, ['N', classes])],
    },
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** Read a network back from an ONNX file this writer produced: lets tests compute outputs without ORT. */
export function networkFromOnnx(bytes: Uint8Array): Network {
  const model = onnx.ModelProto.decode(bytes);
  const byName = new Map(model.graph!.initializer!.map((t) => [t.name!, t]));
  const layers: Network['layers'] = [];
  for (let l = 0; byName.has(`W${l}`); l++) {
    const w = byName.get(`W${l}`)!;
    const b = byName.get(`B${l}`)!;
    const [inDim, outDim] = w.dims!.map(Number) as [number, number];
    const wv = toFloats(w.rawData!);
    layers.push({
      w: Array.from({ length: inDim }, (_, i) => Array.from(wv.subarray(i * outDim, (i + 1) * outDim))),
      b: Array.from(toFloats(b.rawData!)),
    });
  }
  return { layers };
}

/** Copy raw little-endian bytes out (protobufjs may hand back a Buffer that views a shared pool). */
function toFloats(raw: Uint8Array): Float32Array {
  const own = new Uint8Array(raw.byteLength);
  own.set(raw);
  return new Float32Array(own.buffer);
}
