/** The agent's console status lines: signed with the config's key, early records held until it is known. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConsoleStatusLines } from '../../../agent/src/status/console-lines.ts';
import { StatusLineVerifier } from '../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';

const KEY = Buffer.alloc(32, 9);
const KEY_TEXT = KEY.toString('base64');

const at = (stage: StatusRecord['stage'], outcome: StatusRecord['outcome'] = 'ok'): StatusRecord => ({
  stage,
  outcome,
  atMs: 1,
});

/** What a host with `key` believes of the text, and how many status lines it dropped. */
function hostView(text: string, key: Buffer | undefined): { stages: string[]; dropped: number } {
  const verifier = new StatusLineVerifier(key);
  const stages: string[] = [];
  let dropped = 0;
  for (const line of text.split('\n')) {
    const verdict = verifier.check(line);
    if (verdict.kind === 'believed') stages.push(verdict.record.stage);
    if (verdict.kind === 'dropped') dropped++;
  }
  return { stages, dropped };
}

void describe('ConsoleStatusLines', () => {
  void it('PID 1: records before the config are held, then written signed and in order', () => {
    const config: { statusKey?: string } = {};
    const lines = ConsoleStatusLines.untilConfig(() => config.statusKey);
    let text = '';
    for (const stage of ['kernel', 'agent', 'modules'] as const) {
      const out = lines.linesFor(at(stage));
      assert.equal(out, '', `${stage} is held`);
      text += out;
    }
    config.statusKey = KEY_TEXT; // as Init sets #config just before reporting the config stage
    text += lines.linesFor(at('config'));
    text += lines.linesFor(at('network'));
    assert.deepEqual(hostView(text, KEY), {
      stages: ['kernel', 'agent', 'modules', 'config', 'network'],
      dropped: 0,
    });
  });

  void it('PID 1 with no valid config: held lines come out unsigned at the config stage', () => {
    const lines = ConsoleStatusLines.untilConfig(() => undefined);
    assert.equal(lines.linesFor(at('agent')), '');
    const text = lines.linesFor(at('config', 'failed'));
    assert.deepEqual(hostView(text, undefined).stages, ['agent', 'config'], 'a host that gave no key');
    assert.deepEqual(hostView(text, KEY), { stages: [], dropped: 2 }, 'a host that gave one believes none');
  });

  void it('--dev: the key is known from the start, so nothing is held', () => {
    const lines = ConsoleStatusLines.withKey(KEY_TEXT);
    const text = lines.linesFor(at('agent')) + lines.linesFor(at('config'));
    assert.deepEqual(hostView(text, KEY).stages, ['agent', 'config']);
    const unsigned = ConsoleStatusLines.withKey(undefined);
    assert.deepEqual(hostView(unsigned.linesFor(at('agent')), undefined).stages, ['agent']);
  });

  void it('a key that does not decode gives unsigned lines rather than none', () => {
    const lines = ConsoleStatusLines.withKey('short');
    assert.deepEqual(hostView(lines.linesFor(at('agent')), undefined).stages, ['agent']);
  });
});
