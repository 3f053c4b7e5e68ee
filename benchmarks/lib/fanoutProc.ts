/**
 * CPU and memory of processes from /proc (Linux): a process's CPU time counts all its threads (utime + stime of
 * /proc/PID/stat), so the server's wrtc encoder threads are in the server's figure and each mediasoup worker (a child
 * process) has its own.
 */
import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on Linux for every mainstream architecture). */
const TICKS_PER_S = 100;

export interface ProcSample {
  pid: number;
  /** Process name (/proc/PID/comm, at most 15 characters). */
  comm: string;
  /** utime + stime, seconds. */
  cpuS: number;
  /** Resident set size, MB. */
  rssMb: number;
  /** Wall clock of the sample, ms (performance.now()). */
  at: number;
}

/** One sample of a process, or null when it is gone. */
export function sampleProc(pid: number): ProcSample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm is in parentheses and may contain spaces: the fields after it start after the last ')'.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    const cpuS = (Number(f[11]) + Number(f[12])) / TICKS_PER_S;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return { pid, comm, cpuS, rssMb: m ? Number(m[1]) / 1024 : 0, at: performance.now() };
  } catch {
    return null;
  }
}

/** The direct children of a process (from every thread's /proc/PID/task/TID/children). */
export function childPids(pid: number): number[] {
  const out = new Set<number>();
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) {
        if (c) out.add(Number(c));
      }
    } catch {
      // The thread ended between readdir and read: it has no children to report.
    }
  }
  return [...out];
}

/** CPU use between two samples of the same process, percent of one core. */
export function cpuPercent(a: ProcSample, b: ProcSample): number {
  const dt = (b.at - a.at) / 1000;
  return dt > 0 ? ((b.cpuS - a.cpuS) / dt) * 100 : 0;
}

/** Busy and total CPU time of the whole machine, seconds (the first line of /proc/stat: all cores). */
export function machineCpu(): { busyS: number; totalS: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice: idle + iowait are not busy; guest times are
  // already inside user and nice.
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busyS: (total - idle) / TICKS_PER_S, totalS: total / TICKS_PER_S };
}
