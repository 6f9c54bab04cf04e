/** The Node server's public API: start a server from a config, and the parts it is built from. */
export { type AuditLog, createAuditLog } from './audit/audit-log.js';
export { createPgStore } from './audit/pg-store.js';
export { createPgliteStore } from './audit/pglite-store.js';
export { CONFIG_VARIABLES, loadConfig, type ServerConfig } from './config.js';
export { METRIC, METRICS } from './prom-metrics.js';
export { type RunningServer, startServer } from './server.js';
