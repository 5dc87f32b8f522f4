import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { expect, it } from 'vitest';
import { ProjectionWaiter } from '../../../src/index.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * `new ProjectionWaiter({ pool })` with the application's pool, which often goes through
 * PgBouncer in transaction mode (each statement may run on another server session). The waiter's look is a named
 * prepared statement, "prepared once per session": the session it was prepared on is not the one the next look
 * lands on. Other clients of the same pool make PgBouncer hand out its server sessions in turn. Every wait must still
 * resolve (at worst by the fallback looks: LISTEN does not cross a transaction pooler), each followed by the test's
 * own read of the read model, and the waiter keeps its one connection (a failed look drops it and reconnects).
 */
const t = useRunnerFixture();
const pgbouncer = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));

it.skipIf(!pgbouncer)('a waiter on a pool through PgBouncer in transaction mode resolves every wait', async () => {
  t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
  const url = new URL(t.db.url);
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
  const asRoot = process.getuid?.() === 0;
  const bouncer: ChildProcess = spawn(pgbouncer!, [...(asRoot ? ['-u', 'nobody'] : []), config], { stdio: 'ignore' });
  const pooled = new pg.Pool({ connectionString: `postgres://app:any@127.0.0.1:${port}${url.pathname}`, max: 6 });
  pooled.on('error', () => {});
  let sessions = 0;
  pooled.on('connect', () => sessions++);
  let busy = true;
  const waiter = new ProjectionWaiter({ pool: pooled });
  try {
    await waitFor('PgBouncer accepting', async () => (await pooled.query('SELECT 1 AS one')).rows[0].one === 1);
    // The application's other requests on the same pool: server sessions taken in turn.
    const others = Array.from({ length: 4 }, async () => {
      while (busy) await pooled.query('SELECT pg_sleep(0.002)').catch(() => undefined);
    });
    const outcomes: string[] = [];
    for (let round = 0; round < 5; round++) {
      const { lastPosition } = await t.store.append(`s-${round}`, [{ type: 'E', data: {} }]);
      outcomes.push(
        await waiter.waitFor(lastPosition, { timeoutMs: 10_000 }).then(
          async () => {
            const { rows } = await t.db.pool.query(`SELECT 1 FROM log_a WHERE position = $1`, [lastPosition.toString()]);
            return rows.length === 1 ? 'reached, in the read model' : 'reached, NOT in the read model';
          },
          (e: unknown) => `${(e as Error).name}: ${(e as Error).message}`,
        ),
      );
    }
    busy = false;
    await Promise.all(others);
    expect(outcomes).toEqual(Array.from({ length: 5 }, () => 'reached, in the read model'));
    // The waiter keeps its one connection: a look that fails ("prepared statement … does not exist") drops it, the
    // pool destroys it and opens another. The pool's 6 are all it needs.
    expect(sessions).toBeLessThanOrEqual(6);
  } finally {
    busy = false;
    await waiter.close();
    await pooled.end();
    bouncer.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
