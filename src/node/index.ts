/** The Node server's public API: start a server from a config, and the parts it is built from. */
export { type AuditLog, createAuditLog } from './audit/audit-log.js';
export { createAuditReader } from './audit/audit-reader.js';
export { CONFIG_VARIABLES, loadConfig, type ServerConfig } from './config.js';
export { METRIC, METRICS } from './prom-metrics.js';
export { type RunningServer, startServer } from './server.js';
