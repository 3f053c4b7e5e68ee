/** The client library used by the studio and viewer pages. */
export { AvatarClient } from './avatarClient.js';
export type { AvatarClientOptions, AvatarClientEvents, ClientState, MediaState, ReceiveStats } from './avatarClient.js';
export { ClientError, isTerminal } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { listPortraits, uploadPortrait, deletePortrait, createRoom, getConsent, portraitImageUrl } from './rest.js';
export type { PortraitSummary, CreatedRoom, RestOptions } from './rest.js';
export { Backoff } from './backoff.js';
export { ExpressionSender } from './expressionSender.js';
export type { ExpressionChannel, ExpressionSenderOptions } from './expressionSender.js';
export { defaultAvatarSettings } from '../../server/types/protocol.js';
export type {
  AvatarSettings,
  FaceIssue,
  PublishMode,
  RoomInfo,
  RoomStats,
  PublicError,
} from '../../server/types/protocol.js';
export * from './avatarStream.js';
