/**
 * The `avatar` command line: `avatar <command> [options]`. Each command lives in server/cli/<command>.ts and
 * exports `run(argv: string[]): Promise<number>` (the exit code).
 *
 * Exit codes: 0 done, 1 failed, 2 usage error. A usage error names what was wrong with a stable code in brackets
 * (`avatar: [UNKNOWN_COMMAND] ...`) on stderr; `--help` and `--version` write to stdout.
 */
import { packageInfo } from '../util/packageInfo.js';

const commands: Record<string, string> = {
  serve: 'start the server (the same as npm start); configuration from the environment',
  track: 'face tracking: --input FILE --json OUT [--overlay OUT.mp4|png]',
  render: 'offline render: --portrait P --driving D.mp4 --out O.mp4',
  eval: 'quality scores: [--portrait P] --driving D.mp4 [--self] --json OUT.json',
  verify: 'provenance: FILE [--json OUT] [--manifest M]: watermark, signature and file hash',
};

/** The stable codes of the top-level usage errors. */
export type CliUsageCode = 'NO_COMMAND' | 'UNKNOWN_COMMAND' | 'UNKNOWN_OPTION';

function usage(): string {
  const lines = ['usage: avatar <command> [options]', '       avatar --help | --version', '', 'commands:'];
  for (const [name, help] of Object.entries(commands)) lines.push(`  ${name.padEnd(8)} ${help}`);
  lines.push('', 'avatar <command> --help describes a command.', '');
  return lines.join('\n');
}

function usageError(code: CliUsageCode, message: string): number {
  process.stderr.write(`avatar: [${code}] ${message}\n\n${usage()}`);
  return 2;
}

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === undefined) return usageError('NO_COMMAND', 'no command given');
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === '-V') {
    process.stdout.write(`${packageInfo().version}\n`);
    return 0;
  }
  if (cmd.startsWith('-')) return usageError('UNKNOWN_OPTION', `unknown option "${cmd}"`);
  if (!Object.hasOwn(commands, cmd)) {
    return usageError('UNKNOWN_COMMAND', `unknown command "${cmd}" (commands: ${Object.keys(commands).join(', ')})`);
  }
  const mod = (await import(`./${cmd}.js`)) as { run: (argv: string[]) => Promise<number> };
  return mod.run(rest);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as { code?: string; message?: string };
    process.stderr.write(`avatar: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}\n`);
    process.exit(1);
  },
);
