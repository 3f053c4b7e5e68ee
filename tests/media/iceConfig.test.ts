/**
 * The ICE slice of the config: TURN credentials in coturn's shared-secret REST scheme against a value computed
 * independently (OpenSSL), the ICE servers minted per client, and env parsing and validation (CONFIG_INVALID naming
 * the option), and the deployment files' TURN settings.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/config.js';
import { iceServersFor, turnCredentials } from '../../server/media/iceConfig.js';
import { repoRoot } from '../helpers/server.js';

const SECRET = 'turn-shared-secret-0123456789';

describe('turnCredentials', () => {
  it('username <expiry>:<id>, credential base64(HMAC-SHA1(secret, username))', () => {
    // printf '%s' '1700000000:viewer.room-1' | openssl dgst -sha1 -hmac 'turn-shared-secret-0123456789' -binary | base64
    expect(turnCredentials(SECRET, 'viewer.room-1', 1_700_000_000)).toEqual({
      username: '1700000000:viewer.room-1',
      credential: 'Qx6EjcX+/RbqeLcExhHEquQcXU0=',
    });
  });

  it('refuses ids coturn would split or log oddly, empty secrets and bad expiries', () => {
    expect(() => turnCredentials(SECRET, 'a:b', 1)).toThrow(TypeError);
    expect(() => turnCredentials(SECRET, '', 1)).toThrow(TypeError);
    expect(() => turnCredentials('', 'x', 1)).toThrow(TypeError);
    expect(() => turnCredentials(SECRET, 'x', 1.5)).toThrow(TypeError);
  });
});

describe('iceServersFor', () => {
  const media = {
    iceServers: [{ urls: 'stun:stun.example.org:3478' }],
    turn: { urls: ['turn:turn.example.org:3478?transport=udp'], secret: SECRET, ttlMs: 3600_000 },
    serverPeersUseIce: true,
  };

  it('adds the TURN URLs with credentials valid for the TTL, and never the secret', () => {
    const now = 1_700_000_000_000;
    const servers = iceServersFor(media, 'viewer.room:1', now);
    expect(servers).toEqual([
      { urls: 'stun:stun.example.org:3478' },
      {
        urls: ['turn:turn.example.org:3478?transport=udp'],
        ...turnCredentials(SECRET, 'viewer.room_1', 1_700_003_600),
      },
    ]);
    expect(JSON.stringify(servers)).not.toContain(SECRET);
  });

  it('never past notAfter (the link expiry); without TURN, only the configured servers', () => {
    const now = 1_700_000_000_000;
    const [, turn] = iceServersFor(media, 'x', now, now + 90_500);
    expect(turn?.username).toBe('1700000090:x');
    expect(iceServersFor({ ...media, turn: { urls: [], secret: null, ttlMs: 3600_000 } }, 'x', now)).toEqual([
      { urls: 'stun:stun.example.org:3478' },
    ]);
  });
});

describe('ICE config from env', () => {
  it('reads the ICE servers, TURN URLs, secret and TTL', () => {
    const c = loadConfig({
      AVATAR_ICE_SERVERS: 'stun:a.example:3478, stun:b.example:3478',
      AVATAR_TURN_URLS: 'turn:t.example:3478?transport=udp,turns:t.example:5349?transport=tcp',
      AVATAR_TURN_SECRET: SECRET,
      AVATAR_TURN_TTL_HOURS: '2',
      AVATAR_SERVER_PEERS_ICE: 'off',
    }).media;
    expect(c.iceServers).toEqual([{ urls: 'stun:a.example:3478' }, { urls: 'stun:b.example:3478' }]);
    expect(c.turn).toEqual({
      urls: ['turn:t.example:3478?transport=udp', 'turns:t.example:5349?transport=tcp'],
      secret: SECRET,
      ttlMs: 7200_000,
    });
    expect(c.serverPeersUseIce).toBe(false);
    const d = loadConfig({}).media;
    expect(d.turn).toEqual({ urls: [], secret: null, ttlMs: 24 * 3600_000 });
    expect(d.serverPeersUseIce).toBe(true);
    const json = loadConfig({
      AVATAR_ICE_SERVERS: '[{"urls":["turn:fixed.example:3478"],"username":"u","credential":"p"}]',
    }).media;
    expect(json.iceServers).toEqual([{ urls: ['turn:fixed.example:3478'], username: 'u', credential: 'p' }]);
  });

  it('bad values stop start-up with CONFIG_INVALID naming the option', () => {
    const bad = (env: Record<string, string>, what: RegExp): void => {
      let err: unknown = null;
      try {
        loadConfig(env);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(env)).toMatchObject({ code: 'CONFIG_INVALID' });
      expect((err as Error).message).toMatch(what);
    };
    bad({ AVATAR_TURN_URLS: 'turn:t.example:3478' }, /media\.turn\.urls.*needs.*media\.turn\.secret/);
    bad({ AVATAR_TURN_SECRET: SECRET }, /media\.turn\.secret.*without.*media\.turn\.urls/);
    bad({ AVATAR_TURN_URLS: 'turn:t.example', AVATAR_TURN_SECRET: 'short' }, /media\.turn\.secret.*16 characters/);
    bad({ AVATAR_TURN_URLS: 'http://t.example', AVATAR_TURN_SECRET: SECRET }, /media\.turn\.urls.*turn:/);
    bad(
      { AVATAR_TURN_URLS: 'turn:t.example', AVATAR_TURN_SECRET: SECRET, AVATAR_TURN_TTL_HOURS: '0' },
      /media\.turn\.ttlMs/,
    );
    bad({ AVATAR_TURN_TTL_HOURS: 'soon' }, /AVATAR_TURN_TTL_HOURS/);
    bad({ AVATAR_ICE_SERVERS: 'stun.example.org' }, /media\.iceServers\[0\]\.urls/);
    bad({ AVATAR_ICE_SERVERS: '[{"urls":' }, /AVATAR_ICE_SERVERS/);
    bad({ AVATAR_ICE_SERVERS: 'turn:t.example:3478' }, /media\.iceServers\[0\].*without username/);
    bad({ AVATAR_SERVER_PEERS_ICE: 'maybe' }, /AVATAR_SERVER_PEERS_ICE/);
  });
});

describe('the deployment files', () => {
  it('coturn uses the shared-secret scheme with no static user or secret in the file; compose passes one secret to both', () => {
    const conf = readFileSync(path.join(repoRoot, 'infra', 'coturn', 'turnserver.conf'), 'utf8');
    const lines = conf.split('\n').filter((l) => !/^\s*(#|$)/.test(l));
    expect(lines).toContain('use-auth-secret');
    expect(lines.filter((l) => /^(user|lt-cred-mech|static-auth-secret|allow-loopback-peers)\b/.test(l))).toEqual([]);
    const compose = readFileSync(path.join(repoRoot, 'infra', 'compose.yaml'), 'utf8');
    expect(compose).toMatch(/AVATAR_TURN_SECRET: \$\{AVATAR_TURN_SECRET:\?/);
    expect(compose).toMatch(/AVATAR_TURN_URLS: turn:/);
    expect(compose).toContain("'--static-auth-secret=$$AVATAR_TURN_SECRET'");
  });
});
