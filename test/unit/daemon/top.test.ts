/** docker top's parsing of ps output inside a container VM: Docker's Titles/Processes shape. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePsOutput } from '../../../hostside/src/daemon/api/docker/top.ts';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';

// busybox ps in the VM: the agent as PID 1, kernel threads in brackets, the container's process, ps itself.
const BUSYBOX_PS = `PID   USER     TIME  COMMAND
    1 root      0:04 /tether
    2 root      0:00 [kthreadd]
    3 root      0:00 [rcu_gp]
   97 root      0:00 sh -c i=0; while true; do echo "tick $i"; sleep 0.3; done
  130 root      0:00 sleep 0.3
  131 root      0:00 ps
`;

void describe('parsePsOutput', () => {
  void it('splits rows into the header columns, the last keeping its spaces', () => {
    const top = parsePsOutput(BUSYBOX_PS, 131);
    assert.deepEqual(top.Titles, ['PID', 'USER', 'TIME', 'COMMAND']);
    assert.deepEqual(top.Processes, [
      ['1', 'root', '0:04', '/tether'],
      ['97', 'root', '0:00', 'sh -c i=0; while true; do echo "tick $i"; sleep 0.3; done'],
      ['130', 'root', '0:00', 'sleep 0.3'],
    ]);
  });

  void it('leaves out kernel threads and its own ps, keeps everything when the pid is unknown', () => {
    const top = parsePsOutput(BUSYBOX_PS);
    assert.equal(top.Processes.length, 4);
    assert.ok(top.Processes.every((row) => !row[3]!.startsWith('[')));
  });

  void it('keeps short rows short and finds PID in any column (ps -o user,pid,args)', () => {
    const top = parsePsOutput(
      'USER PID COMMAND\nroot 1 /tether\nroot 7\ntester 40 ps -o user,pid,args\n',
      40,
    );
    assert.deepEqual(top.Processes, [
      ['root', '1', '/tether'],
      ['root', '7', ''],
    ]);
  });

  void it('refuses empty output with TETHER_SPAWN_FAILED', () => {
    assert.throws(
      () => parsePsOutput('\n'),
      (error) => isTetherError(error, 'TETHER_SPAWN_FAILED'),
    );
  });
});
