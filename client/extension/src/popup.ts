/**
 * The extension's popup (and options page): sign in with the viewer link from the studio, or sign out. The service
 * worker checks the link against its server before keeping it.
 */
import { chromeApi } from './chromeApi.js';
import type { AvatarStatus, Reply, WorkerRequest } from './protocol.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const form = $<HTMLFormElement>('signin');
const input = $<HTMLInputElement>('link');
const signOut = $<HTMLButtonElement>('signout');
const statusBox = $<HTMLDivElement>('status');

async function send<T>(req: WorkerRequest): Promise<T> {
  const r = (await chromeApi.runtime.sendMessage(req)) as Reply<T>;
  if (!r.ok) throw new Error(`${r.error.message} (${r.error.code})`);
  return r.data;
}

function show(s: AvatarStatus): void {
  form.hidden = s.signedIn;
  signOut.hidden = !s.signedIn;
  statusBox.className = s.signedIn ? 'status ok' : 'status';
  statusBox.textContent = s.signedIn
    ? `Signed in: room ${s.room ?? ''} on ${s.server ?? ''}. Pick “Live Avatar (AI avatar camera)” in your meeting app.`
    : 'Not signed in: web pages do not see the avatar camera.';
}

function fail(err: unknown): void {
  statusBox.className = 'status error';
  statusBox.textContent = err instanceof Error ? err.message : String(err);
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  statusBox.className = 'status';
  statusBox.textContent = 'Checking the link…';
  send<AvatarStatus>({ type: 'signIn', link: input.value }).then(show, fail);
});
signOut.addEventListener('click', () => {
  send<AvatarStatus>({ type: 'signOut' }).then(show, fail);
});
send<AvatarStatus>({ type: 'status' }).then(show, fail);
