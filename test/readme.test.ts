/**
 * The README's result tables are generated from the committed records: this fails when a block is stale
 * (a record changed and `npm run tables -- --readme` was not run) or was edited by hand.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { README_BLOCKS, readmeBlocks, renderReadme } from '../experiments/cli/readme-tables.js';

const ROOT = resolve(__dirname, '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

describe('README result tables', () => {
  it('match what the committed records generate (run `npm run tables -- --readme` after a run)', () => {
    const fresh = renderReadme(README, ROOT);
    const stale = readmeBlocks(README).filter((name) => {
      const block = (text: string) => new RegExp(`<!-- table:${name} -->[\\s\\S]*?<!-- /table:${name} -->`).exec(text)![0];
      return block(fresh) !== block(README);
    });
    expect(stale, 'stale README blocks: run npm run tables -- --readme').toEqual([]);
  });

  it('has every block the generator defines, each once', () => {
    const names = readmeBlocks(README);
    expect([...names].sort()).toEqual(Object.keys(README_BLOCKS).sort());
  });

  it('names an unknown block, and regenerates a hand-edited one', () => {
    expect(() => renderReadme('<!-- table:nope -->\n<!-- /table:nope -->', ROOT)).toThrow(/unknown table block "nope"/);
    const edited = README.replace(/(<!-- table:memory-scaling -->\n[\s\S]*?)MiB/, '$1MB');
    expect(edited).not.toBe(README);
    expect(renderReadme(edited, ROOT)).toBe(renderReadme(README, ROOT));
  });
});
