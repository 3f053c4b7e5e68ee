/**
 * The performer's studio page: pick or upload a portrait (with consent), start the camera, publish it, watch the
 * avatar the viewers see, tune the avatar settings, and share the viewer link.
 *
 * Opened without ?room&token it creates a room through the REST API and rewrites its own URL to the performer link.
 *
 * Private mode ("Send expressions only"): the page tracks the face itself (BrowserFaceTracker, a Web Worker) and sends
 * only the tracked expression per frame over the 'expressions' data channel, with the voice; no video track is sent.
 * It is on by default when the server's engine renders from expressions and this browser runs the tracker (the page is
 * served cross-origin isolated for its WASM threads); otherwise it is off and the page says why. `?mode=private` or
 * `?mode=video` in the link picks the mode (else the performer's last choice); switching while live re-publishes.
 */
import './style.css';
import {
  AvatarClient,
  ClientError,
  createRoom,
  getConsent,
  listPortraits,
  portraitImageUrl,
  uploadPortrait,
  type AvatarSettings,
  type PortraitSummary,
  type RoomInfo,
  type RoomStats,
  type FaceIssue,
  type PublishMode,
} from './lib/index.js';
import { ExpressionLoop, type ExpressionLoopStats } from './lib/expressionLoop.js';
import { BrowserFaceTracker, type TrackerRuntimeInfo } from './lib/tracker/faceTracker.js';

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const ui = {
  roomId: $('room-id'),
  conn: $('conn'),
  toast: $('toast'),
  gallery: $('gallery'),
  galleryEmpty: $('gallery-empty'),
  uploadForm: $<HTMLFormElement>('upload'),
  file: $<HTMLInputElement>('file'),
  consent: $<HTMLInputElement>('consent'),
  uploadBtn: $<HTMLButtonElement>('upload-btn'),
  uploadStatus: $('upload-status'),
  camera: $<HTMLVideoElement>('camera'),
  avatar: $<HTMLVideoElement>('avatar'),
  avatarIdle: $('avatar-idle'),
  idleText: $('avatar-idle-text'),
  start: $<HTMLButtonElement>('start'),
  recalibrate: $<HTMLButtonElement>('recalibrate'),
  preview: $<HTMLInputElement>('preview'),
  fps: $('st-fps'),
  lat: $('st-lat'),
  eng: $('st-eng'),
  drop: $('st-drop'),
  viewers: $('st-view'),
  face: $('st-face'),
  viewerLink: $<HTMLInputElement>('viewer-link'),
  copy: $<HTMLButtonElement>('copy'),
  strength: $<HTMLInputElement>('strength'),
  strengthOut: $<HTMLOutputElement>('strength-out'),
  head: $<HTMLInputElement>('head'),
  eyes: $<HTMLInputElement>('eyes'),
  lips: $<HTMLInputElement>('lips'),
  pose: $<HTMLSelectElement>('pose'),
  stepsField: $('steps-field'),
  steps: $<HTMLSelectElement>('steps'),
  stepsStatWrap: $('st-steps-wrap'),
  stepsStat: $('st-steps'),
  private: $<HTMLInputElement>('private'),
  privateWhat: $('private-what'),
  privateWhy: $('private-why'),
  exprWrap: $('st-expr-wrap'),
  expr: $('st-expr'),
};

/** Read-only state for tests and debugging (never used to drive the page). */
const hooks = {
  state: 'connecting' as string,
  publishState: 'idle' as string,
  room: null as RoomInfo | null,
  stats: null as RoomStats | null,
  lastError: null as { code: string; message: string } | null,
  /** How the studio publishes now (null: not live). */
  publishMode: null as PublishMode | null,
  /** Private mode: whether it can run here (null: still checking), why not, and the tracker's runtime. */
  privateMode: {
    available: null as boolean | null,
    reason: null as string | null,
    runtime: null as TrackerRuntimeInfo | null,
  },
  /** Private mode's frame loop while live in it (frames tracked, expressions sent). */
  expressions: null as ExpressionLoopStats | null,
};
(window as unknown as { __studio: typeof hooks }).__studio = hooks;

