import { parseDuration } from '../config.js';
import { ProjectionFailedError, UnknownProjectionError, WaitTimeoutError } from '../errors.js';

/**
 * `GET /wait?position=N[&projection=a&projection=b][&timeout=2s]` on the daemon's HTTP server: read your own writes
 * for applications in other languages and for gateways. Every answer is JSON: 200 reached, 504 timed out (with the
 * explanation), 409 a projection failed at or below the position, 400 bad input.
 */

/** What the route asks the daemon (its ProjectionWaiter, src/wait/): all concurrent requests share its one connection. */
export interface WaitSource {
  waitFor(
    position: bigint,
    options: { projections?: readonly string[]; timeoutMs: number; signal?: AbortSignal },
  ): Promise<{ position: bigint; projections: Record<string, bigint> }>;
}

export const WAIT_DEFAULT_TIMEOUT_MS = 5_000;
/** Longer waits belong to a retry loop of the caller's, not to one request held open. */
export const WAIT_MAX_TIMEOUT_MS = 60_000;

export type WaitQuery = { position: bigint; projections: string[] | undefined; timeoutMs: number };

/** The query string, checked: the request, or what is wrong with it. */
export function parseWaitQuery(params: URLSearchParams): WaitQuery | { error: string } {
  const text = params.get('position');
  if (text === null || !/^\d{1,19}$/.test(text) || BigInt(text) >= 2n ** 63n) {
    return { error: `position must be a whole number from 0 (got ${JSON.stringify(text)})` };
  }
  let timeoutMs = WAIT_DEFAULT_TIMEOUT_MS;
  const timeout = params.get('timeout');
  if (timeout !== null) {
    try {
      timeoutMs = parseDuration(timeout);
    } catch (error) {
      return { error: `timeout: ${(error as Error).message}` };
    }
    if (timeoutMs > WAIT_MAX_TIMEOUT_MS) return { error: `timeout must be at most ${WAIT_MAX_TIMEOUT_MS / 1000}s (got ${timeout})` };
  }
  const projections = params.getAll('projection');
  if (projections.some((p) => p === '')) return { error: 'projection must not be empty' };
  return { position: BigInt(text), projections: projections.length > 0 ? projections : undefined, timeoutMs };
}

/** JSON numbers while they are exact, strings beyond. */
const json = (n: bigint) => (n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString());

/** `signal`: the client went away (the wait is let go, not held to its timeout). */
export async function answerWait(
  source: WaitSource,
  params: URLSearchParams,
  signal?: AbortSignal,
): Promise<{ status: number; body: unknown }> {
  const query = parseWaitQuery(params);
  if ('error' in query) return { status: 400, body: { error: 'bad_request', message: query.error } };
  try {
    const result = await source.waitFor(query.position, { projections: query.projections, timeoutMs: query.timeoutMs, signal });
    const reached = Object.fromEntries(Object.entries(result.projections).map(([name, at]) => [name, json(at)]));
    return { status: 200, body: { position: json(result.position), projections: reached } };
  } catch (error) {
    if (error instanceof UnknownProjectionError) {
      return { status: 400, body: { error: 'unknown_projection', projection: error.projection, message: error.message } };
    }
    if (error instanceof ProjectionFailedError) {
      const { projection, position, eventType, reason } = error;
      const at = position === undefined ? null : json(position);
      return {
        status: 409,
        body: { error: 'projection_failed', projection, position: at, type: eventType ?? null, reason, message: error.message },
      };
    }
    if (error instanceof WaitTimeoutError) {
      const behind = error.behind.map((b) => ({ ...b, position: json(b.position) }));
      return { status: 504, body: { error: 'timeout', position: json(error.position), behind, message: error.message } };
    }
    throw error;
  }
}
