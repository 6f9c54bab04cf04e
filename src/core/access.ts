/**
 * Who may do what: API keys with scopes, checked before anything else on the routes that need them, and
 * rate limits per key (or per client address for anonymous callers) behind a limiter the entry point
 * provides: Redis-shared on Node, the Workers rate-limiting binding on the edge, in process otherwise.
 *
 * Keys are configured and held only as SHA-256 digests: the server never stores a key, so no dump of its
 * configuration, no log line and no audit row can hold one. A presented key is hashed and compared with
 * every configured digest in constant time.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import type { Context, MiddlewareHandler } from 'hono';
import { ServeError } from './errors.js';

export const SCOPES = ['predict', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who may call a route: anyone, or a caller whose key holds the scope (see `AccessConfig` for when). */
export type Access = 'public' | Scope;

export interface ApiKey {
  /** Shown in logs, metrics and audit records in place of the key. */
  name: string;
  scopes: readonly Scope[];
  /** SHA-256 of the key, 32 bytes. */
  digest: Uint8Array;
  /** This key's own rate limit (requests per window), instead of the default per-key one. */
  rate?: number;
}

/** A limit: `points` requests per `windowSeconds`. */
export interface RatePolicy {
  points: number;
  windowSeconds: number;
}

export interface RateDecision {
  allowed: boolean;
  /** Requests left in the current window, when the limiter knows it. */
  remaining?: number;
  /** Seconds until the window resets (and a refused caller may try again). */
  resetSeconds: number;
}

/**
 * Counts requests per subject. Node: rate-limiter-flexible in Redis, else counted in process; edge: the
 * binding. A limiter that knows at once (in process) answers synchronously, and the guard does not wait.
 */
export interface RateLimiter {
  consume(subject: string, policy: RatePolicy): RateDecision | Promise<RateDecision>;
}

export interface AccessConfig {
  keys: readonly ApiKey[];
  /** Prediction routes (and the metadata prediction clients read) need a key with `predict`. Default: open. */
  keyedPredictions?: boolean;
  /**
   * Admin routes without a key, for local development only. Otherwise admin routes need a key with `admin`,
   * and are refused outright when no such key is configured.
   */
  openAdmin?: boolean;
  /** Per key; absent = keys without a `rate` of their own are not limited. */
  keyRate?: RatePolicy;
  /** The window of a key's own `rate` (default: keyRate's, else 1 s). */
  rateWindowSeconds?: number;
  /** Per client address, for callers without a key; absent = not limited. */
  anonymousRate?: RatePolicy;
}

export type RefusalReason = 'missing_key' | 'unknown_key' | 'scope' | 'admin_disabled' | 'rate_limited';

export interface AccessDeps {
  limiter?: RateLimiter;
  /** The caller's address (the entry point knows where it comes from: the socket, a trusted proxy's header). */
  clientAddress?: (c: Context) => string | undefined;
  /** Counts a refusal: `key` is the key's name, `anonymous`, or `unknown`. */
  refused?: (reason: RefusalReason, key: string) => void;
  /** Adds a response header the runtime's cheapest way (see `AppDeps.responseHeader`); default c.header. */
  header?: (c: Context, name: string, value: string) => void;
  /** SHA-256 of a key's UTF-8 bytes, the runtime's fastest way (Node's native hash); default @noble/hashes. */
  sha256?: (key: string) => Uint8Array;
}

/** The key a request presented, by name (set on the context of every route that checks keys). */
export const API_KEY_VAR = 'apiKeyName';

// ---------------------------------------------------------------------------------------------------------
// Keys: how they are written in configuration, made, and recognised.
// ---------------------------------------------------------------------------------------------------------

/** A new random key (256 bits, base64url) with the prefix that makes a leaked one easy to search for. */
export function generateKey(): string {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return `osk_${btoa(s).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')}`;
}

/** SHA-256 of a key's UTF-8 bytes, in plain JavaScript (runs anywhere). */
const sha256Of = (key: string) => sha256(utf8ToBytes(key));

export const keyDigestHex = (key: string) => bytesToHex(sha256Of(key));

/** `name:scope[+scope]:sha256hex[:rate]`, the line a configuration holds for one key. */
export const keyLine = (name: string, scopes: readonly Scope[], digestHex: string, rate?: number) =>
  `${name}:${scopes.join('+')}:${digestHex}${rate === undefined ? '' : `:${rate}`}`;

const NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;
const DIGEST = /^[0-9a-f]{64}$/;

/**
 * Keys from configuration: one per line (or separated by commas), each `name:scopes:sha256hex[:rate]`,
 * scopes joined by `+`; blank lines and `#` comments skipped. Throws naming the entry that is wrong; the
 * message never repeats the entry, in case someone pasted a key where a digest belongs.
 */
