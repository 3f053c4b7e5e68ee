/**
 * A tiny structured logger: one JSON line per record on stderr, a child logger per module.
 * Messages are static; ids go in fields. Level from config (set once at start-up by the config module).
 * Credentials in string fields and error messages (a URL's password, ?key= / ?token= values) are redacted: a safety
 * net under the rule that secrets are never logged.
 */
import { redactText } from './util/redact.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
let current: LogLevel = 'info';
let threshold = order.info;

/** Sets the process-wide (per thread) level; worker threads get the main thread's level from their host. */
export function setLogLevel(level: LogLevel): void {
  current = level;
  threshold = order[level];
}

export function getLogLevel(): LogLevel {
  return current;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(module: string): Logger;
}

function write(level: LogLevel, module: string, msg: string, fields?: Record<string, unknown>): void {
  if (order[level] < threshold) return;
  const rec: Record<string, unknown> = { t: new Date().toISOString(), level, module, msg };
  if (fields) {
    for (const [k, v] of Object.entries(fields))
      rec[k] =
        v instanceof Error
          ? { name: v.name, message: redactText(v.message) }
          : typeof v === 'string'
            ? redactText(v)
            : v;
  }
  process.stderr.write(JSON.stringify(rec) + '\n');
}

export function createLogger(module: string): Logger {
  return {
    debug: (m, f) => write('debug', module, m, f),
    info: (m, f) => write('info', module, m, f),
    warn: (m, f) => write('warn', module, m, f),
    error: (m, f) => write('error', module, m, f),
    child: (sub) => createLogger(`${module}.${sub}`),
  };
}
