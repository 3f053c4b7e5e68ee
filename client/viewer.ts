/**
 * The viewer page (also an OBS browser source): the room's avatar video full-window, nothing else but a small status
 * line while waiting. It reconnects by itself.
 *
 * URL: /view?room=ROOM&token=VIEWER_TOKEN[&latency=low|smooth][&bg=transparent][&buffer=MS][&audio=0]
 *   latency=low (default, calls): the least delay (audio and video not lip-synced by the browser, the video decoded
 *   as it arrives, past the jitter buffer); latency=smooth (broadcast, OBS: the default inside OBS's browser source):
 *   the browser's lip-sync and adaptive buffers; any other value stops the page with BAD_REQUEST. bg=transparent: no black background (OBS); buffer=MS: receive jitter buffer target
 *   (diagnostic, overrides the mode's); audio=0: video only.
 * Test hooks (read-only): window.__avatar = { frames, streams, width, height, state, lastError, latency, socketId(),
 * stats(), receivers() }.
 */
import './style.css';
import { AvatarClient, Backoff, ClientError, isTerminal, type ReceiveStats } from './lib/index.js';
import { parseLatencyMode, type LatencyMode } from './lib/latency.js';
import type { ReceiverInfo } from './lib/peer.js';

const video = document.getElementById('video') as HTMLVideoElement;
const statusEl = document.getElementById('status') as HTMLElement;
const unmute = document.getElementById('unmute') as HTMLButtonElement;
const params = new URLSearchParams(location.search);
if (params.get('bg') === 'transparent') document.body.classList.add('transparent');

let client: AvatarClient | null = null;

const hooks = {
  /** Video frames presented so far (requestVideoFrameCallback). */
  frames: 0,
  /** Received streams so far (1 after the first view; one more after each reconnect). */
  streams: 0,
  width: 0,
  height: 0,
  state: 'connecting',
  lastError: null as { code: string; message: string } | null,
  /** The link's latency mode (null when the link's value is not valid). */
  latency: null as LatencyMode | null,
  /** The signaling connection id (the server's viewer id), for diagnostics. */
  socketId: (): string | null => client?.socketId ?? null,
  /** Inbound WebRTC numbers of the current view. */
  stats: (): Promise<ReceiveStats | null> => client?.receiveStats() ?? Promise.resolve(null),
  /** The current view's receivers: kind, remote stream ids (one shared id = lip-synced), jitter buffer target. */
  receivers: (): ReceiverInfo[] => client?.viewReceivers() ?? [],
};
(window as unknown as { __avatar: typeof hooks }).__avatar = hooks;

function status(text: string | null): void {
  hooks.state = text ?? 'playing';
  if (text === null) {
    statusEl.hidden = true;
  } else {
    statusEl.hidden = false;
    statusEl.textContent = text;
  }
}

function noteError(err: unknown): void {
  hooks.lastError =
    err instanceof ClientError
      ? { code: err.code, message: err.message }
      : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

// Count presented frames; the callback re-arms itself for whatever stream is in the element.
type FrameCb = (now: number, meta: { width: number; height: number }) => void;
const rvfc = (video as unknown as { requestVideoFrameCallback?: (cb: FrameCb) => number }).requestVideoFrameCallback;
if (rvfc) {
  const onFrame: FrameCb = (_now, meta) => {
    hooks.frames++;
    hooks.width = meta.width;
    hooks.height = meta.height;
    rvfc.call(video, onFrame);
  };
  rvfc.call(video, onFrame);
}
video.addEventListener('resize', () => {
  hooks.width = video.videoWidth;
  hooks.height = video.videoHeight;
});
video.addEventListener('playing', () => status(null));
video.addEventListener('waiting', () => status('waiting for video…'));

async function play(stream: MediaStream): Promise<void> {
  video.srcObject = stream;
  try {
    await video.play();
  } catch (err) {
    // A normal browser may refuse sound without a click (OBS and --autoplay-policy=no-user-gesture-required do
    // not): play muted and offer the click.
    if (err instanceof DOMException && err.name === 'NotAllowedError') {
      video.muted = true;
      unmute.hidden = false;
      await video.play().catch(noteError);
    } else {
      noteError(err);
    }
  }
}

unmute.addEventListener('click', () => {
  video.muted = false;
  unmute.hidden = true;
  void video.play().catch(noteError);
});

async function main(): Promise<void> {
  const token = params.get('token');
  if (!token) {
    status('this link has no token');
    return;
  }
  let latency: LatencyMode;
  try {
    // OBS's browser source (it defines window.obsstudio) is a broadcast: smooth, unless the link says otherwise.
    latency = parseLatencyMode(params.get('latency') ?? ('obsstudio' in window ? 'smooth' : null));
  } catch (err) {
    noteError(err);
    status(err instanceof Error ? err.message : 'this link is not valid');
    return;
  }
  hooks.latency = latency;
  const buffer = params.get('buffer');
  const jitterBufferTargetMs =
    buffer !== null && buffer !== '' && Number.isFinite(Number(buffer)) ? Number(buffer) : undefined;
  const backoff = new Backoff({ minDelayMs: 500, maxDelayMs: 5000 });
  // Keep trying to join until it works: the server may be restarting, or the link opened early (OBS).
  for (;;) {
    try {
      client = await AvatarClient.connect(
        jitterBufferTargetMs === undefined ? { token } : { token, jitterBufferTargetMs },
      );
      break;
    } catch (err) {
      noteError(err);
      if (isTerminal(err)) {
        status(
          err instanceof ClientError && err.code === 'TOKEN_EXPIRED'
            ? 'this link has expired'
            : 'this link is not valid',
        );
        return;
      }
      status(err instanceof ClientError && err.code === 'ROOM_NOT_FOUND' ? 'room not found, retrying…' : 'connecting…');
      await new Promise((r) => setTimeout(r, backoff.next()));
    }
  }
  client.on('stream', (stream) => {
    hooks.streams++;
    void play(stream);
  });
  client.on('error', noteError);
  client.on('state', (s) => {
    if (s === 'reconnecting') status('reconnecting…');
    else if (s === 'closed') status('disconnected');
  });
  client.on('viewState', (s) => {
    if (s === 'retrying') status('reconnecting…');
    else if (s === 'connecting' && video.paused) status('connecting…');
  });
  client.on('closed', (reason) =>
    status(reason === 'performer-left' ? 'the performer has left' : 'the room has ended'),
  );
  status('waiting for the performer…');
  // The client retries by itself when the first view fails (e.g. nobody is publishing yet).
  client.view({ audio: params.get('audio') !== '0', latency }).catch(noteError);
}

void main();