let client: AvatarClient | null = null;
let camera: MediaStream | null = null;
let live = false;
let starting = false;
let portraits: PortraitSummary[] = [];
let toastTimer: ReturnType<typeof setTimeout> | undefined;

/** Human text for the error codes a performer can do something about. */
const friendly: Partial<Record<string, string>> = {
  CONSENT_REQUIRED: 'Please confirm you have the right to animate this portrait.',
  NO_FACE: 'No face was found in this picture. Try a clearer, frontal portrait.',
  UNSUPPORTED_MEDIA_TYPE: 'Use a JPEG, PNG or WebP image.',
  PAYLOAD_TOO_LARGE: 'That file is too large.',
  IMAGE_TOO_LARGE: 'That image has too many pixels.',
  IMAGE_TOO_SMALL: 'That image is too small.',
  TOKEN_INVALID: 'This studio link is not valid.',
  TOKEN_EXPIRED: 'This studio link has expired: open the studio again to make a new room.',
  ROOM_NOT_FOUND: 'This room no longer exists: open the studio again to make a new room.',
  NETWORK: 'The server cannot be reached.',
  NotAllowedError: 'Camera access was refused.',
  NotFoundError: 'No camera was found.',
};

function describe(err: unknown): { code: string; message: string } {
  if (err instanceof ClientError) return { code: err.code, message: friendly[err.code] ?? err.message };
  if (err instanceof DOMException) return { code: err.name, message: friendly[err.name] ?? err.message };
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

function showError(err: unknown): void {
  const e = describe(err);
  hooks.lastError = e;
  ui.toast.replaceChildren();
  const code = document.createElement('code');
  code.textContent = e.code;
  // Not signed in: the studio needs the link `npm start` prints (it carries the operator's API key).
  const hint =
    e.code === 'API_KEY_REQUIRED' || e.code === 'API_KEY_INVALID'
      ? ' Sign in: open the studio link the server printed at start-up (…/?key=…), or ask its operator for one.'
      : '';
  ui.toast.append(code, ` ${e.message}${hint}`);
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (ui.toast.hidden = true), 8000);
}

function setBadge(state: string, text = state): void {
  ui.conn.dataset.state = state;
  ui.conn.textContent = text;
}

// ---- room and link ----

interface Session {
  token: string;
  roomId: string;
  viewerUrl: string | null;
}

const viewerKey = (roomId: string): string => `avatar.viewerUrl.${roomId}`;

/** The room from the URL, or a new one from POST /api/rooms (then the URL becomes the performer link). */
async function session(): Promise<Session> {
  const q = new URLSearchParams(location.search);
  const token = q.get('token');
  const roomId = q.get('room');
  if (token && roomId) return { token, roomId, viewerUrl: localStorage.getItem(viewerKey(roomId)) };
  const room = await createRoom();
  // The viewer token is only in the creation answer: keep it so that a reload still shows the link.
  localStorage.setItem(viewerKey(room.roomId), room.viewerUrl);
  const performer = new URL(room.performerUrl, location.origin);
  const next = new URL(location.href);
  next.search =
    performer.search || `?room=${encodeURIComponent(room.roomId)}&token=${encodeURIComponent(room.performerToken)}`;
  history.replaceState(null, '', next);
  return { token: room.performerToken, roomId: room.roomId, viewerUrl: room.viewerUrl };
}

// ---- portraits ----

