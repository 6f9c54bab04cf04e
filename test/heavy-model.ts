/** A model whose rows cost far more to compute than to parse: the worker, not the main thread, is what is busy. */
import onnxProto, { type onnx as OnnxTypes } from 'onnx-proto';

/** An MLP 64 → 2048 → 2048 → 2 with seeded weights: about 4.3M multiply-adds per row. */
export function heavyModel(): Uint8Array {
  const onnx = (onnxProto as unknown as { onnx: typeof OnnxTypes }).onnx;
  let seed = 7;
  const weights = (name: string, rows: number, cols: number): OnnxTypes.ITensorProto => {
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      data[i] = (seed / 2147483648 - 0.5) / Math.sqrt(rows);
    }
    return {
      name,
      dims: [rows, cols],
      dataType: onnx.TensorProto.DataType.FLOAT,
      rawData: new Uint8Array(data.buffer),
    };
  };
  const io = (name: string, width: number): OnnxTypes.IValueInfoProto => ({
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: [{ dimParam: 'N' }, { dimValue: width }] },
      },
    },
  });
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'heavy',
      initializer: [weights('w1', 64, 2048), weights('w2', 2048, 2048), weights('w3', 2048, 2)],
      node: [
        { opType: 'MatMul', input: ['x', 'w1'], output: ['h1'] },
        { opType: 'Relu', input: ['h1'], output: ['r1'] },
        { opType: 'MatMul', input: ['r1', 'w2'], output: ['h2'] },
        { opType: 'Relu', input: ['h2'], output: ['r2'] },
        { opType: 'MatMul', input: ['r2', 'w3'], output: ['y'] },
      ],
      input: [io('x', 64)],
      output: [io('y', 2)],
    },
  }).finish();
}
