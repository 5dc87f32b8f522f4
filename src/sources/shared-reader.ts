import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { StoredEvent } from '../store/types.js';
import { readEvents } from './native.js';
import { covers, pageBound, pagesToDrop, slicePage, type Page, type Slice } from './pages.js';

/**
 * One read for many projections (as Emmett's consumer fans a batch out to its processors): the projections of an
 * instance whose checkpoints lie in the same page share that page's read, each applying it in its own transaction
 * with its own checkpoint compare-and-set, so isolation is unchanged. Live, every caught-up projection asks for the
 * page after H at the same moment: one read per wake-up. Catching up, a full page starts the read of the next one at
 * once (the read-ahead), which the other projections find read when they get there.
 *
 * Why it is safe across transactions: events at or below H never change (a commit that comes later is late, and a
 * projection gets it through the late path whatever it read), so a page read in one snapshot is what any projection
 * at or below that H would read in its own.
 *
 * A projection that is slower, failed, replaying or just added is not waited for: the pages it needs may be gone
 * (at most `maxPages` are held), then it reads on its own, and the next page it needs ends where the pages of the
 * others start (pageBound), so it joins them there. Memory: at most `maxPages` pages of at most a batch each.
 */
export interface SharedReaderOptions {
  pool: pg.Pool;
  names: StoreNames;
  /** Upper bound on the stored bytes of one page (see --batch-bytes). */
  batchBytes: number;
  /** How many pages are held for the projections behind the fastest one. */
  maxPages?: number;
  /** Counts each read of the event table (projection_runner_event_reads_total). */
  onRead?: () => void;
}

interface HeldPage {
  after: bigint;
  bound: bigint;
  /** Resolves to the page, or to undefined when its read failed (the asker reads again itself). */
  read: Promise<Page<StoredEvent> | undefined>;
  page?: Page<StoredEvent>;
}

export class SharedReader {
  private readonly held = new Map<bigint, HeldPage>();
  /** The checkpoint of every projection reading through this reader now. */
  private readonly readers = new Map<string, bigint>();

  constructor(private readonly options: SharedReaderOptions) {}

  /**
   * A projection's place: `checkpoint` after each batch it commits, undefined when it stops reading (failed,
   * stopped, given up), so that it holds no page.
   */
  position(projection: string, checkpoint: bigint | undefined): void {
    if (checkpoint === undefined) this.readers.delete(projection);
    else this.readers.set(projection, checkpoint);
    this.release();
  }

  /**
   * The events a projection's batch takes: at most `limit` of them after `after`, up to `highWater`, from a page
   * held here or read now on `tx` (the batch's own transaction).
   */
  async read(tx: pg.ClientBase, request: { after: bigint; highWater: bigint; limit: number }): Promise<Slice<StoredEvent>> {
    if (request.highWater <= request.after) return { events: [], full: false, next: request.after };
    const page = await this.pageFor(tx, request);
    const slice = slicePage(page, request);
    // A page read full means more follows: read the next one ahead, for whoever gets there first.
    if (page.coveredTo < request.highWater && slice.next === page.coveredTo) {
      this.readAhead(page.coveredTo, request.highWater, request.limit);
    }
    return slice;
  }

  /**
   * The page that serves `request.after`: one held here (waiting for it if it is still being read), else one read
   * now. Finding and registering a page happen without an await in between, so two projections asking at once for
   * the same position share one read.
   */
  private async pageFor(tx: pg.ClientBase, request: { after: bigint; highWater: bigint; limit: number }): Promise<Page<StoredEvent>> {
    for (;;) {
      const held = this.findHeld(request.after);
      if (!held) return this.readPage(tx, request.after, request.highWater, request.limit);
      const page = held.page ?? (await held.read);
      // A read-ahead that failed, or one cut short before this position: look again (it no longer matches).
      if (page && covers(page, request.after)) return page;
    }
  }

  private findHeld(after: bigint): HeldPage | undefined {
    for (const held of this.held.values()) {
      if (held.page ? covers(held.page, after) : held.after <= after && after < held.bound) return held;
    }
    return undefined;
  }

  private async readPage(db: pg.ClientBase | pg.Pool, after: bigint, highWater: bigint, limit: number): Promise<Page<StoredEvent>> {
    const bound = pageBound(after, highWater, [...this.held.keys()]);
    const held: HeldPage = { after, bound, read: this.fetch(db, after, bound, limit) };
    this.held.set(after, held);
    try {
      const page = await held.read;
      if (!page) throw new Error('unreachable: a direct page read rethrows');
      return page;
    } finally {
      this.release();
    }
  }

  private readAhead(after: bigint, highWater: bigint, limit: number): void {
    if (this.held.has(after)) return;
    const bound = pageBound(after, highWater, [...this.held.keys()]);
    if (bound <= after) return;
    const read = this.fetch(this.options.pool, after, bound, limit).catch(() => {
      // Nobody waits for a read-ahead: a failure just means the asker reads the page itself.
      this.held.delete(after);
      return undefined;
    });
    this.held.set(after, { after, bound, read });
    void read.then(() => this.release());
  }

  private async fetch(db: pg.ClientBase | pg.Pool, after: bigint, bound: bigint, limit: number): Promise<Page<StoredEvent>> {
    const { names, batchBytes, onRead } = this.options;
    onRead?.();
    try {
      const read = await readEvents(db, names, after, bound, limit, undefined, batchBytes);
      const cut = read.events.length === limit || read.truncated;
      const page: Page<StoredEvent> = {
        after,
        coveredTo: cut ? read.events.at(-1)!.globalPosition : bound,
        events: read.events.map(freeze),
      };
      const held = this.held.get(after);
      if (held) held.page = page;
      return page;
    } catch (error) {
      this.held.delete(after);
      throw error;
    }
  }

  /** Lets go of the pages nobody reads any more, and of the lowest ones beyond maxPages (pagesToDrop). */
  private release(): void {
    const settled = [...this.held.values()].flatMap((h) => (h.page ? [h.page] : []));
    for (const after of pagesToDrop(settled, [...this.readers.values()], this.options.maxPages ?? 8)) this.held.delete(after);
  }
}

/**
 * Shared between projections, so read-only: a handler that changed an event would change it for the others. Frozen,
 * a write throws (a handler fault, said at once) instead of silently reaching another read model.
 */
function freeze(event: StoredEvent): StoredEvent {
  deepFreeze(event.data);
  deepFreeze(event.metadata);
  return Object.freeze(event);
}

function deepFreeze(value: unknown): void {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const child of Object.values(value)) deepFreeze(child);
}
