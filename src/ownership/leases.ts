import os from 'node:os';
import pg from 'pg';
import type { Logger } from 'pino';
import { connectionConfig } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';

/**
 * Ownership through PostgreSQL itself: session-level advisory locks held on one dedicated connection per process.
 * PostgreSQL releases them when that session ends — a SIGKILLed instance, a dropped network (once TCP keepalive
 * notices), a server restart — and another instance's next try takes over. Nothing home-made to agree on.
 *
 * Lock keys are (hashtext('<schema>.<table>:<kind>'), hashtext(name)) so they never meet the writer's stream locks.
 */

/**
 * `release:<key>`: the presence of an instance among those that loaded the same projection code (see Runner): the N
 * of its share when releases with different code overlap (a blue/green deployment).
 */
export type LeaseKind = 'projection' | 'high-water' | 'instance' | `release:${string}`;

export const instanceName = (): string => `${os.hostname()}/${process.pid}`;

/** The first key of a lease of this kind; the second is hashtext(name). */
export function leaseNamespace(names: StoreNames, kind: LeaseKind): string {
  return `${names.schema}.${names.table}:${kind}`;
}

/**
 * SQL condition: row `lock` of pg_locks is a granted lease with namespace text `namespaceSql` (and, when given, name
 * `nameSql`) in this database. pg_locks shows the two int4 keys as unsigned oids, hence the modulo.
 */
export function heldLeaseCondition(lock: string, namespaceSql: string, nameSql?: string): string {
  const key = (text: string) => `(hashtext(${text})::bigint + 4294967296) % 4294967296`;
  return `${lock}.locktype = 'advisory' AND ${lock}.granted AND ${lock}.objsubid = 2
          AND ${lock}.classid::bigint = ${key(namespaceSql)}
          ${nameSql ? `AND ${lock}.objid::bigint = ${key(nameSql)}` : ''}
          AND ${lock}.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
}

export class LeaseSession {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly held = new Set<string>();
  private readonly lostListeners = new Set<() => void>();
  readonly owner = instanceName();

  constructor(
    private readonly connectionString: string,
    private readonly names: StoreNames,
    private readonly log: Logger,
  ) {}

  /** Called when the session died: every lease it held is gone. */
  onLost(listener: () => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  holds(kind: LeaseKind, name: string): boolean {
    return this.held.has(`${kind}:${name}`);
  }

  get connected(): boolean {
    return this.client !== undefined;
  }

  private namespace(kind: LeaseKind): string {
    return leaseNamespace(this.names, kind);
  }

  private async session(): Promise<pg.Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const client = new pg.Client(connectionConfig(this.connectionString, 'leases'));
      const lost = (error?: Error) => {
        if (this.client !== client) return;
        this.client = undefined;
        if (this.held.size > 0)
          this.log.warn({ err: error, leases: [...this.held] }, 'lease session lost; every lease it held is released');
        this.held.clear();
        for (const listener of this.lostListeners) listener();
      };
      client.on('error', lost);
      client.on('end', () => lost());
      try {
        await client.connect();
      } catch (error) {
        client.removeAllListeners();
        throw error;
      }
      this.client = client;
      return client;
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  async tryAcquire(kind: LeaseKind, name: string): Promise<boolean> {
    if (this.holds(kind, name)) return true;
    const client = await this.session();
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok', [
      this.namespace(kind),
      name,
    ]);
    if (rows[0]!.ok) this.held.add(`${kind}:${name}`);
    return rows[0]!.ok;
  }

  async release(kind: LeaseKind, name: string): Promise<void> {
    if (!this.held.delete(`${kind}:${name}`) || !this.client) return;
    await this.client.query('SELECT pg_advisory_unlock(hashtext($1), hashtext($2))', [this.namespace(kind), name]);
  }

  /** A cheap round trip that surfaces a silently dead session (and so fires onLost). */
  async verify(): Promise<void> {
    if (this.client) await this.client.query('SELECT 1').catch(() => this.client?.end().catch(() => {}));
  }

  /** How many instances hold their presence lease (of this kind) right now: the N of "ceil(P/N) projections each". */
  async liveInstances(kind: 'instance' | `release:${string}` = 'instance'): Promise<number> {
    const client = await this.session();
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks k WHERE ${heldLeaseCondition('k', '$1')}`, [
      this.namespace(kind),
    ]);
    return rows[0]!.n;
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.held.clear();
    await client?.end().catch(() => {});
  }
}
