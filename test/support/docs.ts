import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO } from './child-runner.js';

/** Every page of the manual, relative to the repository: the README, ARCHITECTURE.md, CHANGELOG.md and docs/*.md. */
export function manualPages(): string[] {
  const pages = readdirSync(path.join(REPO, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  return ['README.md', 'ARCHITECTURE.md', 'CHANGELOG.md', ...pages];
}

export function readPage(page: string): string {
  return readFileSync(path.join(REPO, page), 'utf8');
}

/**
 * The code block between `<!-- name:start -->` and `<!-- name:end -->` of a page, without its fence: the blocks that
 * tests run as written (grants, the README's example). Throws when the page has no such block.
 */
export function markedBlock(page: string, name: string): string {
  const block = new RegExp(`<!-- ${name}:start -->\\s*\`\`\`[a-z]*\\n([\\s\\S]+?)\`\`\`\\s*<!-- ${name}:end -->`).exec(readPage(page));
  if (!block) throw new Error(`${page} has no ${name} block`);
  return block[1]!;
}

/** Replaces the text between `<!-- name:start -->` and `<!-- name:end -->` of a page (a generated block). */
export function writeMarkedRegion(page: string, name: string, body: string): void {
  const text = readPage(page);
  const start = `<!-- ${name}:start -->\n`;
  const end = `<!-- ${name}:end -->`;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${page} has no ${name} region`);
  writeFileSync(path.join(REPO, page), text.slice(0, from + start.length) + body + text.slice(to));
}

/** The text between `<!-- name:start -->` and `<!-- name:end -->` of a page. */
export function markedRegion(page: string, name: string): string {
  const region = new RegExp(`<!-- ${name}:start -->\\n([\\s\\S]*?)<!-- ${name}:end -->`).exec(readPage(page));
  if (!region) throw new Error(`${page} has no ${name} region`);
  return region[1]!;
}

/** The text of a page's code: fenced blocks and inline `code` spans, where commands, flags and metrics are named. */
export function codeOf(text: string): string[] {
  const fenced = [...text.matchAll(/^```[^\n]*\n([\s\S]*?)^```/gm)].map((m) => m[1]!);
  const prose = text.replace(/^```[^\n]*\n[\s\S]*?^```/gm, '');
  const inline = [...prose.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
  return [...fenced, ...inline];
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
export function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a page's headings (outside code blocks). */
export function anchorsOf(text: string): Set<string> {
  const prose = text.replace(/^```[^\n]*\n[\s\S]*?^```/gm, '');
  return new Set([...prose.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
}
