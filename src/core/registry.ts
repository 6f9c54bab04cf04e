import type { ModelSignature, TensorInfo } from './backend.js';
import { modelNotFound, ServeError, versionNotFound } from './errors.js';
import type { DType } from './tensor.js';

/** What `model.json` beside a model may say. Every field is optional. */
export interface ModelMetadata {
  description?: string;
  feature_names?: string[];
  class_labels?: string[];
  training?: unknown;
  metrics?: unknown;
  created?: string;
  [key: string]: unknown;
}

/** How `/predict` reads a model with one 2-D input: rows of `features` numbers. */
export interface TabularInput {
  input: string;
  type: DType;
  features: number;
  featureNames: string[] | undefined;
  featureIndex: Map<string, number> | undefined;
}

export interface ModelEntry {
  name: string;
  version: string;
  /** `name@version`: the key backends and batchers use. */
  id: string;
  sha256: string;
  signature: ModelSignature;
  metadata: ModelMetadata;
  tabular: TabularInput | undefined;
  /** Output holding the predicted class (int) or value (float, regression). */
  predictionOutput: string | undefined;
  /** Float output [N, C] with class probabilities. */
  probabilityOutput: string | undefined;
  classLabels: string[] | undefined;
  /** Every input and output has a free first dimension, so rows of requests can be stacked. */
  batchable: boolean;
  /**
   * Every dimension after the first is fixed, so each row has one shape: rows can be cached one by one.
   * A model with a free inner dimension is batched only with requests of the same inner shape, and not cached.
   */
  fixedRowShape: boolean;
  loadSeconds: number;
}

const isFree = (d: TensorInfo['shape'][number]) => typeof d !== 'number' || d < 0;
const isFloat = (t: TensorInfo) => t.type === 'float32' || t.type === 'float64';

/** Interpret a model's signature and metadata; fail on metadata that contradicts the file. */
export function describeModel(args: {
  name: string;
  version: string;
  sha256: string;
  signature: ModelSignature;
  metadata?: ModelMetadata;
  loadSeconds?: number;
}): ModelEntry {
  const { name, version, signature } = args;
  const metadata = args.metadata ?? {};
  const bad =
    signature.outputs.find((o) => o.type === undefined) ?? signature.inputs.find((i) => i.type === undefined);
  if (bad) {
    throw new Error(
      `${name}/${version}: '${bad.name}' is not a tensor; export the model without ZipMap (zipmap=False)`,
    );
  }
  const batchable = [...signature.inputs, ...signature.outputs].every(
    (t) => t.shape.length >= 1 && isFree(t.shape[0]!),
  );

  let tabular: TabularInput | undefined;
  const only = signature.inputs.length === 1 ? signature.inputs[0]! : undefined;
  if (only && only.shape.length === 2 && typeof only.shape[1] === 'number' && only.type !== 'bool') {
    const features = only.shape[1];
    const names = metadata.feature_names;
    if (names && names.length !== features) {
      throw new Error(
        `${name}/${version}: model.json names ${names.length} features, the model takes ${features}`,
      );
    }
    tabular = {
      input: only.name,
      type: only.type!,
      features,
      featureNames: names,
      featureIndex: names ? new Map(names.map((n, i) => [n, i])) : undefined,
    };
  }

  const outputs = signature.outputs;
  const probabilities =
    outputs.find((o) => isFloat(o) && o.shape.length === 2 && /prob/i.test(o.name)) ??
    outputs.find(
      (o) => isFloat(o) && o.shape.length === 2 && typeof o.shape[1] === 'number' && o.shape[1] > 1,
    );
  const label = outputs.find((o) => !isFloat(o) && o !== probabilities && o.shape.length <= 2);
  const value = outputs.find((o) => isFloat(o) && o !== probabilities);
  const classes = typeof probabilities?.shape[1] === 'number' ? probabilities.shape[1] : undefined;
  if (metadata.class_labels && new Set(metadata.class_labels).size !== metadata.class_labels.length) {
    throw new Error(
      `${name}/${version}: model.json repeats a class label (${metadata.class_labels.join(', ')})`,
    );
  }
  if (metadata.class_labels && classes !== undefined && metadata.class_labels.length !== classes) {
    throw new Error(
      `${name}/${version}: model.json names ${metadata.class_labels.length} classes, the model gives ${classes}`,
    );
  }

  return {
    name,
    version,
    id: `${name}@${version}`,
    sha256: args.sha256,
    signature,
    metadata,
    tabular,
    predictionOutput: (label ?? (probabilities ? undefined : value))?.name,
    probabilityOutput: probabilities?.name,
    classLabels: metadata.class_labels,
    batchable,
    fixedRowShape: [...signature.inputs, ...signature.outputs].every((t) =>
      t.shape.slice(1).every((d) => typeof d === 'number' && d >= 0),
    ),
    loadSeconds: args.loadSeconds ?? 0,
  };
}

/** Triton orders versions as integers; fall back to text for names that are not. */
export function compareVersions(a: string, b: string): number {
  const na = /^\d+$/.test(a) ? Number(a) : Number.NaN;
  const nb = /^\d+$/.test(b) ? Number(b) : Number.NaN;
  if (!Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface ModelRegistry {
  /** Model names, sorted. */
  names(): string[];
  /** A model's versions, oldest first. */
  versions(name: string): ModelEntry[];
  /**
   * The model asked for: a name (or the default model) and a version (or the one serving: the newest here;
   * the lifecycle's registry routes by stage and traffic policy, per `caller` for a prediction).
   */
  resolve(name?: string, version?: string, caller?: { id?: string | undefined }): ModelEntry;
  all(): ModelEntry[];
  readonly defaultModel: string | undefined;
}

export function createRegistry(
  entries: readonly ModelEntry[],
  opts: { defaultModel?: string } = {},
): ModelRegistry {
  const byName = new Map<string, ModelEntry[]>();
  for (const e of entries) {
    const list = byName.get(e.name) ?? [];
    if (list.some((x) => x.version === e.version))
      throw new Error(`model ${e.name} version ${e.version} is loaded twice`);
    list.push(e);
    byName.set(e.name, list);
  }
  for (const list of byName.values()) list.sort((a, b) => compareVersions(a.version, b.version));
  const names = [...byName.keys()].sort();
  let defaultModel = opts.defaultModel;
  if (defaultModel !== undefined && !byName.has(defaultModel)) {
    throw new Error(
      `the default model '${defaultModel}' is not among the loaded models (${names.join(', ')})`,
    );
  }
  if (defaultModel === undefined && names.length === 1) defaultModel = names[0];

  return {
    defaultModel,
    names: () => names,
    versions: (name) => byName.get(name) ?? [],
    all: () => names.flatMap((n) => byName.get(n)!),
    resolve(name, version) {
      const wanted = name ?? defaultModel;
      if (wanted === undefined) {
        throw new ServeError(
          'ERR_VALIDATION',
          `several models are loaded (${names.join(', ')}): name one in 'model'`,
          {
            field: 'model',
          },
        );
      }
      const list = byName.get(wanted);
      if (!list) throw modelNotFound(wanted);
      if (version === undefined) return list.at(-1)!;
      const entry = list.find((e) => e.version === version);
      if (!entry) throw versionNotFound(wanted, version);
      return entry;
    },
  };
}
