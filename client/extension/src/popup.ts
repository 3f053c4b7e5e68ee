/**
 * The extension's popup (and options page): sign in with the viewer link from the studio, or sign out; allow the
 * avatar devices on the site of the current tab (its top-level pages only) or on a site typed in (optionally inside
 * other sites' frames too), and remove sites. The service worker checks the link against its server before keeping
 * it, and keeps the list of sites.
 */
import { chromeApi } from './chromeApi.js';
import type { ApprovedSite, AvatarStatus, Reply, WorkerRequest } from './protocol.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const form = $<HTMLFormElement>('signin');
const input = $<HTMLInputElement>('link');
const signOut = $<HTMLButtonElement>('signout');
const statusBox = $<HTMLDivElement>('status');
const thisSite = $<HTMLSpanElement>('this-site');
const allowThis = $<HTMLButtonElement>('allow-this');
const addForm = $<HTMLFormElement>('add-site');
const siteInput = $<HTMLInputElement>('site');
const siteFrames = $<HTMLInputElement>('site-frames');
const siteList = $<HTMLUListElement>('sites');
const sitesBox = $<HTMLDivElement>('sites-status');

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

function fail(box: HTMLElement): (err: unknown) => void {
  return (err) => {
    box.className = 'status error';
    box.textContent = err instanceof Error ? err.message : String(err);
  };
}

function showSites(list: ApprovedSite[]): void {
  siteList.replaceChildren(
    ...list.map((s) => {
      const li = document.createElement('li');
      const name = document.createElement('span');
      name.className = 'site';
      name.textContent = s.frames ? `${s.origin} (also inside other sites)` : s.origin;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = 'Remove';
      remove.dataset.origin = s.origin;
      remove.addEventListener('click', () => {
        send<ApprovedSite[]>({ type: 'revoke', origin: s.origin }).then(showSites, fail(sitesBox));
      });
      li.append(name, remove);
      return li;
    }),
  );
  sitesBox.className = 'status';
  sitesBox.textContent = list.length
    ? 'Only these sites see the avatar camera and microphone.'
    : 'No site sees the avatar camera yet: allow the meeting site.';
}

/**
 * The site of the tab the popup was opened from. Opened as a tab itself (options page), the popup offers the page
 * tab used last. The worker knows a tab's site from its content script (no "tabs" permission).
 */
async function currentTabSite(): Promise<string | null> {
  const own = await chromeApi.tabs.getCurrent();
  const [active] = await chromeApi.tabs.query({ active: true, lastFocusedWindow: true });
  const tabId = active?.id !== undefined && active.id !== own?.id ? active.id : null;
  return send<string | null>({ type: 'tabSite', tabId });
}

function approve(origin: string, frames: boolean): void {
  send<ApprovedSite[]>({ type: 'approve', origin, frames }).then(showSites, fail(sitesBox));
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  statusBox.className = 'status';
  statusBox.textContent = 'Checking the link…';
  send<AvatarStatus>({ type: 'signIn', link: input.value }).then(show, fail(statusBox));
});
signOut.addEventListener('click', () => {
  send<AvatarStatus>({ type: 'signOut' }).then(show, fail(statusBox));
});
addForm.addEventListener('submit', (e) => {
  e.preventDefault();
  approve(siteInput.value, siteFrames.checked);
  siteInput.value = '';
  siteFrames.checked = false;
});
send<AvatarStatus>({ type: 'status' }).then(show, fail(statusBox));
send<ApprovedSite[]>({ type: 'sites' }).then(showSites, fail(sitesBox));
currentTabSite().then((origin) => {
  thisSite.textContent = origin ?? 'no web page';
  allowThis.disabled = origin === null;
  if (origin !== null) allowThis.onclick = () => approve(origin, false);
}, fail(sitesBox));