function renderGallery(selectedId: string | null): void {
  ui.gallery.replaceChildren();
  ui.galleryEmpty.hidden = portraits.length > 0;
  for (const p of portraits) {
    const b = document.createElement('button');
    b.type = 'button';
    b.setAttribute('role', 'option');
    b.setAttribute('aria-selected', String(p.id === selectedId));
    b.dataset.id = p.id;
    b.title = p.name ?? p.id;
    const img = document.createElement('img');
    img.src = portraitImageUrl(p);
    img.alt = p.name ?? 'portrait';
    img.loading = 'lazy';
    b.append(img);
    b.addEventListener('click', () => void choosePortrait(p.id, b));
    ui.gallery.append(b);
  }
}

/** The server's consent text (shown next to the checkbox) and its version (sent with the upload). */
let consentTerms: { version: string; text: string } | null = null;
getConsent().then(
  (t) => {
    consentTerms = t;
    const el = document.getElementById('consent-text');
    if (el) el.textContent = t.text;
  },
  () => undefined, // the built-in sentence stays; the server records its own current text
);

async function refreshPortraits(): Promise<void> {
  try {
    portraits = await listPortraits();
    renderGallery(client?.room?.portraitId ?? null);
  } catch (err) {
    // A performer who opened a shared performer link is not signed in to the owner's portraits: that is fine (the
    // room's portrait is already set); the gallery says how to sign in instead of raising an error.
    const code = (err as { code?: string }).code;
    if (code === 'API_KEY_REQUIRED' || code === 'API_KEY_INVALID') {
      portraits = [];
      renderGallery(client?.room?.portraitId ?? null);
      ui.galleryEmpty.textContent =
        'Sign in to see and upload portraits: open the studio link the server printed at start-up.';
      return;
    }
    showError(err);
  }
}

/** A portrait clicked before the room was joined: applied right after the join. */
let pendingPortrait: string | null = null;

async function choosePortrait(id: string, button?: HTMLElement): Promise<void> {
  if (!client) {
    pendingPortrait = id;
    for (const b of ui.gallery.querySelectorAll('button')) b.setAttribute('aria-selected', String(b.dataset.id === id));
    return;
  }
  button?.classList.add('busy');
  try {
    await client.setPortrait(id);
  } catch (err) {
    showError(err);
  } finally {
    button?.classList.remove('busy');
  }
}

function updateUploadButton(): void {
  ui.uploadBtn.disabled = !(ui.consent.checked && ui.file.files && ui.file.files.length > 0);
}

ui.consent.addEventListener('change', updateUploadButton);
ui.file.addEventListener('change', updateUploadButton);
ui.uploadForm.addEventListener('submit', (e) => {
  e.preventDefault();
  void (async () => {
    const file = ui.file.files?.[0];
    if (!file || !ui.consent.checked) return;
    ui.uploadBtn.disabled = true;
    ui.uploadStatus.className = 'status';
    ui.uploadStatus.textContent = 'Uploading…';
    try {
      const p = await uploadPortrait(file, true, consentTerms ? { consentVersion: consentTerms.version } : {});
      ui.uploadStatus.className = 'status ok';
      ui.uploadStatus.textContent = 'Uploaded.';
      ui.uploadForm.reset();
      await refreshPortraits();
      await choosePortrait(p.id);
    } catch (err) {
      const d = describe(err);
      hooks.lastError = d;
      ui.uploadStatus.className = 'status error';
      ui.uploadStatus.textContent = `${d.code}: ${d.message}`;
    } finally {
      updateUploadButton();
    }
  })();
});

// ---- live ----

/** What the studio says when the avatar does not follow the performer's face (RoomStats.faceIssue). */
const FACE_ISSUE_TEXT: Record<FaceIssue, string> = {
  lost: 'face lost: look at the camera',
  'too-close': 'too close: move back from the camera',
  jump: 'face jumped: hold still a moment',
  'not-a-face': 'face not readable: face the camera',
};

