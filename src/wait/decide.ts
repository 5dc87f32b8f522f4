/**
 * What a wait decides, without I/O: whether a projection has applied a position, and why not when it has not.
 */

/** One live build's progress as one snapshot saw it (progress-sql.ts readProgress). */
export interface ProjectionProgress {
  /** The projection's name, as the application knows it. */
  projection: string;
  /** The checkpoint row of its live build: the projection's name, or `name@vN` once a later version is live. */
  slot: string;
  checkpoint: bigint;
  /**
   * Every event at or below this that the projection takes is applied (unless late and pending): its checkpoint, or
   * further when every event between its checkpoint and H is of a type it does not take (a move it deferred).
   */
  covered: bigint;
  /** How far the look searched for `covered`: H, or the highest position its waits asked for when that is lower. */
  scannedTo: bigint;
  state: string;
  /** Where and why it stopped, when failed. */
  failure: { position: bigint | undefined; type: string | undefined; message: string } | undefined;
  /** The instance holding its lease, or null when none does. */
  owner: string | null;
  highWater: bigint;
  /** Positions committed late that it passed and has not applied yet, lowest first. */
  latePending: bigint[];
  replaying: boolean;
  building: boolean;
  /** Whether it takes only some event types (its row's event_types): the waiter credits it with the others. */
  filtered: boolean;
}

export type Assessment =
  { kind: 'reached' } | { kind: 'failed'; position: bigint | undefined; type: string | undefined; message: string } | { kind: 'behind' };

/**
 * Has `p` applied every committed event at or below `target`? A projection failed at or below the target never
 * will without an operator (retry or skip): that is an answer at once, not a wait. A projection failed above the
 * target has applied everything below its failure.
 */
export function assess(p: ProjectionProgress, target: bigint): Assessment {
  const reached = p.covered >= target && !p.latePending.some((late) => late <= target);
  if (p.failure && (p.failure.position === undefined || p.failure.position <= target) && !reached) {
    return { kind: 'failed', ...p.failure };
  }
  return reached ? { kind: 'reached' } : { kind: 'behind' };
}

/** What a timeout can say about the store beyond the projections' rows (progress-sql.ts readBlockers). */
export interface Blockers {
  head: bigint;
  committed: boolean;
  openGaps: Array<{ from: bigint; to: bigint; since: Date }>;
}

export interface Behind {
  projection: string;
  position: bigint;
  state: string;
  owner: string | null;
  reason: string;
}

/** Why `p` has not reached `target`, in words an operator can act on. */
export function explainBehind(p: ProjectionProgress, target: bigint, blockers: Blockers): Behind {
  const reasons: string[] = [];
  if (p.highWater < target) {
    const gap = blockers.openGaps.find((g) => g.from <= target);
    if (gap) {
      reasons.push(
        `a gap open at ${gap.from === gap.to ? gap.from : `${gap.from}..${gap.to}`} since ${gap.since.toISOString()} holds the high-water mark at ${p.highWater}`,
      );
    } else if (!blockers.committed && target > blockers.head) {
      reasons.push(`position ${target} was never seen committed (the head is ${blockers.head})`);
    } else {
      reasons.push(`the high-water mark is at ${p.highWater}`);
    }
  }
  const late = p.latePending.find((position) => position <= target);
  if (late !== undefined) reasons.push(`the late event at ${late} is not applied yet`);
  if (p.owner === null) reasons.push('no instance owns it');
  if (p.replaying) reasons.push('it is replaying');
  if (p.building) reasons.push('a new version of it is being built');
  if (reasons.length === 0) reasons.push(`it is at ${p.checkpoint}`);
  return { projection: p.projection, position: p.checkpoint, state: p.state, owner: p.owner, reason: reasons.join('; ') };
}

/** `0`..2^63-1 as a bigint, from what an application or a URL hands over; undefined when it is not one. */
export function parsePosition(value: unknown): bigint | undefined {
  if (typeof value === 'bigint') return value >= 0n && value < 2n ** 63n ? value : undefined;
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : undefined;
  if (typeof value === 'string' && /^\d{1,19}$/.test(value)) return parsePosition(BigInt(value));
  return undefined;
}

/**
 * The waiter's looks (waiter.ts). A look comes at once for a new wait (unless its position is above every H the
 * waiter knows of: no look could settle it yet), then only on news that may settle a wait
 * (worthALook): the daemons notify the waiters of every checkpoint they commit while a wait is pending, and the
 * high-water leader of every move of H. `fallbackMs` after the last look, a pending wait is looked at anyway: a
 * notification lost with a connection, or a daemon of a release that does not notify.
 */
export const LOOKS = { fallbackMs: 100 } as const;

/** What notifications told since the last look began: H, checkpoints committed by slot, slots failed, unknown slots. */
export interface News {
  highWater: bigint;
  applied: Map<string, bigint>;
  failed: Set<string>;
}

export const noNews = (): News => ({ highWater: -1n, applied: new Map(), failed: new Set() });

/**
 * Whether `news` may settle one of `waits`: a wait not looked at yet; or one each of whose projections the last look
 * found behind is, by the news, possibly past its target: its live build committed a checkpoint at or past it, or
 * (a projection credited through its types: the look found nothing of its own up to where it searched, H or the
 * highest position then waited for) H moved to or past it.
 * A slot failed is news for every wait (a failed projection rejects its waits at once), and so is a slot the last
 * look did not know (`known`: a new version's build becoming live). Anything else is not worth a look: the notices of
 * 16 projections' commits for one event come to one look, when the last of them arrives.
 */
export function worthALook(
  waits: ReadonlyArray<{ target: bigint; behind: readonly ProjectionProgress[] | undefined }>,
  news: News,
  known: ReadonlySet<string>,
): boolean {
  if (news.failed.size > 0) return true;
  for (const slot of news.applied.keys()) if (!known.has(slot)) return true;
  return waits.some(
    ({ target, behind }) =>
      behind === undefined ||
      behind.every(
        (p) =>
          (news.applied.get(p.slot) ?? -1n) >= target ||
          (p.filtered && p.highWater < target && p.covered >= p.scannedTo && news.highWater >= target),
      ),
  );
}

/** A notification on the applied channel (checkpoints.ts appliedNotice): `position state slot`. */
export function parseAppliedNotice(payload: string | undefined): { position: bigint; failed: boolean; slot: string } | undefined {
  const match = /^(\d+) (\S+) (.+)$/.exec(payload ?? '');
  return match ? { position: BigInt(match[1]!), failed: match[2] === 'failed', slot: match[3]! } : undefined;
}
