/**
 * A stand-in entry point for the single-executable build (init-image/build-agent.mjs) until the agent's own
 * main is packaged: loads both natives through loadNative, runs /bin/echo on a node-pty terminal, prints ok.
 *
 *   build/image/tether-smoke            → "ok sea=true node=v24… pty=hello-from-pty exit=0 …"
 *   build/image/tether-smoke --init-only → exits right after module init and loading natives (startup timing)
 */
import * as pty from 'node-pty';
import { isSea } from '../agent/src/sys/native.ts';
import { realSys, SYS } from '../agent/src/sys/sys.ts';

const sys = realSys();
if (process.argv.includes('--init-only')) process.exit(0);

const bootMs = sys.bootTimeMs();
const limit = sys.getrlimit(SYS.RLIMIT_NOFILE);
const term = pty.spawn('/bin/echo', ['hello-from-pty'], {
  cols: 80,
  rows: 24,
  env: { PATH: '/usr/bin:/bin' },
});
let output = '';
term.onData((data) => (output += data));
term.onExit(({ exitCode, signal }) => {
  const ok = exitCode === 0 && output.trim() === 'hello-from-pty';
  process.stdout.write(
    `${ok ? 'ok' : 'FAIL'} sea=${isSea()} node=${process.version} pty=${output.trim()} exit=${exitCode}` +
      ` signal=${signal ?? 0} nofile=${limit.soft} boottime=${Math.round(bootMs)}ms\n`,
  );
  process.exitCode = ok ? 0 : 1;
});
