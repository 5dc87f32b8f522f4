import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';

/**
 * The machine's PostgreSQL client tools (psql, createdb), needed by foreign stores whose installers are shell
 * scripts. PG_BIN_DIR wins; else /usr/lib/postgresql/15/bin; else the newest /usr/lib/postgresql/N/bin with psql.
 */
export function postgresBinDir(): string {
  const fromEnv = process.env.PG_BIN_DIR;
  if (fromEnv && existsSync(path.join(fromEnv, 'psql'))) return fromEnv;
  const root = '/usr/lib/postgresql';
  const preferred = path.join(root, '15', 'bin');
  if (existsSync(path.join(preferred, 'psql'))) return preferred;
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(path.join(root, v, 'bin', 'psql')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error('no psql found: set PG_BIN_DIR to a PostgreSQL bin folder');
  return path.join(root, versions[0]!, 'bin');
}

/** libpq environment for a connection URL (host, port, user, password; no PG* variable inherited). */
export function libpqEnvironment(databaseUrl: string): { env: NodeJS.ProcessEnv; database: string } {
  const url = new URL(databaseUrl);
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG')) env[key] = value;
  env.PGHOST = url.hostname.replace(/^\[(.*)\]$/, '$1');
  env.PGPORT = url.port || '5432';
  env.PGUSER = decodeURIComponent(url.username);
  env.PGPASSWORD = decodeURIComponent(url.password);
  env.PATH = `${postgresBinDir()}${path.delimiter}${process.env.PATH ?? ''}`;
  return { env, database: decodeURIComponent(url.pathname.replace(/^\//, '')) };
}

/** Runs a command; rejects with its whole output on a non-zero exit. */
export function run(file: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, cwd, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')} failed (${error.message}):\n${stdout}\n${stderr}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

/**
 * Creates a cluster-wide role once per server, whatever the number of concurrent callers: CREATE ROLE racing with
 * another one fails with unique_violation (23505) rather than duplicate_object (42710); both mean "it exists".
 */
export async function ensureRole(databaseUrl: string, role: string, attributes = 'LOGIN'): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(`CREATE ROLE "${role.replaceAll('"', '""')}" WITH ${attributes}`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== '42710' && code !== '23505') throw error;
  } finally {
    await client.end().catch(() => {});
  }
}
