/**
 * Run by sys.test.ts under `unshare -u -m -n --propagation private` (root only): exercises the calls that change
 * the machine, inside throwaway namespaces, and prints one JSON object of what it saw.
 */
import { mkdtempSync, readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import * as path from 'node:path';
import { realSys, SYS, SyscallError } from '../../../agent/src/sys/sys.ts';

const sys = realSys();
const out: Record<string, unknown> = {};

function failure(fn: () => void): { errnoName: string; message: string } | null {
  try {
    fn();
    return null;
  } catch (error) {
    if (!(error instanceof SyscallError)) throw error;
    return { errnoName: error.errnoName, message: error.message };
  }
}

sys.sethostname('tether-test-host');
out['hostname'] = hostname();
out['hostnameTooLong'] = failure(() => sys.sethostname('x'.repeat(100)));

const dir = mkdtempSync(path.join(tmpdir(), 'tether-sys-'));
const a = path.join(dir, 'a');
const b = path.join(dir, 'b');
mkdirSync(a);
mkdirSync(b);
sys.mount('tmpfs', a, 'tmpfs', SYS.MS_NOSUID | SYS.MS_NODEV, 'size=1m,mode=0755');
writeFileSync(path.join(a, 'file'), 'hello');
sys.mount(a, b, null, SYS.MS_BIND);
out['bindSees'] = readFileSync(path.join(b, 'file'), 'utf8');
out['mountinfoHasTmpfs'] = readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${a} `);
sys.umount2(b, SYS.MNT_DETACH);
sys.umount2(a);
out['afterUmount'] = existsSync(path.join(a, 'file'));
out['badFstype'] = failure(() => sys.mount('none', a, 'no-such-fs', 0));
out['umountNotMounted'] = failure(() => sys.umount2(a));
out['pivotNotMount'] = failure(() => sys.pivotRoot(a, path.join(a, 'old')));

sys.ifUp('lo');
sys.ifSetAddress('lo', '127.0.0.1', 8);
out['lo'] = sys.ifList().find((i) => i.name === 'lo');
out['noSuchIf'] = failure(() => sys.ifUp('nosuch0'));
out['routeUnreachable'] = failure(() => sys.addDefaultRoute('10.9.8.7'));

process.stdout.write(JSON.stringify(out));
