import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunnerMetrics } from './registry.js';
import { answerWait, type WaitSource } from './wait-route.js';

/**
 * /metrics, /healthz, /readyz. Liveness says whether the loops still turn (a loop wedged after a database outage
 * must not read as healthy); readiness says whether the database answers and no projection is failed.
 */
export interface HealthReport {
  ok: boolean;
  reasons: string[];
}

/** What the health endpoints ask the daemon (the Runner implements it; metrics never reaches into its parts). */
export interface HealthSource {
  readonly metrics: RunnerMetrics;
  /** Every loop that must keep turning, with the wall-clock time of its last completed pass. */
  loopPasses(): Array<{ what: string; at: number }>;
  /** The projections this instance owns that are stopped at a failing event. */
  failedProjections(): string[];
  /** Resolves once the database answers a trivial statement. */
  pingDatabase(): Promise<void>;
}

export function liveness(source: HealthSource, watchdogMs: number, now = Date.now()): HealthReport {
  const reasons = source
    .loopPasses()
    .filter(({ at }) => now - at > watchdogMs)
    .map(({ what, at }) => `${what} has not completed a pass for ${Math.round((now - at) / 1000)}s`);
  return { ok: reasons.length === 0, reasons };
}

export async function readiness(source: HealthSource): Promise<HealthReport> {
  const reasons: string[] = [];
  try {
    await Promise.race([
      source.pingDatabase(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 2s')), 2_000).unref()),
    ]);
  } catch (error) {
    reasons.push(`database unreachable: ${(error as Error).message}`);
  }
  for (const name of source.failedProjections()) reasons.push(`projection ${name} is failed`);
  return { ok: reasons.length === 0, reasons };
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** `waits`: the daemon's waiter, which serves `/wait` (wait-route.ts); without it `/wait` is 404. */
export async function startMetricsServer(
  source: HealthSource,
  host: string,
  port: number,
  watchdogMs: number,
  waits?: WaitSource,
): Promise<MetricsServer> {
  const reply = (res: http.ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  // respond() settles every outcome itself (500 or a destroyed socket), so its promise is never left to reject.
  const server = http.createServer((req, res) => void respond(req, res));
  async function respond(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'method not allowed\n');
      if (path === '/metrics') {
        const body = await source.metrics.registry.metrics();
        return reply(res, 200, source.metrics.registry.contentType, body);
      }
      if (path === '/healthz' || path === '/readyz') {
        const report = path === '/healthz' ? liveness(source, watchdogMs) : await readiness(source);
        return reply(res, report.ok ? 200 : 503, 'application/json', `${JSON.stringify(report)}\n`);
      }
      if (path === '/wait' && waits) {
        const gone = new AbortController();
        res.on('close', () => gone.abort(new Error('the client closed the connection')));
        const { status, body } = await answerWait(waits, url.searchParams, gone.signal);
        return reply(res, status, 'application/json', `${JSON.stringify(body)}\n`);
      }
      return reply(res, 404, 'text/plain', 'not found\n');
    } catch (error) {
      if (!res.headersSent) reply(res, 500, 'text/plain', `${(error as Error).message}\n`);
      else res.destroy();
    }
  }
  // Malformed requests get a 400 from Node and the socket is closed; nothing reaches the handler.
  server.on('clientError', (_error, socket) => socket.destroy());
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
