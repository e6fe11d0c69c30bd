import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { validateConfig } from '../../../../protocol/src/config/config.ts';
import { generateChannelKeys } from '../../../../hostside/src/vm/channel-keys.ts';

const { utils } = ssh2;

void describe('channel keys', () => {
  void it('pair up: the agent key matches the pinned public key, and the config accepts both', () => {
    // Enough pairs that ssh2's 1-in-256 unparseable key would show up now and then without the redraw.
    for (let i = 0; i < 40; i++) {
      const keys = generateChannelKeys('c0ffee' + i);
      const agent = utils.parseKey(keys.agentHostKey);
      const pinned = utils.parseKey(keys.credentials.hostPublicKey);
      const client = utils.parseKey(keys.credentials.privateKey);
      const authorized = utils.parseKey(keys.clientPublicKey);
      for (const key of [agent, pinned, client, authorized]) assert.ok(!(key instanceof Error), String(key));
      const one = (k: typeof agent) =>
        (Array.isArray(k) ? k[0] : k) as Exclude<typeof agent, Error | unknown[]>;
      assert.ok(one(agent).getPublicSSH().equals(one(pinned).getPublicSSH()));
      assert.ok(one(client).getPublicSSH().equals(one(authorized).getPublicSSH()));
      validateConfig({
        version: 1,
        id: 'x',
        channel: { hostKey: keys.agentHostKey, authorizedKeys: [keys.clientPublicKey] },
      });
    }
  });
});
