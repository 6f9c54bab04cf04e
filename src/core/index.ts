/** The runtime-neutral core's public API: what entry points (src/node, edge/) and tools build on. */

export {
  type AccessConfig,
  type ApiKey,
  generateKey,
  keyDigestHex,
  keyLine,
  parseKeys,
  type RateDecision,
  type RateLimiter,
  type RatePolicy,
  type Scope,
} from './access.js';
export {
  type Admission,
  type AdmissionOptions,
  type AdmissionStats,
  createAdmission,
} from './admission.js';
export { type AppConfig, type AppDeps, type CorsConfig, createApp, SECURITY_HEADERS } from './app.js';
export {
  type AuditQuery,
  type AuditReader,
  type AuditRecord,
  type AuditSink,
  cacheSummary,
} from './audit.js';
export {
  AuditChunkWriter,
  type DecodedRecord,
  decodeRecord,
  decodeTensorPack,
  encodeRecord,
  framesOf,
  fromBase64,
  jsonPack,
  type PackedTensor,
  toBase64,
  uuidText,
  writeUuidV7,
} from './audit-codec.js';
export {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  type AuditStore,
  auditByIdSql,
  auditSearchSql,
  dayOf,
  isDataError,
  PG_SCHEMA_SQL,
  partitionSql,
  SQLITE_SCHEMA_SQL,
} from './audit-sql.js';
export type {
  BackendStats,
  Dim,
  InferenceBackend,
  ModelSignature,
  ModelSource,
  RunOptions,
  RunTiming,
  TensorInfo,
} from './backend.js';
export type { BatcherOptions, BatchReport } from './batcher.js';
export {
  type CachedRow,
  type CacheObserver,
  type CacheTier,
  createMemoryTier,
  createTieredCache,
  type MemoryTier,
  type TieredCache,
  type TierName,
} from './cache.js';
export {
  buildReference,
  createDriftMonitor,
  type DriftMonitor,
  type DriftOptions,
  type DriftReference,
  type DriftReport,
  type HistogramSpec,
  histogramBatch,
  ks,
  ksPValue,
  parseReference,
  psi,
  scoreOfProbabilities,
} from './drift.js';
export { type ErrorCode, ServeError } from './errors.js';
export { type AppMetrics, noopMetrics } from './metrics.js';
export { createModelStats, type ModelStat, type ModelStats } from './model-stats.js';
export { createOrtSessionBackend, type OrtSessionLike } from './ort-session-backend.js';
export { createPredictor, type Predictor, type PredictorOptions } from './predictor.js';
export {
  compareVersions,
  createRegistry,
  describeModel,
  type ModelEntry,
  type ModelMetadata,
  type ModelRegistry,
} from './registry.js';
export { DOCS_FILES } from './routes/operations.js';
export type { DType, Tensor, TensorArray } from './tensor.js';
export { parentContext, type TraceScope, traceparentOf } from './tracing.js';
