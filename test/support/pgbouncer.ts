import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/db/postgres-server.js';

/** The pgbouncer binary (Debian package pgbouncer; .ci/run installs it), or undefined: tests that need it skip loudly. */
export const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));

export interface PgBouncer {
  /** A connection string to the same database through the pooler, as `user` (any password: auth_type any). */
  url(user: string): string;
  stop(): void;
}

/**
 * PgBouncer in transaction mode in front of the test server at `serverUrl`: a server session per transaction, no
 * session state kept (prepared statements and LISTEN do not cross it). Callers wait until it accepts.
 */
export async function startPgBouncer(serverUrl: string): Promise<PgBouncer> {
  const url = new URL(serverUrl);
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'pgbouncer-'));
  chmodSync(dir, 0o777);
  const config = path.join(dir, 'pgbouncer.ini');
  writeFileSync(
    config,
    `[databases]
* = host=${url.hostname} port=${url.port} user=${decodeURIComponent(url.username)} password=${decodeURIComponent(url.password)}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 4
logfile = ${path.join(dir, 'pgbouncer.log')}
`,
  );
  chmodSync(config, 0o644);
  // PgBouncer refuses to run as root; -u drops to another user when the tests run as root.
  const asRoot = process.getuid?.() === 0;
  const bouncer = spawn(PGBOUNCER!, [...(asRoot ? ['-u', 'nobody'] : []), config], { stdio: 'ignore' });
  return {
    url: (user) => `postgres://${user}:any@127.0.0.1:${port}${url.pathname}`,
    stop: () => {
      bouncer.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
