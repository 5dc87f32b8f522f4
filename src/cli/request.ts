import type pg from 'pg';
import type { RunnerConfig } from '../config.js';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { RequestInterruptedError, RequestNotServedError, UsageError } from '../errors.js';
import type { Projection } from '../projection/projection.js';
import type { Runner } from '../runner/runner.js';
import { sleep } from '../shared/time.js';
import { prepareStore } from '../sources/prepare.js';
import type { Build } from '../versions/builds.js';
import { readBuilds } from '../versions/builds-sql.js';
import { withDatabasePool } from './database.js';
import { confirm, projectionNamed } from './options.js';
import { inProcessRunner } from './runner-options.js';
import { FOLLOW_INTERVAL_MS, formatDuration, formatProgress, type Progress } from './progress.js';
import { inProcessRefusal, type RequestKind } from './request-plan.js';
import { readStatus, type StatusReport } from './status.js';

/**
 * The one path of the operator requests (replay, retry, skip, rebuild, switch): open the store, find the build the
 * request acts on and who owns it, check that something can serve it, ask, request, run it in this process unless a
 * daemon owns it, follow it, stop. A command only says what it asks (`OperatorRequest`); the rule of issue 26 item 5
 * lives here: the request is served, or the command says that nothing can serve it and why (at once, before anything
 * changed, or after --request-timeout), exit 1, and leaves no pending request behind (withdrawn, also on a signal).
 */

/** What a command sees before it changes anything. */
export interface RequestScene {
  pool: pg.Pool;
  names: StoreNames;
  projection: Projection;
  builds: Build[];
  status: StatusReport;
}

export interface RequestTarget {
  /** The build whose code serves the request (see inProcessRefusal); undefined: the projection has none yet. */
  build: Build | undefined;
  /** The daemon that serves it; null: a runner in this process does. */
  owner: string | null;
  /** Asked before the request (skipped by --yes). */
  question?: string;
}

/** Where a request stands, read from the database. */
export type Standing =
  /** Nobody took it up (yet). */
  | { kind: 'waiting' }
  | { kind: 'working'; progress?: Progress; note?: string }
  /** Served; `report` says so (the line on stdout), given the runner of this process when one served it. */
  | { kind: 'done'; progress?: Progress; report: (runner: Runner | undefined, signal: AbortSignal) => Promise<string> };

export interface RequestTicket {
  /** The checkpoint (slot) whose owner serves the request. */
  slot: string;
  read(status: StatusReport): Promise<Standing>;
  /** Takes the request back if nobody took it up yet; true when it did. */
  withdraw(): Promise<boolean>;
  /** What becomes of the request once taken up when this command stops following it. */
  carriesOn: string;
}

