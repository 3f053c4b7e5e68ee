/**
 * The signaling protocol, shared by the server and the client library (client/lib imports this file).
 * Transport: socket.io. Every client → server event carries one payload object and an ack callback;
 * the ack answers `Result<T>`: `{ ok: true, data }` or `{ ok: false, error: { code, message } }`.
 * Every payload is validated on the server with `validate*` below before anything else happens.
 *
 * This module is pure: no Node or browser APIs, no imports but types.
 */
import type { ErrorCode } from '../errors.js';

export type Role = 'performer' | 'viewer';
export type FanoutKind = 'direct' | 'sfu';

export interface SessionDescription {
  type: 'offer' | 'answer';
  sdp: string;
}
export interface IceCandidate {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
}

export interface PublicError {
  code: ErrorCode;
  message: string;
}
export type Result<T> = { ok: true; data: T } | { ok: false; error: PublicError };
export type Ack<T> = (result: Result<T>) => void;

/** Live avatar settings the performer may change at any time. */
export interface AvatarSettings {
  /** Scales the expression motion, 0..2; default 1. */
  expressionStrength: number;
  /** Apply the performer's head rotation to the portrait; default true. */
  headMotion: boolean;
  /** Retarget eye blinks and gaze; default true. */
  eyeRetargeting: boolean;
  /** Retarget lip motion; default true. */
  lipRetargeting: boolean;
  /** 'relative': motion relative to the performer's neutral; 'absolute': the performer's pose as is. */
  poseMode: 'relative' | 'absolute';
  /**
   * Learned refiner steps the performer asks for, an integer 0..MAX_REFINER_STEPS; 0 = warp only (the default).
   * This is the room's wish, echoed as set: the engine runs at most this many, 0 when the server has no refiner
   * (RoomInfo.refiner.available), fewer while it is overloaded. RoomStats.refinerSteps says what runs.
   */
  steps: number;
}
export const defaultAvatarSettings: AvatarSettings = {
  expressionStrength: 1,
  headMotion: true,
  eyeRetargeting: true,
  lipRetargeting: true,
  poseMode: 'relative',
  steps: 0,
};

/** Largest AvatarSettings.steps accepted (the refiner's teacher samples in 8). */
export const MAX_REFINER_STEPS = 8;

/** What the room's engine can do with AvatarSettings.steps. */
export interface RefinerInfo {
  /** Whether the engine has a learned refiner (the default engine with a refiner pack loaded). */
  available: boolean;
  /** The refiner pack's own default steps (a good choice for the studio to offer first); 0 when not available. */
  defaultSteps: number;
  /** Most steps the engine runs; 0 when not available. */
  maxSteps: number;
}
export const noRefiner: RefinerInfo = { available: false, defaultSteps: 0, maxSteps: 0 };

/**
 * How the performer drives the avatar. 'video': the webcam video goes to the server, which tracks the face.
 * 'private': the browser tracks the face and sends only the tracked expression per frame over an RTCDataChannel
 * (server/types/expressionWire.ts); no video leaves the performer's machine. The voice goes over WebRTC in both.
 */
export type PublishMode = 'video' | 'private';
export const PUBLISH_MODES: readonly PublishMode[] = ['video', 'private'];
/** The label of the performer's expression channel in private mode (unordered, maxRetransmits 0). */
export const EXPRESSION_CHANNEL_LABEL = 'expressions';

export interface RoomInfo {
  roomId: string;
  /** How the performer publishes now (null: not publishing). */
  publishMode: PublishMode | null;
  /** Whether the room's engine can render from expressions (private mode); the studio offers it only then. */
  privateMode: boolean;
  portraitId: string | null;
  /** Output size of the synthesized video (the prepared portrait's size). */
  width: number;
  height: number;
  settings: AvatarSettings;
  /** Whether the server can refine (steps > 0 has an effect), so that the studio shows the control only then. */
  refiner: RefinerInfo;
}

/**
 * A STUN or TURN server for RTCPeerConnection's `iceServers`. TURN entries from the server carry time-limited
 * credentials (coturn's shared-secret scheme: `username` is `<expiry unix seconds>:<id>`); a client that joins again
 * gets fresh ones.
 */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

export interface JoinRequest {
  token: string;
}
export interface JoinResponse {
  role: Role;
  room: RoomInfo;
  fanout: FanoutKind;
  /** ICE servers for this client's peer connections (publish, view, SFU transports). */
  iceServers: IceServer[];
  /** Performers only: the viewer page's path with a viewer token that expires with the performer's, e.g.
   * `/view?room=ID&token=...`, so a studio opened from its performer link can always offer the viewer link. */
  viewerPath?: string;
}

/**
 * Performer: send an offer with a sendonly video (and audio) track; the server answers. In private mode the offer has
 * no video: audio and the expression data channel (EXPRESSION_CHANNEL_LABEL). Publishing again (in either mode)
 * replaces the performer's connection: how a live room switches between modes.
 */
