import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PostgresServer } from './postgres-server.js';

/**
 * The embedded default: without DATABASE_URL the CLI uses a PostgreSQL under `.data/postgres`. A server already
 * running there (started by another CLI process, e.g. `run` while you call `status`) is reused and left running;
 * otherwise one is started and stopped again by `stop()`.
 */

export const EMBEDDED_PASSWORD = 'projection-runner';

export interface EmbeddedDatabase {
  connectionString: string;
  /** True when this process started the server (and so stops it). */
  owned: boolean;
  binaries: string;
  stop(): Promise<void>;
}

function runningServer(dataDir: string): { pid: number; port: number } | undefined {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch {
    return undefined;
  }
}

export async function startEmbeddedDatabase(
  root = path.resolve('.data'),
  log: (message: string) => void = () => {},
): Promise<EmbeddedDatabase> {
  await mkdir(root, { recursive: true });
  await chmod(root, 0o755); // the server runs as `postgres` when we are root
  const dataDir = path.join(root, 'postgres');
  const running = runningServer(dataDir);
  const server = new PostgresServer({ dataDir, password: EMBEDDED_PASSWORD, port: running?.port, log });
  if (running) {
    server.port = running.port;
    return { connectionString: server.connectionString, owned: false, binaries: 'already running', stop: async () => {} };
  }
  await server.start();
  return { connectionString: server.connectionString, owned: true, binaries: server.binariesSource, stop: () => server.stop() };
}
