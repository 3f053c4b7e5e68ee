/**
 * The benchmarks' one argument parser: `--name value` options and `--name` flags, declared once per benchmark as a
 * typed spec (camelCase keys; the flag is the kebab-case form: `quietWait` is `--quiet-wait`). Unknown flags, a
 * missing value, a number that is not one or out of range, a value not among the choices: a UsageError that names the
 * benchmark, the flag and what was wrong, with the benchmark's usage (benchmarks/run.ts prints it and exits 2).
 */

/** A bad command line: `message` says what, `usage` lists the benchmark's flags with their defaults. */
export class UsageError extends TypeError {
  readonly usage: string;
  constructor(message: string, usage: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}

interface NumberSpec {
  readonly type: 'number';
  /** undefined: the option is optional (the value is undefined when not given). */
  readonly default: number | undefined;
  readonly min?: number;
  readonly positive?: boolean;
  readonly integer?: boolean;
}
interface StringSpec {
  readonly type: 'string';
  readonly default: string | undefined;
  readonly choices?: readonly string[];
}
interface ListSpec {
  readonly type: 'list';
  /** Comma-separated, as on the command line. */
  readonly default: string;
}
interface NumbersSpec {
  readonly type: 'numbers';
  readonly default: string;
}
interface FlagSpec {
  readonly type: 'flag';
}
export type OptionSpec = NumberSpec | StringSpec | ListSpec | NumbersSpec | FlagSpec;

/** `--name N` (a finite number; `min`, `positive` (> 0), `integer` checked). */
export function num<D extends number | undefined>(
  def: D,
  o: { min?: number; positive?: boolean; integer?: boolean } = {},
) {
  return { type: 'number' as const, default: def, ...o };
}
/** `--name TEXT` (one of `choices` when given). */
export function str<D extends string | undefined>(def: D, choices?: readonly string[]) {
  return { type: 'string' as const, default: def, ...(choices ? { choices } : {}) };
}
/** `--name a,b,c`: a comma-separated list (empty items dropped). */
export function list(def: string) {
  return { type: 'list' as const, default: def };
}
/** `--name 1,2,4`: a comma-separated list of numbers. */
export function numList(def: string) {
  return { type: 'numbers' as const, default: def };
}
/** `--name` alone: true when present. */
export function flag() {
  return { type: 'flag' as const };
}

type ValueOf<S> = S extends { type: 'number'; default: infer D }
  ? D extends number
    ? number
    : number | undefined
  : S extends { type: 'string'; default: infer D }
    ? D extends string
      ? string
      : string | undefined
    : S extends { type: 'list' }
      ? string[]
      : S extends { type: 'numbers' }
        ? number[]
        : boolean;
export type Options<S extends Record<string, OptionSpec>> = { -readonly [K in keyof S]: ValueOf<S[K]> };

const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** The usage line of a benchmark: every flag with its default. */
export function usage(bench: string, spec: Record<string, OptionSpec>): string {
  const parts = Object.entries(spec).map(([key, s]) => {
    const name = `--${kebab(key)}`;
    if (s.type === 'flag') return `[${name}]`;
    const def = s.default === undefined ? '' : ` (${s.default === '' ? '""' : String(s.default)})`;
    const what = s.type === 'string' && s.choices ? s.choices.join('|') : s.type === 'number' ? 'N' : 'VALUE';
    return `[${name} ${what}${def}]`;
  });
  return `usage: npm run bench -- ${bench} ${parts.join(' ')}`;
}

/** Parses `args` against `spec`; throws UsageError on anything it does not know or cannot read. */
export function parseOptions<S extends Record<string, OptionSpec>>(
  bench: string,
  args: readonly string[],
  spec: S,
): Options<S> {
  const byFlag = new Map(Object.keys(spec).map((k) => [`--${kebab(k)}`, k]));
  const fail = (what: string): never => {
    throw new UsageError(`${bench}: ${what}`, usage(bench, spec));
  };
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(spec)) {
    out[key] =
      s.type === 'flag'
        ? false
        : s.type === 'list' || s.type === 'numbers'
          ? value(`--${kebab(key)}`, s.default, s, fail)
          : s.default;
  }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const key = byFlag.get(a);
    if (key === undefined) fail(`unknown argument ${JSON.stringify(a)}`);
    const s = spec[key!]!;
    if (s.type === 'flag') {
      out[key!] = true;
      continue;
    }
    const v = args[++i];
    if (v === undefined) fail(`${a} needs a value`);
    out[key!] = value(a, v!, s, fail);
  }
  return out as Options<S>;
}

function split(v: string): string[] {
  return v.split(',').filter((x) => x !== '');
}

function value(name: string, v: string, s: Exclude<OptionSpec, FlagSpec>, fail: (what: string) => never): unknown {
  if (s.type === 'list') return split(v);
  if (s.type === 'numbers') {
    return split(v).map((x) => {
      const n = Number(x);
      if (!Number.isFinite(n)) fail(`${name} takes numbers (got ${JSON.stringify(x)})`);
      return n;
    });
  }
  if (s.type === 'string') {
    if (s.choices && !s.choices.includes(v))
      fail(`${name} must be one of ${s.choices.join(', ')} (got ${JSON.stringify(v)})`);
    return v;
  }
  const n = v.trim() === '' ? Number.NaN : Number(v);
  if (!Number.isFinite(n)) fail(`${name} must be a number (got ${JSON.stringify(v)})`);
  if (s.integer && !Number.isInteger(n)) fail(`${name} must be a whole number (got ${v})`);
  if (s.min !== undefined && n < s.min) fail(`${name} must be at least ${s.min} (got ${v})`);
  if (s.positive && !(n > 0)) fail(`${name} must be a positive number (got ${v})`);
  return n;
}