export interface PublishRequest {
  sdp: SessionDescription;
  /** Default 'video'. */
  mode?: PublishMode;
}
/** Viewer (direct fan-out): send a recvonly offer (video + audio); the server answers. */
export interface ViewRequest {
  sdp: SessionDescription;
}
export interface SdpResponse {
  sdp: SessionDescription;
}
export interface IceRequest {
  /** Which of this socket's peer connections the candidate belongs to. */
  target: 'publish' | 'view';
  candidate: IceCandidate | null;
}
export interface SetPortraitRequest {
  portraitId: string;
}
export interface SetSettingsRequest {
  settings: Partial<AvatarSettings>;
}

/** SFU (mediasoup) fan-out messages, used when JoinResponse.fanout === 'sfu'. */
export interface SfuCapabilitiesResponse {
  routerRtpCapabilities: unknown;
}
export interface SfuTransportOptions {
  id: string;
  iceParameters: unknown;
  iceCandidates: unknown[];
  dtlsParameters: unknown;
}
export interface SfuConnectRequest {
  transportId: string;
  dtlsParameters: unknown;
}
export interface SfuConsumeRequest {
  transportId: string;
  rtpCapabilities: unknown;
}
export interface SfuConsumerInfo {
  id: string;
  producerId: string;
  kind: 'audio' | 'video';
  rtpParameters: unknown;
}
export interface SfuResumeRequest {
  consumerId: string;
}

/**
 * Why the avatar does not follow the performer's face right now (it eases towards neutral): no face in the picture,
 * a face too close to the camera to read whole, a face that jumped across the picture, or points no face makes.
 */
export type FaceIssue = 'lost' | 'too-close' | 'jump' | 'not-a-face';

/** Live numbers the server pushes to the performer (and viewers) about once a second. */
export interface RoomStats {
  /** Synthesized frames per second over the last second. */
  fps: number;
  /** Server-side latency: frame received → synthesized frame published, p50 over the last second, ms. */
  latencyMs: number;
  engineMs: number;
  droppedFrames: number;
  viewers: number;
  /** Whether the last driving frame had a face in it. */
  face: boolean;
  /** Why the avatar did not follow the last driving frame's face (null: it did). */
  faceIssue: FaceIssue | null;
  /** Refiner steps running now: settings.steps, lowered under overload, 0 without a refiner. */
  refinerSteps: number;
}

/** 'owner-lost': a relayed room whose owner node stopped answering (cluster). */
export type CloseReason =
  | 'performer-left'
  | 'room-deleted'
  | 'server-shutdown'
  | 'replaced'
  | 'error'
  | 'owner-lost'
  /** The room's portrait was deleted by its owner: nothing may animate it any more. */
  | 'portrait-deleted'
  /** The room's links were revoked (this socket joined with an old link). */
  | 'links-revoked'
  /** The link (token) this socket joined with expired (a 'failure' TOKEN_EXPIRED comes first). */
  | 'link-expired';

export interface ClientToServerEvents {
  join: (req: JoinRequest, ack: Ack<JoinResponse>) => void;
  publish: (req: PublishRequest, ack: Ack<SdpResponse>) => void;
  unpublish: (req: Record<string, never>, ack: Ack<null>) => void;
  view: (req: ViewRequest, ack: Ack<SdpResponse>) => void;
  ice: (req: IceRequest, ack: Ack<null>) => void;
  setPortrait: (req: SetPortraitRequest, ack: Ack<RoomInfo>) => void;
  setSettings: (req: SetSettingsRequest, ack: Ack<AvatarSettings>) => void;
  recalibrate: (req: Record<string, never>, ack: Ack<null>) => void;
  'sfu:capabilities': (req: Record<string, never>, ack: Ack<SfuCapabilitiesResponse>) => void;
  'sfu:createTransport': (req: Record<string, never>, ack: Ack<SfuTransportOptions>) => void;
  'sfu:connect': (req: SfuConnectRequest, ack: Ack<null>) => void;
  'sfu:consume': (req: SfuConsumeRequest, ack: Ack<SfuConsumerInfo[]>) => void;
  'sfu:resume': (req: SfuResumeRequest, ack: Ack<null>) => void;
}

export interface ServerToClientEvents {
  stats: (stats: RoomStats) => void;
  room: (room: RoomInfo) => void;
  ice: (msg: IceRequest) => void;
  closed: (msg: { reason: CloseReason }) => void;
  /** An error that is not the answer to a request (e.g. the engine failed). */
  failure: (err: PublicError) => void;
  /**
   * The viewer's SFU transport is gone (its mediasoup worker died, or a relay's owner rebuilt its router): the viewer
   * consumes again (sfu:capabilities ... sfu:resume). code 'SFU_RESET'.
   */
  viewReset: (err: PublicError) => void;
}