function showStats(s: RoomStats | null): void {
  hooks.stats = s;
  const f = (v: number | undefined, unit = ''): string =>
    v === undefined || !Number.isFinite(v) ? '–' : `${Math.round(v)}${unit}`;
  ui.fps.textContent = f(s?.fps);
  ui.lat.textContent = f(s?.latencyMs, ' ms');
  ui.eng.textContent = f(s?.engineMs, ' ms');
  ui.drop.textContent = f(s?.droppedFrames);
  ui.viewers.textContent = f(s?.viewers);
  // Why the avatar is not following (it eases to neutral): said plainly, with what to do about it.
  const issue = s?.faceIssue ?? null;
  ui.face.textContent = !s ? '–' : issue ? FACE_ISSUE_TEXT[issue] : s.face ? 'yes' : 'no';
  ui.face.classList.toggle('warn', issue !== null);
  ui.stepsStat.textContent = f(s?.refinerSteps);
  hooks.expressions = loop?.stats ?? null;
  ui.expr.textContent = f(hooks.expressions?.sent);
}

async function start(): Promise<void> {
  if (!client) return;
  ui.start.disabled = true;
  starting = true;
  renderPrivate();
  try {
    camera = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: { echoCancellation: true, noiseSuppression: true },
    });
    ui.camera.srcObject = camera;
    await privateCheck;
    const mode = modeNow();
    if (mode === 'private') await startLoop();
    await client.publish(camera, mode);
    hooks.publishMode = mode;
    live = true;
    ui.recalibrate.disabled = false;
    setBadge('live', 'live');
    if (ui.preview.checked) startPreview();
  } catch (err) {
    showError(err);
    await stop();
  } finally {
    starting = false;
    renderStart();
    renderPrivate();
  }
}

/** The performer watches the room's output like any viewer would (one more encode on the server). */
function startPreview(): void {
  client?.view().catch((err: unknown) => showError(err));
}

function stopPreview(): void {
  client?.stopView();
  ui.avatar.srcObject = null;
  ui.avatarIdle.hidden = false;
}

async function stop(): Promise<void> {
  live = false;
  hooks.publishMode = null;
  stopLoop();
  ui.recalibrate.disabled = true;
  stopPreview();
  if (client && !client.closed) await client.unpublish().catch((err: unknown) => showError(err));
  for (const t of camera?.getTracks() ?? []) t.stop();
  camera = null;
  ui.camera.srcObject = null;
  showStats(null);
  if (client && !client.closed) setBadge('joined', 'ready');
  renderStart();
  renderPrivate();
}

/** Start needs a joined room with a portrait (without one the server has nothing to render). */
function renderStart(): void {
  const ready = !!client && !client.closed && !!client.room?.portraitId;
  ui.start.textContent = live ? 'Stop' : 'Start';
  ui.start.classList.toggle('live', live);
  ui.start.disabled = starting || (!live && !ready);
  ui.start.title = ready || live ? '' : 'Choose a portrait first';
  ui.idleText.textContent = ready ? 'Press Start to go live' : 'Choose a portrait, then press Start';
}

ui.start.addEventListener('click', () => void (live ? stop() : start()));
// ?preview=0 starts with the preview off; the choice is remembered.
ui.preview.checked =
  new URLSearchParams(location.search).get('preview') !== '0' && localStorage.getItem('avatar.preview') !== '0';
ui.preview.addEventListener('change', () => {
  localStorage.setItem('avatar.preview', ui.preview.checked ? '1' : '0');
  if (!live) return;
  if (ui.preview.checked) startPreview();
  else stopPreview();
});
ui.recalibrate.addEventListener('click', () => {
  client?.recalibrate().catch((err: unknown) => showError(err));
});

// ---- private mode ----

/** What leaves the machine in each mode, said plainly. */
const WHAT_LEAVES: Record<PublishMode, string> = {
  private:
    'Your camera picture stays on this computer: the server gets your voice and, for each frame, only your tracked ' +
    'expression (face points, head pose, eye and mouth openness: a few hundred bytes).',
  video:
    'The server gets your camera video and your voice, and tracks your face there. Viewers see only the avatar, ' +
    'never your camera.',
};

