import type { Command } from 'commander';
import type pg from 'pg';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { pendingDeadLettersCountSql } from '../projector/dead-letters.js';
import { heldLeaseCondition, leaseNamespace } from '../ownership/leases.js';
import { deliveredFilterSql, eventTable, positionSql, recordedAtSql } from '../sources/event-table.js';
import { withDatabasePool } from './database.js';
import { addSettings, commandLogger, configFrom, CONNECTION_SETTINGS } from './options.js';

export interface StatusReport {
  head: number;
  highWater: number;
  projections: Array<{
    /** The checkpoint's name: the projection's for its first version, `name@vN` for a later one. */
    name: string;
    projection: string;
    /** The version of the read model this row maintains, and its role: live, building or kept (null: no versions yet). */
    version: number | null;
    role: string | null;
    state: string;
    position: number;
    lagEvents: number;
    lagSeconds: number;
    lastError: unknown;
    owner: string | null;
    /** Dead letters waiting for re-delivery (`projection-runner dead-letters NAME`). */
    deadLetters: number;
  }>;
  openGaps: Array<{ from: number; to: number; ageSeconds: number }>;
}

/**
 * Everything `status` shows, read in one statement. The owner is shown only while its ownership lease is held: a
 * killed instance's name in the checkpoint row is history, not an owner.
 */
export async function readStatus(db: pg.Pool, names: StoreNames): Promise<StatusReport> {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  const { rows } = await db.query(
    // pg_locks is read once (MATERIALIZED), as in the waiter's look: a correlated EXISTS on it called pg_lock_status()
    // again for every checkpoint row.
    `WITH leases AS MATERIALIZED (SELECT * FROM pg_locks WHERE locktype = 'advisory')
     SELECT (SELECT coalesce(max(${position}), 0) FROM ${t.table} e)::float8 AS head,
            (SELECT position FROM ${names.q.highWater})::float8 AS high_water,
            (SELECT coalesce(json_agg(json_build_object(
                 'name', c.name, 'projection', coalesce(b.projection, c.name), 'version', b.version, 'role', b.role,
                 'state', c.state, 'position', c.position, 'last_error', c.last_error,
                 'owner', c.owner, 'owned', l.owned, 'dead_letters', ${pendingDeadLettersCountSql(names, 'c.name')},
                 'lag_seconds', coalesce((SELECT extract(epoch FROM now() - ${recordedAtSql(t, 'e')})
                                            FROM ${t.table} e WHERE ${position} > c.position ${deliveredFilterSql(t, 'e')}
                                           ORDER BY ${position} LIMIT 1), 0)
               ) ORDER BY c.name), '[]')
               FROM ${names.q.checkpoints} c
               LEFT JOIN ${names.q.builds} b ON b.slot = c.name
               CROSS JOIN LATERAL (SELECT EXISTS (
                 SELECT 1 FROM leases k WHERE ${heldLeaseCondition('k', '$1', 'c.name')}) AS owned) l
            ) AS projections,
            (SELECT coalesce(json_agg(json_build_object('from', from_position, 'to', to_position,
                       'age', extract(epoch FROM now() - first_seen_at)) ORDER BY from_position), '[]')
               FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS open_gaps`,
    [leaseNamespace(names, 'projection')],
  );
  const row = rows[0];
  const head = Number(row.head);
  return {
    head,
    highWater: Number(row.high_water),
    projections: row.projections.map((p: Record<string, unknown>) => ({
      name: p.name,
      projection: p.projection,
      version: (p.version as number | null) ?? null,
      role: (p.role as string | null) ?? null,
      state: p.owned || p.state === 'failed' ? p.state : 'stopped',
      position: Number(p.position),
      lagEvents: Math.max(0, head - Number(p.position)),
      lagSeconds: Math.round(Number(p.lag_seconds) * 1000) / 1000,
      lastError: p.last_error ?? null,
      owner: p.owned ? (p.owner as string | null) : null,
      deadLetters: Number(p.dead_letters ?? 0),
    })),
    openGaps: row.open_gaps.map((g: Record<string, unknown>) => ({
      from: Number(g.from),
      to: Number(g.to),
      ageSeconds: Math.round(Number(g.age) * 1000) / 1000,
    })),
  };
}

export function formatStatus(report: StatusReport): string {
  const header = [
    'PROJECTION',
    'VERSION',
    'STATE',
    'CHECKPOINT',
    'HEAD',
    'HIGH-WATER',
    'LAG',
    'LAG(s)',
    'OWNER',
    'DEAD LETTERS',
    'LAST ERROR',
  ];
  const lines = report.projections.map((p) => [
    p.name,
    p.version === null ? '-' : `${p.version} ${p.role}`,
    p.state,
    String(p.position),
    String(report.head),
    String(report.highWater),
    String(p.lagEvents),
    p.lagSeconds.toFixed(1),
    p.owner ?? '-',
    String(p.deadLetters),
    // The error of a failed projection: what its handler said, and the position it is stopped at.
    p.lastError ? `${(p.lastError as { message?: string }).message ?? ''} @${(p.lastError as { position?: string }).position ?? '?'}` : '-',
  ]);
  const table = [header, ...lines];
  const widths = header.map((_, i) => Math.max(...table.map((l) => l[i]!.length)));
  const out = table.map((l) =>
    l
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
  if (report.projections.length === 0) out.push('(no projection has run yet)');
  // Failed projections once more, in full, with the way out: the table cell is a summary.
  for (const p of report.projections.filter((p) => p.state === 'failed')) {
    const e = (p.lastError ?? {}) as { message?: string; position?: string; type?: string; attempts?: number };
    out.push('');
    out.push(
      `${p.name} failed at position ${e.position ?? '?'} (${e.type ?? '?'})${e.attempts ? ` after ${e.attempts} attempts` : ''}: ${e.message ?? 'unknown error'}`,
    );
    out.push(`  fix the handler, then: projection-runner retry ${p.name}   (or set the event aside: projection-runner skip ${p.name})`);
  }
  out.push('');
  out.push(
    report.openGaps.length === 0
      ? 'open gaps: none'
      : `open gaps: ${report.openGaps.map((g) => `${g.from}..${g.to} (${g.ageSeconds.toFixed(1)}s)`).join(', ')}`,
  );
  return out.join('\n');
}

export function registerStatus(program: Command): void {
  addSettings(
    program.command('status').description('show every projection: state, checkpoint, lag, owner; open gaps').option('--json', 'print JSON'),
    CONNECTION_SETTINGS,
  ).action(async (options) => {
    const config = configFrom(options);
    const log = () => commandLogger(config, options.json === true);
    await withDatabasePool(config.databaseUrl, 'status', log, async (pool) => {
      const report = await readStatus(pool, storeNames(config));
      process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatStatus(report)}\n`);
    });
  });
}
