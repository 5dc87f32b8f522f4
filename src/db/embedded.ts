import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PostgresServer, runningServer } from './postgres-server.js';

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

/**
 * As root the server runs as `postgres`, which must be able to reach the data directory. A checkout under a private
 * folder (root's home is 0700) cannot be reached: then the data goes to a folder of its own under the system's
 * temporary directory, named after the project folder, and the log says where.
 */
function reachableByOthers(dir: string): boolean {
  for (let current = path.dirname(dir); ; current = path.dirname(current)) {
    if (existsSync(current) && (statSync(current).mode & 0o001) === 0) return false;
    if (current === path.dirname(current)) return true;
  }
}

export async function startEmbeddedDatabase(
  preferredRoot = path.resolve('.data'),
  log: (message: string) => void = () => {},
): Promise<EmbeddedDatabase> {
  let root = preferredRoot;
  if (process.getuid?.() === 0 && !reachableByOthers(root)) {
    const id = createHash('sha1').update(preferredRoot).digest('hex').slice(0, 10);
    root = path.join(os.tmpdir(), `projection-runner-${id}`);
    log(`${preferredRoot} is not reachable by the postgres user; embedded data goes to ${root}`);
  }
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
