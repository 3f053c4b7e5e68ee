// uWebSockets.js 20.57's Linux x64 builds (@btc-vision/uwebsockets.js, as upstream's since v20.55) are linked on
// Ubuntu 24.04 and ask glibc for GLIBC_2.38 for three functions only: the C23 variants __isoc23_sscanf,
// __isoc23_strtol and __isoc23_strtoul (C23's versions also accept a "0b" binary prefix; nothing else differs).
// On an older glibc (Debian 12 has 2.36) the addon then fails to load. Where the running glibc is older than 2.38,
// this rewrites the three symbol references to the classic functions (each name is a suffix of its C23 name, so only
// the name offsets change) and the GLIBC_2.38 version requirement to GLIBC_2.2.5. Only files whose sha256 is pinned
// below are touched, and the result must match its pinned sha256; anything else is left as it is, with a message.
// Run by `npm install` / `npm ci` (postinstall) and by scripts/setup.sh; idempotent.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'node_modules', 'uWebSockets.js');

/** sha256 of each upstream file and of its patched form. */
const pinned = {
  'uws_linux_x64_115.node': {
    original: '5b126ee00bf754b02e97e4c27090365a8562c5820c93f93918ac2212d4503e91',
    patched: '0fdb9722352c4e0f519b42ad8b0c2bd4544b2c27484c1d49ddf143bfd1637cbb',
  },
  'uws_linux_x64_127.node': {
    original: '4b55b1f2cb7a7913febbb65a89496412b96af77e838552980092ba6b33723aac',
    patched: '4ea0943df7d3202b3ada5eb01c40c37c63bb192fd9c7b1abae5082c5cc1f2803',
  },
  'uws_linux_x64_137.node': {
    original: '98128405dba2fb608448e921a979530f70c946a2cc9889c15f2fa70c2d00ab05',
    patched: '8d5817f3a52803cb69a0e3d54f6487b533fda603aa63dab8ea09f9762d992e0b',
  },
  'uws_linux_x64_141.node': {
    original: '813d788b347c6fd76b779d8932311ec05a044e612b4b83af220f16e6ea789683',
    patched: '395fee5c7a644ad0964cc26651b5dd12833c147123c69dbe938fe17eb13a2760',
  },
};
const c23 = ['__isoc23_sscanf', '__isoc23_strtol', '__isoc23_strtoul'];
const prefix = '__isoc23_'.length;

function glibcOlderThan238() {
  const v = process.report?.getReport().header.glibcVersionRuntime;
  if (typeof v !== 'string') return false; // not glibc (macOS, Windows, musl): nothing to do
  const [major, minor] = v.split('.').map(Number);
  return major < 2 || (major === 2 && minor < 38);
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** The ELF System V hash of a version name (vna_hash). */
function elfHash(name) {
  let h = 0;
  for (const c of Buffer.from(name, 'latin1')) {
    h = ((h << 4) + c) >>> 0;
    const g = h & 0xf0000000;
    if (g) h ^= g >>> 24;
    h = (h & ~g) >>> 0;
  }
  return h;
}

/** Patches an ELF64 little-endian shared object in memory; returns how many references it rewrote. */
function patch(b) {
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const sections = Array.from({ length: b.readUInt16LE(0x3c) }, (_, i) => {
    const o = shoff + i * shentsize;
    return {
      type: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 0x18)),
      size: Number(b.readBigUInt64LE(o + 0x20)),
      link: b.readUInt32LE(o + 0x28),
      entsize: Number(b.readBigUInt64LE(o + 0x38)),
    };
  });
  const dynsym = sections.find((s) => s.type === 11); // SHT_DYNSYM
  const verneed = sections.find((s) => s.type === 0x6ffffffe); // SHT_GNU_verneed
  if (!dynsym || !verneed) throw new Error('no .dynsym or .gnu.version_r');
  const dynstr = sections[dynsym.link];
  const str = (off) => {
    const start = dynstr.offset + off;
    return b.toString('latin1', start, b.indexOf(0, start));
  };
  let count = 0;
  for (let o = dynsym.offset; o < dynsym.offset + dynsym.size; o += dynsym.entsize) {
    if (c23.includes(str(b.readUInt32LE(o)))) {
      b.writeUInt32LE(b.readUInt32LE(o) + prefix, o);
      count++;
    }
  }
  const base = b.indexOf(Buffer.from('\0GLIBC_2.2.5\0', 'latin1'), dynstr.offset) - dynstr.offset + 1;
  if (base <= 0 || base >= dynstr.size) throw new Error('no GLIBC_2.2.5 in .dynstr');
  for (let o = verneed.offset; ;) {
    let a = o + b.readUInt32LE(o + 8);
    for (let i = b.readUInt16LE(o + 2); i > 0; i--) {
      if (str(b.readUInt32LE(a + 8)) === 'GLIBC_2.38') {
        b.writeUInt32LE(elfHash('GLIBC_2.2.5'), a);
        b.writeUInt32LE(base, a + 8);
        count++;
      }
      const next = b.readUInt32LE(a + 12);
      if (!next) break;
      a += next;
    }
    const next = b.readUInt32LE(o + 12);
    if (!next) break;
    o += next;
  }
  return count;
}

if (process.platform === 'linux' && process.arch === 'x64' && glibcOlderThan238() && fs.existsSync(dir)) {
  for (const [name, { original, patched }] of Object.entries(pinned)) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) continue;
    const buf = fs.readFileSync(file);
    const hash = sha256(buf);
    if (hash === patched) continue;
    if (hash !== original) {
      console.warn(`uws-glibc: ${name} is not the pinned uWebSockets.js 20.57.0 build; left as it is`);
      continue;
    }
    const count = patch(buf);
    if (count !== c23.length + 1 || sha256(buf) !== patched) {
      console.warn(`uws-glibc: patching ${name} gave an unexpected result; left as it is`);
      continue;
    }
    fs.writeFileSync(file, buf);
    console.log(`uws-glibc: ${name} patched for glibc < 2.38 (${c23.join(', ')} -> classic functions)`);
  }
}