/** The performer's choice: `?mode=` in the link, else the last choice made here, else (null) private when it can run. */
const modeParam = new URLSearchParams(location.search).get('mode');
const storedPrivate = localStorage.getItem('avatar.private');
let wantPrivate: boolean | null =
  modeParam === 'private' || modeParam === 'video'
    ? modeParam === 'private'
    : storedPrivate === null
      ? null
      : storedPrivate === '1';
let tracker: BrowserFaceTracker | null = null;
let trackerLoading: Promise<BrowserFaceTracker> | null = null;
let loop: ExpressionLoop | null = null;
/** Whether this page can run private mode (null: not known yet). */
let privateAvailable: boolean | null = null;
/** The room's engine renders from expressions, so the page may offer private mode. */
let privateOffered = false;
/** The availability check (loading the tracker), once started: Start waits for it, so that it publishes in the mode
 * the page shows. A performer who chose video mode does not pay for it until they turn the switch on. */
let privateCheck: Promise<void> | null = null;
let checking = false;
let switching = false;

const modeNow = (): PublishMode => (privateAvailable === true && wantPrivate !== false ? 'private' : 'video');

/** One tracker for the page (its worker and networks load once); loaded again only after it failed. */
function loadTracker(): Promise<BrowserFaceTracker> {
  if (tracker && !tracker.closed) return Promise.resolve(tracker);
  trackerLoading ??= BrowserFaceTracker.create().then(
    (t) => {
      tracker = t;
      trackerLoading = null;
      hooks.privateMode.runtime = t.runtime;
      return t;
    },
    (err: unknown) => {
      trackerLoading = null;
      throw err;
    },
  );
  return trackerLoading;
}

function setPrivateAvailable(available: boolean | null, reason: string | null): void {
  privateAvailable = available;
  hooks.privateMode.available = available;
  hooks.privateMode.reason = reason;
  renderPrivate();
}

/** Whether private mode can run: the room's engine renders from expressions, and this browser runs the tracker. */
function offerPrivate(room: RoomInfo): void {
  if (!room.privateMode) {
    privateOffered = false;
    setPrivateAvailable(false, "this server's avatar engine renders from video only");
    return;
  }
  if (privateOffered) return;
  privateOffered = true;
  if (typeof WebAssembly !== 'object' || typeof Worker !== 'function') {
    setPrivateAvailable(false, 'this browser has no WebAssembly or no Web Workers');
    return;
  }
  setPrivateAvailable(null, null);
  if (wantPrivate !== false) void checkPrivate();
}

/** Loads the tracker once to learn whether private mode can run here. */
function checkPrivate(): Promise<void> {
  privateCheck ??= (async () => {
    checking = true;
    renderPrivate();
    try {
      await loadTracker();
      setPrivateAvailable(true, null);
    } catch (err) {
      setPrivateAvailable(false, `the face tracker could not start here (${describe(err).message})`);
    } finally {
      checking = false;
      renderPrivate();
    }
  })();
  return privateCheck;
}

function renderPrivate(): void {
  const mode = modeNow();
  ui.private.checked = mode === 'private';
  ui.private.disabled = !privateOffered || privateAvailable === false || checking || switching || starting;
  ui.privateWhat.textContent = WHAT_LEAVES[mode];
  ui.privateWhy.hidden = !checking && privateAvailable !== false;
  ui.privateWhy.textContent = checking
    ? 'Checking whether this browser can track your face…'
    : `Expressions only is off: ${hooks.privateMode.reason ?? 'not available'}.`;
  ui.exprWrap.hidden = !(live && hooks.publishMode === 'private');
}