export interface OperatorRequest {
  kind: RequestKind;
  name: string;
  config: RunnerConfig;
  yes: boolean;
  /** `always`: no terminal and no --yes is a usage error (replay, skip); `at-terminal`: asked only at a terminal. */
  confirmation?: 'always' | 'at-terminal';
  target(scene: RequestScene): Promise<RequestTarget> | RequestTarget;
  request(scene: RequestScene, target: RequestTarget): Promise<RequestTicket>;
  /** The line on stderr that says who carries it out. */
  say: { owned: (owner: string) => string; here: string };
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const STATUS_INTERVAL_MS = 250;

export async function serveRequest(spec: OperatorRequest): Promise<void> {
  const { kind, name, config } = spec;
  if (spec.confirmation === 'always' && !spec.yes && !process.stdin.isTTY) {
    throw new UsageError(`no terminal to confirm on: pass --yes to ${kind} without asking`);
  }
  const { projection, log } = await projectionNamed(name, config);
  const names = storeNames(config);
  await withDatabasePool(
    config.databaseUrl,
    kind,
    log,
    async (pool, connectionString) => {
      await prepareStore(pool, names);
      const scene: RequestScene = {
        pool,
        names,
        projection,
        builds: await readBuilds(pool, names, name),
        status: await readStatus(pool, names),
      };
      const target = await spec.target(scene);
      if (!target.owner) {
        const refusal = inProcessRefusal({
          kind,
          module: projection,
          builds: scene.builds,
          target: target.build,
          switchMode: config.switchMode,
        });
        if (refusal) throw new RequestNotServedError(`${kind} ${name}: ${refusal} (nothing was changed)`);
      }
      if (target.question && !spec.yes && process.stdin.isTTY && !(await confirm(target.question))) {
        process.stderr.write(`${kind} cancelled\n`);
        return;
      }
      await carryOut(spec, scene, target, () => inProcessRunner(config, connectionString, projection, log));
    },
    2,
  );
}

/** Request, run here unless owned, follow; withdraw what nobody took up, whatever ends the command. */
async function carryOut(spec: OperatorRequest, scene: RequestScene, target: RequestTarget, runnerHere: () => Runner): Promise<void> {
  const interrupt = new AbortController();
  let signalled: string | undefined;
  const handlers = SIGNALS.map((signal) => {
    const handler = () => {
      if (signalled) process.exit(1); // a second signal: stop now
      signalled = signal;
      interrupt.abort();
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  let ticket: RequestTicket | undefined;
  let runner: Runner | undefined;
  let finished = false;
  try {
    ticket = await spec.request(scene, target);
    if (target.owner) process.stderr.write(`${spec.say.owned(target.owner)}\n`);
    else {
      process.stderr.write(`${spec.say.here}\n`);
      runner = runnerHere();
      await runner.start();
    }
    const line = await follow(spec, scene, ticket, runner, interrupt.signal);
    finished = true;
    process.stdout.write(`${line}\n`);
  } catch (error) {
    if (!signalled || finished) throw error;
  } finally {
    const withdrawn = ticket !== undefined && !finished && (await ticket.withdraw().catch(() => false));
    await runner?.stop();
    for (const [signal, handler] of handlers) process.off(signal, handler);
    if (signalled && !finished) {
      // eslint-disable-next-line no-unsafe-finally -- the interruption is the command's outcome, whatever was thrown
      throw new RequestInterruptedError(
        signalled,
        !ticket ? 'nothing was requested' : withdrawn ? 'the request was withdrawn' : `it was taken up: ${ticket.carriesOn}`,
      );
    }
  }
}

/**
 * Until the request is served. Nobody serving it (not taken up, or its owner gone) for --request-timeout ends the
 * command: withdrawn when nobody took it up, else said what becomes of it.
 */
async function follow(spec: OperatorRequest, scene: RequestScene, ticket: RequestTicket, runner: Runner | undefined, signal: AbortSignal) {
  const { kind, name, config } = spec;
  const printer = progressPrinter();
  let servedAt = Date.now();
  // The request itself is looked at every FOLLOW_INTERVAL_MS (its end is what the user waits for); the status (owners,
  // checkpoints: one statement over every projection) at most every STATUS_INTERVAL_MS.
  let status: StatusReport | undefined;
  let statusAt = 0;
  for (;;) {
    if (signal.aborted) throw new Error('interrupted');
    if (!status || Date.now() - statusAt >= STATUS_INTERVAL_MS) {
      status = await readStatus(scene.pool, scene.names);
      statusAt = Date.now();
    }
    const standing = await ticket.read(status);
    if (standing.kind === 'done') {
      printer.end(standing.progress);
      return standing.report(runner, signal);
    }
    const owner = status.projections.find((p) => p.name === ticket.slot)?.owner;
    if (standing.kind === 'working' && owner) servedAt = Date.now();
    if (Date.now() - servedAt > config.requestTimeoutMs) {
      printer.end();
      const within = formatDuration(config.requestTimeoutMs / 1000);
      if (await ticket.withdraw()) {
        const who = runner ? 'the runner started here' : (owner ?? 'the daemon that owned it');
        throw new RequestNotServedError(
          `${kind} ${name}: not taken up within ${within} (--request-timeout) by ${who}: the request was withdrawn, nothing was changed`,
        );
      }
      if (standing.kind === 'waiting' || !owner) {
        throw new RequestNotServedError(
          `${kind} ${name}: nothing has run ${ticket.slot} for ${within} (--request-timeout): ${ticket.carriesOn}`,
        );
      }
    }
    if (standing.kind === 'working') printer.show(standing.progress, standing.note);
    await sleep(FOLLOW_INTERVAL_MS, signal);
  }
}

/** Progress on stderr: one line rewritten at a terminal, a line a second otherwise. */
function progressPrinter() {
  const tty = process.stderr.isTTY;
  let lastPrinted = 0;
  let shown = false;
  return {
    show(progress: Progress | undefined, note?: string) {
      if (!progress) return;
      const line = `${formatProgress(progress)}${note ? `  (${note})` : ''}`;
      if (tty) {
        process.stderr.write(`\r${line}`);
        shown = true;
      } else if (Date.now() - lastPrinted > 1_000) {
        process.stderr.write(`${line}\n`);
        lastPrinted = Date.now();
      }
    },
    end(progress?: Progress) {
      if (tty && progress) process.stderr.write(`\r${formatProgress(progress)}\n`);
      else if (tty && shown) process.stderr.write('\n');
      shown = false;
    },
  };
}

/** The owner of a checkpoint (slot) in a status report, null when no instance holds its lease. */
export const ownerOf = (status: StatusReport, slot: string): string | null =>
  status.projections.find((p) => p.name === slot)?.owner ?? null;
