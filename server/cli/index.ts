/**
 * The `avatar` command line: `avatar <command> [options]`. Each command lives in server/cli/<command>.ts and
 * exports `run(argv: string[]): Promise<number>` (the exit code).
 */
const commands: Record<string, string> = {
  track: 'face tracking: --input FILE --json OUT [--overlay OUT.mp4|png]',
  render: 'offline render: --portrait P --driving D.mp4 --out O.mp4',
  eval: 'quality scores: [--portrait P] --driving D.mp4 [--self] --json OUT.json',
  verify: 'provenance: FILE [--json OUT] [--manifest M]: watermark, signature and file hash',
};

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (!cmd || cmd === '--help' || cmd === '-h' || !(cmd in commands)) {
    process.stderr.write('usage: avatar <command> [options]\n\n');
    for (const [name, help] of Object.entries(commands)) process.stderr.write(`  ${name.padEnd(8)} ${help}\n`);
    return cmd && cmd !== '--help' && cmd !== '-h' ? 2 : 0;
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