/** Starts tracking the camera and sending expressions (private mode). */
async function startLoop(): Promise<void> {
  const track = camera?.getVideoTracks()[0];
  if (!track) throw new ClientError('MEDIA', 'the camera has no video track');
  const t = await loadTracker();
  loop?.close();
  const l: ExpressionLoop = ExpressionLoop.start({
    track,
    video: ui.camera,
    tracker: t,
    send: (face, width, height, captureMs) => client?.sendExpression(face, width, height, captureMs) ?? false,
    onError: (err) => {
      hooks.lastError = { code: err.code, message: err.message };
      // The tracker stopped (its worker failed): say so; the avatar holds still until the performer switches mode.
      if (l.closed && loop === l) {
        showError(err);
        setPrivateAvailable(false, `the face tracker stopped (${err.message})`);
      }
    },
  });
  loop = l;
}

function stopLoop(): void {
  loop?.close();
  loop = null;
  hooks.expressions = null;
}

/** Live: publishes again in the mode the toggle shows (the server replaces the performer's connection). */
async function switchMode(): Promise<void> {
  if (!client || !camera || !live) return;
  const mode = modeNow();
  if (mode === hooks.publishMode) return;
  switching = true;
  renderPrivate();
  try {
    if (mode === 'private') await startLoop();
    else stopLoop();
    await client.publish(camera, mode);
    hooks.publishMode = mode;
  } catch (err) {
    showError(err);
  } finally {
    switching = false;
    renderPrivate();
  }
}

ui.private.addEventListener('change', () => {
  wantPrivate = ui.private.checked;
  localStorage.setItem('avatar.private', wantPrivate ? '1' : '0');
  renderPrivate();
  void (async () => {
    // Turned on before the tracker was ever loaded (the performer had chosen video): load it first.
    if (wantPrivate && privateAvailable === null) await checkPrivate();
    await switchMode();
  })();
});

// ---- settings ----

function showSettings(s: AvatarSettings): void {
  ui.strength.value = String(s.expressionStrength);
  ui.strengthOut.value = s.expressionStrength.toFixed(2);
  ui.head.checked = s.headMotion;
  ui.eyes.checked = s.eyeRetargeting;
  ui.lips.checked = s.lipRetargeting;
  ui.pose.value = s.poseMode;
  showSteps(s.steps);
}

/** The refiner steps control: shown only when the server can refine, with the choices it can run. */
function showRefiner(r: RoomInfo['refiner']): void {
  ui.stepsField.hidden = !r.available;
  ui.stepsStatWrap.hidden = !r.available;
  for (const o of ui.steps.options) o.disabled = Number(o.value) > r.maxSteps;
}

function showSteps(steps: number): void {
  // A value set elsewhere that the menu does not list (e.g. AVATAR_STEPS=3) is shown as an extra choice.
  if (![...ui.steps.options].some((o) => Number(o.value) === steps)) {
    const o = document.createElement('option');
    o.value = String(steps);
    o.textContent = String(steps);
    ui.steps.append(o);
  }
  ui.steps.value = String(steps);
}

let settingsTimer: ReturnType<typeof setTimeout> | undefined;
let pendingSettings: Partial<AvatarSettings> = {};
/** Requests not answered yet: while > 0 the controls show what the performer set, not an older echo. */
let settingsInFlight = 0;
/** Coalesces quick changes (a dragged slider) into one setSettings request every 120 ms. */
function sendSettings(p: Partial<AvatarSettings>): void {
  pendingSettings = { ...pendingSettings, ...p };
  clearTimeout(settingsTimer);
  settingsTimer = setTimeout(() => {
    const batch = pendingSettings;
    pendingSettings = {};
    if (!client) return;
    settingsInFlight++;
    client
      .setSettings(batch)
      .catch((err: unknown) => {
        showError(err);
        if (client?.room) showSettings(client.room.settings);
      })
      .finally(() => settingsInFlight--);
  }, 120);
}