export function parseKeys(text: string | undefined): ApiKey[] {
  if (!text) return [];
  const keys: ApiKey[] = [];
  const names = new Set<string>();
  const entries = text
    .split(/[\n,]/)
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter((l) => l !== '');
  entries.forEach((entry, i) => {
    const where = `API key entry ${i + 1}`;
    const parts = entry.split(':');
    if (parts.length < 3 || parts.length > 4) {
      throw new Error(
        `${where}: expected name:scopes:sha256[:rate] (make one with: npm run keys -- new NAME predict)`,
      );
    }
    const [name, scopeList, digest, rate] = parts as [string, string, string, string | undefined];
    if (!NAME.test(name)) throw new Error(`${where}: the name must be 1-64 letters, digits, . _ or -`);
    // The name is logged and audited: a key pasted in its place would be too.
    if (name.startsWith('osk_')) throw new Error(`${where}: the name looks like a key (osk_…); name it`);
    if (names.has(name)) throw new Error(`${where}: the name "${name}" is used twice`);
    const scopes = scopeList.split('+');
    for (const s of scopes) {
      if (!(SCOPES as readonly string[]).includes(s)) {
        throw new Error(`${where} (${name}): unknown scope; scopes are ${SCOPES.join(', ')}`);
      }
    }
    if (!DIGEST.test(digest.toLowerCase())) {
      throw new Error(
        `${where} (${name}): the third part must be the key's SHA-256 as 64 hex digits, never the key ` +
          '(npm run keys -- hash reads a key and prints it)',
      );
    }
    let points: number | undefined;
    if (rate !== undefined) {
      points = Number(rate);
      if (!Number.isInteger(points) || points < 1) {
        throw new Error(`${where} (${name}): the rate must be a whole number of requests ≥ 1`);
      }
    }
    names.add(name);
    const clash = keys.find((k) => bytesToHex(k.digest) === digest.toLowerCase());
    if (clash) throw new Error(`${where} (${name}): the same key as "${clash.name}"`);
    keys.push({
      name,
      scopes: [...new Set(scopes)] as Scope[],
      digest: hexToBytes(digest.toLowerCase()),
      ...(points !== undefined ? { rate: points } : {}),
    });
  });
  return keys;
}

/**
 * Equal digests, in time that does not depend on where they differ. Hand-written because the core runs on
 * Node and Workers: Node's crypto.timingSafeEqual is not there on Workers, Hono's is async and re-hashes.
 */
export function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * The configured key a presented key is, if any. Every configured digest is compared (no early exit), so the
 * time taken says nothing about which key, or how much of one, matched.
 */
export function findKey(
  keys: readonly ApiKey[],
  presented: string,
  equal: (a: Uint8Array, b: Uint8Array) => boolean = digestsEqual,
  hash: (key: string) => Uint8Array = sha256Of,
): ApiKey | undefined {
  const digest = hash(presented);
  let found: ApiKey | undefined;
  for (const k of keys) {
    if (equal(k.digest, digest) && !found) found = k;
  }
  return found;
}

/** The key a request carries: `Authorization: Bearer …`, else `X-API-Key`. */
export function presentedKey(c: Context): string | undefined {
  const auth = c.req.header('authorization');
  if (auth !== undefined) {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
    if (m) return m[1];
  }
  const header = c.req.header('x-api-key');
  return header === undefined || header === '' ? undefined : header.trim();
}

// ---------------------------------------------------------------------------------------------------------
// The guard: one middleware per access level, run on each route before it reads anything.
// ---------------------------------------------------------------------------------------------------------

const policyName = (anonymous: boolean) => (anonymous ? 'per-address' : 'per-key');

export interface AccessControl {
  /** The middleware for routes of this access level (public routes get none). */
  guard(access: Scope): MiddlewareHandler;
}

