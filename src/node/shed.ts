/**
 * Refusals at the in-flight bound, answered by Node's request listener before the request becomes a
 * fetch Request and runs through the app's middleware. Under overload refusals are most of the work: at
 * 1,000 connections of clients that resend at once, the app answered ~10,000 refusals/s on this machine,
 * about what it answers predictions, while a 503 written here costs a third of that; every ms a refusal
 * costs is a ms the accepted requests wait behind it in the event loop.
 *
 * The app's admission control (src/core/admission.ts) still decides everything else (the line for large
 * bodies, body limits) and is the bound on runtimes without this listener. The answer is the app's own:
 * the same status, code, message, error shape (the Open Inference Protocol's on /v2), Retry-After and
 * security headers, and it is counted and logged as the app counts and logs refusals (every 5xx has an
 * access line). It comes before keys and rate limits: a caller refused here was never let in, so there is
 * nothing to check, and it is not counted against a rate limit. With CORS configured the app answers (its
 * CORS headers go on every response).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { overloaded, overloadedMessage } from '../core/admission.js';
import { errorBody, PREDICTION_PATHS, SECURITY_HEADERS, unreadBodyIsLarge } from '../core/app.js';
import type { Logger } from '../core/logger.js';
import type { AppMetrics } from '../core/metrics.js';

/** The prediction routes' paths as patterns, each with the route's name (its Hono path, as metrics say). */
const PREDICTION_ROUTES = PREDICTION_PATHS.map(
  (route) => [new RegExp(`^${route.replace(/:[^/]+/g, '[^/]+')}$`), route] as const,
);

const routeOf = (path: string) => PREDICTION_ROUTES.find(([pattern]) => pattern.test(path))?.[1];

export interface ShedOptions {
  /** Prediction requests in progress now, and the most taken. */
  inFlight: () => number;
  maxInFlight: number;
  /** True while draining: the answer also closes the connection. */
  draining: () => boolean;
  /** CORS configured: every request goes to the app, which answers it with CORS headers. */
  cors: boolean;
  metrics: AppMetrics;
  logger: Logger;
}

/** A listener's front: answers (and returns true) when the request is refused here. */
export function createShedder(opts: ShedOptions) {
  const security = SECURITY_HEADERS(false);
  const logged = opts.logger.isLevelEnabled('info');
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== 'POST' || opts.cors) return false;
    const inFlight = opts.inFlight();
    if (inFlight < opts.maxInFlight) return false;
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const route = routeOf(q === -1 ? url : url.slice(0, q));
    if (route === undefined) return false;
    const started = performance.now();
    const e = overloaded(overloadedMessage(inFlight));
    const body = JSON.stringify(errorBody(e, route));
    for (const [name, value] of security) res.setHeader(name, value);
    // The body is left unread: a large one (or one of unknown length) is not worth reading to keep the
    // connection, as the app decides too.
    const large = unreadBodyIsLarge(
      req.headers['content-length'],
      req.headers['transfer-encoding'] !== undefined,
    );
    if (large || opts.draining()) res.setHeader('Connection', 'close');
    res.writeHead(e.status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'Retry-After': String(e.retryAfterSeconds),
    });
    res.end(body);
    const ms = performance.now() - started;
    opts.metrics.request(route, 'POST', e.status, ms / 1000);
    opts.metrics.error(e.code);
    if (logged) {
      // The app's access line for a refusal, field for field.
      const id = req.headers['x-request-id'];
      opts.logger.info(
        {
          request_id: typeof id === 'string' ? id : null,
          method: 'POST',
          route,
          status: e.status,
          latency_ms: Math.round(ms * 1000) / 1000,
          model: null,
          version: null,
          rows: null,
          cache: null,
          api_key: null,
          error: e.code,
        },
        'request',
      );
    }
    return true;
  };
}