ui.strength.addEventListener('input', () => {
  const v = Number(ui.strength.value);
  ui.strengthOut.value = v.toFixed(2);
  sendSettings({ expressionStrength: v });
});
ui.head.addEventListener('change', () => sendSettings({ headMotion: ui.head.checked }));
ui.eyes.addEventListener('change', () => sendSettings({ eyeRetargeting: ui.eyes.checked }));
ui.lips.addEventListener('change', () => sendSettings({ lipRetargeting: ui.lips.checked }));
ui.pose.addEventListener('change', () =>
  sendSettings({ poseMode: ui.pose.value === 'absolute' ? 'absolute' : 'relative' }),
);
ui.steps.addEventListener('change', () => sendSettings({ steps: Number(ui.steps.value) }));

// ---- share ----

ui.copy.addEventListener('click', () => {
  const text = ui.viewerLink.value;
  if (!text) return;
  const done = (): void => {
    ui.copy.textContent = 'Copied';
    setTimeout(() => (ui.copy.textContent = 'Copy'), 1500);
  };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(text).then(done, () => {
      ui.viewerLink.select();
      document.execCommand('copy');
      done();
    });
  } else {
    ui.viewerLink.select();
    document.execCommand('copy');
    done();
  }
});

// ---- boot ----

async function main(): Promise<void> {
  updateUploadButton();
  renderPrivate();
  void refreshPortraits();
  let s: Session;
  try {
    s = await session();
  } catch (err) {
    setBadge('error', 'no room');
    showError(err);
    return;
  }
  ui.roomId.textContent = `room ${s.roomId}`;
  ui.viewerLink.value = s.viewerUrl ? new URL(s.viewerUrl, location.origin).toString() : '';
  ui.viewerLink.placeholder = s.viewerUrl ? '' : 'open the studio from its first link to see it';
  try {
    client = await AvatarClient.connect({ token: s.token });
  } catch (err) {
    setBadge('error', 'cannot join');
    showError(err);
    return;
  }
  hooks.state = client.state;
  hooks.room = client.room;
  if (!s.viewerUrl && client.viewerPath) {
    // Opened from a performer link made elsewhere: the join answer carries a viewer link for this room.
    ui.viewerLink.value = new URL(client.viewerPath, location.origin).toString();
    ui.viewerLink.placeholder = '';
  }
  setBadge('joined', 'ready');
  if (client.room) {
    offerPrivate(client.room);
    showRefiner(client.room.refiner);
    showSettings(client.room.settings);
    renderGallery(client.room.portraitId);
  }
  client.on('room', (room) => {
    hooks.room = room;
    offerPrivate(room);
    renderStart();
    showRefiner(room.refiner);
    if (settingsInFlight === 0 && Object.keys(pendingSettings).length === 0) showSettings(room.settings);
    renderGallery(room.portraitId);
  });
  client.on('stats', showStats);
  client.on('state', (st) => {
    hooks.state = st;
    renderStart();
    if (st === 'reconnecting') setBadge('reconnecting', 'reconnecting…');
    else if (st === 'joined') setBadge(live ? 'live' : 'joined', live ? 'live' : 'ready');
    else if (st === 'closed') setBadge('closed', 'disconnected');
  });
  client.on('publishState', (st) => (hooks.publishState = st));
  client.on('stream', (stream) => {
    ui.avatar.srcObject = stream;
    ui.avatarIdle.hidden = true;
  });
  client.on('failure', (e) => showError(new ClientError(e.code, e.message)));
  client.on('closed', (reason) => {
    setBadge('closed', `room closed (${reason})`);
    live = false;
    hooks.publishMode = null;
    stopLoop();
    renderStart();
    renderPrivate();
  });
  client.on('error', (e) => {
    hooks.lastError = { code: e.code, message: e.message };
  });
  renderStart();
  if (pendingPortrait && pendingPortrait !== client.room?.portraitId) {
    const id = pendingPortrait;
    pendingPortrait = null;
    await choosePortrait(id);
  }
}

void main();