export function createAccessControl(config: AccessConfig, deps: AccessDeps = {}): AccessControl {
  const keys = config.keys;
  const header = deps.header ?? ((c: Context, name: string, value: string) => c.header(name, value));
  /** The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-08 and later). */
  // Each policy's RateLimit-Policy value is built once.
  const policyHeaders = new WeakMap<RatePolicy, string>();
  const rateHeaders = (c: Context, name: string, policy: RatePolicy, d: RateDecision) => {
    let value = policyHeaders.get(policy);
    if (value === undefined) {
      value = `"${name}";q=${policy.points};w=${policy.windowSeconds}`;
      policyHeaders.set(policy, value);
    }
    header(c, 'RateLimit-Policy', value);
    if (d.remaining !== undefined) {
      header(c, 'RateLimit', `"${name}";r=${Math.max(0, d.remaining)};t=${Math.max(0, d.resetSeconds)}`);
    }
  };
  const adminConfigured = keys.some((k) => k.scopes.includes('admin'));
  const refuse = (reason: RefusalReason, key: string, err: ServeError): never => {
    deps.refused?.(reason, key);
    throw err;
  };
  const unauthenticated = (message: string, reason: RefusalReason, key: string, c: Context) => {
    header(c, 'WWW-Authenticate', reason === 'unknown_key' ? 'Bearer error="invalid_token"' : 'Bearer');
    return refuse(reason, key, new ServeError('ERR_UNAUTHENTICATED', message, { field: 'authorization' }));
  };

  // Keys with a rate of their own: their policy, made once.
  const window = config.rateWindowSeconds ?? config.keyRate?.windowSeconds ?? 1;
  const ownPolicy = new Map<ApiKey, RatePolicy>();
  for (const k of keys) if (k.rate !== undefined) ownPolicy.set(k, { points: k.rate, windowSeconds: window });
  // What each key is counted as, made once.
  const keySubject = new Map<ApiKey, string>(keys.map((k) => [k, `k:${k.name}`]));

  /** The limit this caller is counted against, if any. */
  const policyFor = (key: ApiKey | undefined) =>
    deps.limiter === undefined
      ? undefined
      : key
        ? (ownPolicy.get(key) ?? config.keyRate)
        : config.anonymousRate;
  /** Applies a decision: the RateLimit headers, and 429 past the limit. */
  const decided = (c: Context, key: ApiKey | undefined, policy: RatePolicy, decision: RateDecision) => {
    rateHeaders(c, policyName(!key), policy, decision);
    if (!decision.allowed) {
      const retry = Math.max(1, Math.ceil(decision.resetSeconds));
      refuse(
        'rate_limited',
        key?.name ?? 'anonymous',
        new ServeError(
          'ERR_RATE_LIMITED',
          `over ${policy.points} requests per ${policy.windowSeconds} s ${key ? `for key "${key.name}"` : 'from this address'}; retry in ${retry} s`,
          { retryAfterSeconds: retry },
        ),
      );
    }
  };
  /**
   * Counts the request against its limit, then runs `then`: at once when the limiter answers at once (in
   * process), after its answer otherwise (Redis, the edge's binding). Not an async function: on the common
   * path (a known key, counted in process) the route runs without waiting a turn.
   */
  const limit = (c: Context, key: ApiKey | undefined, then: () => Promise<void>): Promise<void> => {
    const policy = policyFor(key);
    if (policy === undefined) return then();
    const subject = key ? keySubject.get(key)! : `a:${deps.clientAddress?.(c) ?? 'unknown'}`;
    const decision = deps.limiter!.consume(subject, policy);
    if (decision instanceof Promise) {
      return decision.then((d) => {
        decided(c, key, policy, d);
        return then();
      });
    }
    decided(c, key, policy, decision);
    return then();
  };

  const guard = (access: Scope): MiddlewareHandler =>
    function checkAccess(c, next) {
      const presented = presentedKey(c);
      let key: ApiKey | undefined;
      if (presented !== undefined) {
        key = findKey(keys, presented, digestsEqual, deps.sha256);
        if (!key) {
          // Guesses count against the caller's address, like any anonymous request: past the limit they
          // get 429, not another answer about their guess. A wrong key is refused even where none is
          // needed: its owner should learn now, not at the first route that needs it.
          return limit(c, undefined, () =>
            unauthenticated('the API key is not recognised', 'unknown_key', 'unknown', c),
          );
        }
        c.set(API_KEY_VAR as never, key.name as never);
      }
      const needsKey = access === 'admin' ? !config.openAdmin : config.keyedPredictions === true;
      if (needsKey) {
        if (access === 'admin' && !adminConfigured) {
          refuse(
            'admin_disabled',
            key?.name ?? 'anonymous',
            new ServeError(
              'ERR_ADMIN_DISABLED',
              'admin routes are off: no key with the admin scope is configured (API_KEYS or API_KEYS_FILE)',
            ),
          );
        }
        if (!key)
          unauthenticated(`an API key with the ${access} scope is required`, 'missing_key', 'anonymous', c);
        if (!key!.scopes.includes(access)) {
          refuse(
            'scope',
            key!.name,
            new ServeError('ERR_FORBIDDEN', `the key "${key!.name}" does not hold the ${access} scope`),
          );
        }
      }
      return limit(c, key, next);
    };

  // No keys and no limits for anonymous callers: nothing to check on a prediction route (the default). A key
  // sent anyway (a gateway forwarding its own Authorization header, say) is not this server's business.
  const open: MiddlewareHandler = (_c, next) => next();
  const guards = {
    predict: keys.length === 0 && !config.anonymousRate && !config.keyedPredictions ? open : guard('predict'),
    admin: guard('admin'),
  };
  return { guard: (access) => guards[access] };
}
