/**
 * The container image and its Kubernetes manifest, checked statically (no container runtime here): what goes into the
 * build context, who the image runs as, what it runs, its health check, and that the manifest asks only for what the
 * image has and can run with a read-only root filesystem.
 */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/media.js';

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions per stage (comments dropped, continuation lines joined). */
function parseDockerfile(text: string): Instruction[][] {
  const joined = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  const stages: Instruction[][] = [];
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const ins = { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (ins.op === 'FROM') stages.push([]);
    stages.at(-1)?.push(ins);
  }
  return stages;
}

const dockerfile = parseDockerfile(await readFile(path.join(repoRoot, 'infra', 'Dockerfile'), 'utf8'));
const runtime = dockerfile.at(-1)!;
const all = (stage: Instruction[], op: string): string[] => stage.filter((i) => i.op === op).map((i) => i.args);

interface K8sContainer {
  name: string;
  env?: { name: string; value?: string }[];
  securityContext?: Record<string, unknown>;
  readinessProbe?: { httpGet?: { path: string } };
  livenessProbe?: { httpGet?: { path: string } };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface K8sDoc {
  kind: string;
  metadata: { name: string };
  spec: {
    template?: {
      spec: {
        securityContext?: Record<string, unknown>;
        containers: K8sContainer[];
        volumes?: { name: string; emptyDir?: unknown }[];
      };
    };
    volumeClaimTemplates?: { metadata: { name: string } }[];
  };
}

/** The manifest's documents, read with Debian's python3-yaml (scripts/setup.sh installs it). */
function loadManifest(file: string): K8sDoc[] {
  const r = spawnSync(
    '/usr/bin/python3',
    ['-c', 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))', file],
    { encoding: 'utf8' },
  );
  expect(r.status, `python3-yaml is needed (bash scripts/setup.sh installs it): ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as K8sDoc[];
}

describe('infra/Dockerfile and .dockerignore', () => {
  it('.dockerignore keeps dependencies, history, data, keys, caches and third-party frames out', async () => {
    const lines = (await readFile(path.join(repoRoot, '.dockerignore'), 'utf8'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.replace(/\/$/, ''));
    for (const p of [
      'node_modules',
      '.git',
      'data',
      'dist',
      '**/*.pem',
      '**/*.key',
      '**/operator-key',
      '.env',
      'models/face/.cache',
      'benchmarks/results/quality-sheets',
      'test-data/media',
      '.cache',
      'tmp_*',
    ]) {
      expect(lines, p).toContain(p);
    }
  });

  it('builds in a separate stage and runs compiled JavaScript as a numeric non-root user', async () => {
    expect(dockerfile.length).toBeGreaterThanOrEqual(2);
    const build = dockerfile[0]!;
    expect(all(build, 'RUN')).toContain('npm run build');
    const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts.build).toMatch(/tsc -p tsconfig\.build\.json/);
    const tsBuild = JSON.parse(await readFile(path.join(repoRoot, 'tsconfig.build.json'), 'utf8')) as {
      compilerOptions: { outDir: string };
    };

    const users = all(runtime, 'USER');
    expect(users.length).toBe(1);
    const uid = users[0]!.split(':')[0]!;
    expect(uid).toMatch(/^\d+$/); // numeric: Kubernetes' runAsNonRoot can only check a number
    expect(Number(uid)).toBeGreaterThan(0);
    // USER comes before CMD, and nothing after it runs as root.
    expect(runtime.findIndex((i) => i.op === 'USER')).toBeLessThan(runtime.findIndex((i) => i.op === 'CMD'));

    const cmd = JSON.parse(all(runtime, 'CMD')[0]!) as string[];
    expect(cmd).toEqual(['node', `${tsBuild.compilerOptions.outDir}/server/main.js`]);
    expect(runtime.map((i) => i.args).join('\n')).not.toMatch(/\btsx\b/);
    // Only named build outputs go into the runtime stage: never the whole context.
    expect(all(runtime, 'COPY')).not.toContain('. .');
    expect(all(runtime, 'COPY').some((a) => a.startsWith(`--from=build /src/${tsBuild.compilerOptions.outDir} `))).toBe(
      true,
    );
  });

  it('has a HEALTHCHECK on /healthz and the malloc setting npm start uses', () => {
    const hc = all(runtime, 'HEALTHCHECK');
    expect(hc.length).toBe(1);
    expect(hc[0]).toContain('/healthz');
    expect(all(runtime, 'ENV').join(' ')).toContain('MALLOC_MMAP_THRESHOLD_=131072');
  });
});

describe('infra/k8s/deployment.yaml', () => {
  const docs = loadManifest(path.join(repoRoot, 'infra', 'k8s', 'deployment.yaml'));
  const avatar = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === 'live-avatar')!;
  const pod = avatar.spec.template!.spec;
  const container = pod.containers.find((c) => c.name === 'avatar')!;

  it('runs as the image user, non-root, with a read-only root filesystem', () => {
    const sc = { ...pod.securityContext, ...container.securityContext };
    expect(sc.runAsNonRoot).toBe(true);
    expect(String(sc.runAsUser)).toBe(all(runtime, 'USER')[0]!.split(':')[0]);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.allowPrivilegeEscalation).toBe(false);
  });

  it('mounts a writable volume at every place the server writes: the data dir and /tmp', () => {
    const dataDir = /AVATAR_DATA_DIR=(\S+)/.exec(all(runtime, 'ENV').join(' '))?.[1];
    expect(dataDir).toBe('/data');
    const mounts = new Map((container.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
    const claims = (avatar.spec.volumeClaimTemplates ?? []).map((c) => c.metadata.name);
    expect(claims).toContain(mounts.get(dataDir!));
    const tmp = (pod.volumes ?? []).find((v) => v.name === mounts.get('/tmp'));
    expect(tmp?.emptyDir).toBeDefined();
  });

  it('probes readiness on /readyz apart from liveness on /healthz', () => {
    expect(container.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(container.livenessProbe?.httpGet?.path).toBe('/healthz');
  });

  it('asks for the SFU only when the image is built with the mediasoup worker', () => {
    const fanout = container.env?.find((e) => e.name === 'FANOUT')?.value ?? 'auto';
    if (fanout !== 'sfu') return;
    const arg = dockerfile[0]!.map((i) => i.args).find((a) => a.startsWith('MEDIASOUP_WORKER='));
    expect(arg, 'the build stage must fetch the worker by default').toBe('MEDIASOUP_WORKER=fetch');
    expect(all(runtime, 'COPY')).toContain('--from=build /worker/ ./node_modules/mediasoup/worker/out/Release/');
  });
});
