import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO } from '../support/child-runner.js';

// No Docker engine runs on our machines; the image itself is built and run by test/docker (buildah). This checks
// that the compose file parses and that nothing it mounts or the Dockerfile copies is missing from the repository.

const compose = parse(readFileSync(path.join(REPO, 'docker-compose.yml'), 'utf8'));
const dockerfile = readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');

describe('docker-compose.yml', () => {
  it('has postgres, the runner, Prometheus and Grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'postgres', 'prometheus', 'runner']);
    expect(compose.services.runner.build).toBe('.');
    expect(compose.services.runner.environment.DATABASE_URL).toMatch(/^postgres:\/\/.+@postgres:5432\//);
  });

  const mounts = Object.values(compose.services as Record<string, { volumes?: string[] }>)
    .flatMap((s) => s.volumes ?? [])
    .map((v) => v.split(':')[0]!)
    .filter((source) => source.startsWith('.'));
  it.each(mounts)('mounts %s, which exists', (source) => {
    expect(existsSync(path.join(REPO, source))).toBe(true);
  });
});

describe('Dockerfile', () => {
  const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).slice(0, -1));
  it.each(copies)('copies %s, which exists', (source) => {
    expect(existsSync(path.join(REPO, source))).toBe(true);
  });

  it('is multi-stage, runs as a non-root user, exposes 9464, checks /healthz, runs the CLI with `run`', () => {
    expect(dockerfile.match(/^FROM /gm)).toHaveLength(2);
    expect(dockerfile).toMatch(/^USER runner$/m);
    expect(dockerfile).toMatch(/^EXPOSE 9464$/m);
    expect(dockerfile).toMatch(/HEALTHCHECK[\s\S]+\/healthz/);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "--max-semi-space-size=16", "\/app\/dist\/src\/cli\/main\.js"\]$/m);
    expect(dockerfile).toMatch(/^CMD \["run"\]$/m);
    expect(dockerfile).toMatch(/--omit=dev/);
  });

  it('keeps tests, local data and dependencies out of the build context', () => {
    const ignored = readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['node_modules', 'dist', '.data', 'test', '.git']) expect(ignored).toContain(entry);
  });
});
