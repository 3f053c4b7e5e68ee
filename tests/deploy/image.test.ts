/**
 * The container image and its Kubernetes manifest, checked statically (no container runtime here): what goes into the
 * build context, who the image runs as, what it runs, its health check, and that the manifest asks only for what the
 * image has and can run with a read-only root filesystem. What the deployments expose (issue 20, item 7): Redis needs a
 * password (from a secret, carried by AVATAR_REDIS_URL), the internal API has its own port that no Service, Ingress or
 * published port carries and that NetworkPolicies (k8s) or a private network (compose) keep to the avatar nodes, and
 * Prometheus and Grafana are not published beyond 127.0.0.1.
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
  args?: string[];
  ports?: { containerPort: number; name?: string }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  securityContext?: Record<string, unknown>;
  readinessProbe?: { httpGet?: { path: string } };
  livenessProbe?: { httpGet?: { path: string } };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PolicyPeer {
  podSelector?: { matchLabels?: Record<string, string> };
  ipBlock?: { cidr: string };
  namespaceSelector?: unknown;
}
interface PolicyRule {
  from?: PolicyPeer[];
  ports?: { protocol?: string; port: number; endPort?: number }[];
}
interface K8sDoc {
  kind: string;
  metadata: { name: string };
  spec: {
    selector?: Record<string, unknown>;
    ports?: { port: number; targetPort?: number | string }[];
    podSelector?: { matchLabels?: Record<string, string> };
    policyTypes?: string[];
    ingress?: PolicyRule[];
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

describe('what the deployments expose (issue 20, item 7)', () => {
  const docs = loadManifest(path.join(repoRoot, 'infra', 'k8s', 'deployment.yaml'));
  const avatar = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === 'live-avatar')!;
  const container = avatar.spec.template!.spec.containers.find((c) => c.name === 'avatar')!;
  const env = new Map((container.env ?? []).map((e) => [e.name, e]));
  const redisDeploy = docs.find((d) => d.kind === 'Deployment' && d.metadata.name === 'live-avatar-redis')!;
  const redis = redisDeploy.spec.template!.spec.containers[0]!;
  const internalPort = Number(env.get('AVATAR_INTERNAL_PORT')?.value);
  const policies = docs.filter((d) => d.kind === 'NetworkPolicy');
  const policyFor = (app: string): K8sDoc | undefined =>
    policies.find((p) => p.spec.podSelector?.matchLabels?.app === app);
  /** The ingress rules of `policy` that admit `port` (TCP). */
  const admitting = (policy: K8sDoc, port: number): PolicyRule[] =>
    (policy.spec.ingress ?? []).filter((r) => (r.ports ?? []).some((p) => p.port === port && p.protocol !== 'UDP'));
  /** Only the avatar pods: by label, or (hostNetwork) by an address block; never everyone or another namespace. */
  const onlyAvatarPods = (rules: PolicyRule[]): void => {
    expect(rules.length).toBeGreaterThan(0);
    for (const r of rules) {
      expect(r.from?.length, 'a rule without `from` admits everyone').toBeGreaterThan(0);
      for (const peer of r.from!) {
        expect(peer.namespaceSelector).toBeUndefined();
        if (peer.podSelector) expect(peer.podSelector.matchLabels).toEqual({ app: 'live-avatar' });
        else expect(peer.ipBlock?.cidr).not.toBe('0.0.0.0/0');
      }
    }
  };

  it('k8s: Redis requires a password from the secret, and AVATAR_REDIS_URL carries it', () => {
    const pass = (redis.env ?? []).find((e) => e.name === 'REDIS_PASSWORD');
    expect(pass?.valueFrom?.secretKeyRef).toEqual({ name: 'live-avatar', key: 'redis-password' });
    const args = redis.args ?? [];
    expect(args[args.indexOf('--requirepass') + 1]).toBe('$(REDIS_PASSWORD)');
    expect(env.get('REDIS_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({ name: 'live-avatar', key: 'redis-password' });
    // $(VAR) expands only from variables defined earlier in the list.
    const names = (container.env ?? []).map((e) => e.name);
    expect(names.indexOf('REDIS_PASSWORD')).toBeLessThan(names.indexOf('AVATAR_REDIS_URL'));
    expect(env.get('AVATAR_REDIS_URL')?.value).toMatch(/^redis:\/\/:\$\(REDIS_PASSWORD\)@live-avatar-redis:6379$/);
  });

  it('k8s: the internal API has its own port, which no Service carries, and the node URL points there', () => {
    expect(internalPort).toBeGreaterThan(0);
    expect(internalPort).not.toBe(8080);
    expect(env.get('AVATAR_NODE_URL')?.value).toBe(`http://$(POD_IP):${internalPort}`);
    expect(env.get('AVATAR_INTERNAL_HOST')?.value).toBe('$(POD_IP)');
    for (const svc of docs.filter((d) => d.kind === 'Service')) {
      for (const p of svc.spec.ports ?? []) {
        expect(p.port, svc.metadata.name).not.toBe(internalPort);
        expect(p.targetPort ?? p.port, svc.metadata.name).not.toBe(internalPort);
        expect(p.targetPort, svc.metadata.name).not.toBe('internal');
      }
    }
    expect(docs.some((d) => d.kind === 'Ingress')).toBe(false);
  });

  it('k8s: NetworkPolicies let only the avatar pods reach the internal port and Redis', () => {
    const redisPolicy = policyFor('live-avatar-redis');
    const avatarPolicy = policyFor('live-avatar');
    expect(redisPolicy?.spec.policyTypes).toContain('Ingress');
    expect(avatarPolicy?.spec.policyTypes).toContain('Ingress');
    expect(redisPolicy!.spec.ingress!.length).toBeGreaterThan(0);
    // Every Redis rule (there is no other way in) is limited to the avatar pods.
    onlyAvatarPods(redisPolicy!.spec.ingress!);
    onlyAvatarPods(admitting(avatarPolicy!, internalPort));
    // The public port is open to clients.
    expect(admitting(avatarPolicy!, 8080).some((r) => !r.from)).toBe(true);
  });

  const compose = loadManifest(path.join(repoRoot, 'infra', 'compose.yaml'))[0] as unknown as {
    services: Record<
      string,
      {
        command?: string[];
        environment?: Record<string, string>;
        ports?: string[];
        networks?: string[] | Record<string, unknown>;
      }
    >;
    networks: Record<string, { internal?: boolean }>;
  };
  const services = compose.services;
  const nets = (s: { networks?: string[] | Record<string, unknown> }): string[] =>
    Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {});
  const nodes = Object.entries(services).filter(([, s]) => s.environment?.AVATAR_NODE_ID);

  it('compose: Redis requires a password and the nodes carry it; Redis is on the private network only', () => {
    const r = services.redis!;
    expect(r.command?.join(' ')).toMatch(/--requirepass "\$\$REDIS_PASSWORD"/);
    expect(r.environment?.REDIS_PASSWORD).toMatch(/^\$\{AVATAR_REDIS_PASSWORD:\?/);
    expect(r.ports).toBeUndefined();
    expect(nets(r)).toEqual(['cluster']);
    expect(compose.networks.cluster?.internal).toBe(true);
    expect(nodes.length).toBeGreaterThanOrEqual(2);
    for (const [name, n] of nodes) {
      expect(n.environment?.AVATAR_REDIS_URL, name).toMatch(/^redis:\/\/:\$\{AVATAR_REDIS_PASSWORD[^}]*\}@redis:6379$/);
    }
  });

  it('compose: the internal port is not published, only reached on the private network; monitoring on 127.0.0.1', () => {
    for (const [name, n] of nodes) {
      const e = n.environment!;
      const port = Number(e.AVATAR_INTERNAL_PORT);
      expect(port, name).toBeGreaterThan(0);
      expect(port, name).not.toBe(8080);
      // Bound to the node's address on the private network, and that is where the other nodes call it.
      const addr = (n.networks as Record<string, { ipv4_address?: string }>).cluster?.ipv4_address;
      expect(e.AVATAR_INTERNAL_HOST, name).toBe(addr);
      expect(e.AVATAR_NODE_URL, name).toBe(`http://${addr}:${port}`);
      expect(e.AVATAR_NODE_URLS?.split(','), name).toContain(e.AVATAR_NODE_URL);
      for (const p of n.ports ?? []) expect(p, name).toMatch(/\/udp$/);
    }
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) {
        expect(p, name).not.toMatch(/(^|:)(8081|6379)(\/|$)/);
        if (name === 'prometheus' || name === 'grafana') expect(p, name).toMatch(/^127\.0\.0\.1:/);
      }
    }
  });
});
