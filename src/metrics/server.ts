import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Runner } from '../runner/runner.js';

/**
 * /metrics, /healthz, /readyz. Liveness says whether the loops still turn (a loop wedged after a database outage
 * must not read as healthy); readiness says whether the database answers and no projection is failed.
 */
export interface HealthReport {
  ok: boolean;
  reasons: string[];
}

export function liveness(runner: Runner, watchdogMs: number, now = Date.now()): HealthReport {
  const reasons: string[] = [];
  const stale = (what: string, at: number) => {
    if (now - at > watchdogMs) reasons.push(`${what} has not completed a pass for ${Math.round((now - at) / 1000)}s`);
  };
  stale('the high-water loop', runner.tracker.lastPassAt);
  stale('the ownership loop', runner.lastOwnershipPassAt);
  for (const p of runner.ownedProjections()) if (p.state !== 'failed') stale(`projection ${p.name}`, p.lastPassAt);
  return { ok: reasons.length === 0, reasons };
}

export async function readiness(runner: Runner): Promise<HealthReport> {
  const reasons: string[] = [];
  try {
    await Promise.race([
      runner.pool.query('SELECT 1'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 2s')), 2_000).unref()),
    ]);
  } catch (error) {
    reasons.push(`database unreachable: ${(error as Error).message}`);
  }
  for (const p of runner.ownedProjections()) if (p.state === 'failed') reasons.push(`projection ${p.name} is failed`);
  return { ok: reasons.length === 0, reasons };
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(runner: Runner, host: string, port: number, watchdogMs: number): Promise<MetricsServer> {
  const reply = (res: http.ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const server = http.createServer(async (req, res) => {
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'method not allowed\n');
      if (path === '/metrics') {
        const body = await runner.metrics.registry.metrics();
        return reply(res, 200, runner.metrics.registry.contentType, body);
      }
      if (path === '/healthz' || path === '/readyz') {
        const report = path === '/healthz' ? liveness(runner, watchdogMs) : await readiness(runner);
        return reply(res, report.ok ? 200 : 503, 'application/json', `${JSON.stringify(report)}\n`);
      }
      return reply(res, 404, 'text/plain', 'not found\n');
    } catch (error) {
      if (!res.headersSent) reply(res, 500, 'text/plain', `${(error as Error).message}\n`);
      else res.destroy();
    }
  });
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
