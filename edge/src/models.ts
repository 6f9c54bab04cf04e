/** The models bundled with the Worker: the shipped models. Larger ones come from R2 (see index.ts). */

import m0Meta from '../../models/churn/1/model.json';
import m0 from '../../models/churn/1/model.onnx';
import m1Meta from '../../models/churn/2/model.json';
import m1 from '../../models/churn/2/model.onnx';
import m2Meta from '../../models/classifier-10/1/model.json';
import m2 from '../../models/classifier-10/1/model.onnx';
import m3Meta from '../../models/fraud/1/model.json';
import m3 from '../../models/fraud/1/model.onnx';
import m4Meta from '../../models/iris/1/model.json';
import m4 from '../../models/iris/1/model.onnx';
import m5Meta from '../../models/mlp-large/1/model.json';
import m5 from '../../models/mlp-large/1/model.onnx';
import type { ModelMetadata } from '../../src/core/index.js';

export interface BundledModel {
  name: string;
  version: string;
  bytes: ArrayBuffer;
  metadata: ModelMetadata;
}

export const BUNDLED: BundledModel[] = [
  { name: 'churn', version: '1', bytes: m0, metadata: m0Meta as ModelMetadata },
  { name: 'churn', version: '2', bytes: m1, metadata: m1Meta as ModelMetadata },
  { name: 'classifier-10', version: '1', bytes: m2, metadata: m2Meta as ModelMetadata },
  { name: 'fraud', version: '1', bytes: m3, metadata: m3Meta as ModelMetadata },
  { name: 'iris', version: '1', bytes: m4, metadata: m4Meta as ModelMetadata },
  { name: 'mlp-large', version: '1', bytes: m5, metadata: m5Meta as ModelMetadata },
];
