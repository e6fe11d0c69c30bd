/** tetherctl: the host-side command line for what the docker CLI cannot show. */
import { describeError, isTetherError } from '../../../protocol/src/errors/errors.ts';
import { AGENT_USAGE, runAgentCommand } from './agent-command.ts';
import { DAEMON_USAGE, runHealthCommand, runVmListCommand } from './daemon-command.ts';
import { runVmCommand, VM_USAGE } from './vm-command.ts';

const USAGE = `usage: tetherctl <group> ...

${AGENT_USAGE}

${VM_USAGE}

${DAEMON_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  switch (group) {
    case 'agent':
      return runAgentCommand(rest);
    case 'vm':
      return rest[0] === 'ls' ? runVmListCommand(rest.slice(1)) : runVmCommand(rest);
    case 'health':
      return runHealthCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return group === undefined ? 2 : 0;
    default:
      process.stderr.write(`tetherctl: unknown command ${JSON.stringify(group)}\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`tetherctl: ${describeError(error)}\n`);
    process.exitCode = isTetherError(error, 'TETHER_USAGE') ? 2 : 125;
  },
);
