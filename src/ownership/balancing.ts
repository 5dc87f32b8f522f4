/**
 * How many projections an instance should own, and where it starts looking: pure arithmetic for the ownership loop.
 * Each of N live instances owns about ceil(P/N); the excess is given back first, so that a new instance finds free
 * projections to take. The start offset differs per instance, so that instances do not all race for the same one.
 */

/** ceil(projections / instances), with at least one instance counted (this one, before its lease shows). */
export function fairShare(projections: number, instances: number): number {
  return Math.ceil(projections / Math.max(1, instances));
}

/** How many owned projections to give back to get down to the share (0 when at or under it). */
export function excess(owned: number, share: number): number {
  return Math.max(0, owned - share);
}

/** The order in which `owner` tries the projections: all of them, once, starting at an offset of its own. */
export function claimOrder<T>(projections: readonly T[], owner: string): T[] {
  if (projections.length === 0) return [];
  const offset = Math.abs(hash(owner)) % projections.length;
  return [...projections.slice(offset), ...projections.slice(0, offset)];
}

/** A small stable string hash (Java's), enough to spread instances over the projections. */
function hash(text: string): number {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (Math.imul(31, h) + text.charCodeAt(i)) | 0;
  return h;
}
