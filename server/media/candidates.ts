/**
 * ICE candidate filtering by address (config.media.iceAddressAllowList). Pure functions over SDP text and candidate
 * lines, so that tests can keep traffic on 127.0.0.1 and deployments can hide internal addresses.
 */

/** The connection address of a candidate line (`candidate:...` with or without `a=`), or null if unparsable. */
export function candidateAddress(candidate: string): string | null {
  const line = candidate.trim().replace(/^a=/, '');
  if (!line.startsWith('candidate:')) return null;
  // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
  const parts = line.slice('candidate:'.length).split(/\s+/);
  return parts[4] ?? null;
}

/** Whether a candidate may be used: allowed when there is no list, or its address is on the list. */
export function candidateAllowed(candidate: string, allow: readonly string[] | null): boolean {
  if (!allow) return true;
  const addr = candidateAddress(candidate);
  return addr !== null && allow.includes(addr);
}

/** Removes the `a=candidate` lines whose address is not allowed; keeps everything else (CRLF preserved). */
export function filterSdpCandidates(sdp: string, allow: readonly string[] | null): string {
  if (!allow) return sdp;
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  return sdp
    .split(/\r?\n/)
    .filter((line) => !line.startsWith('a=candidate:') || candidateAllowed(line, allow))
    .join(eol);
}

/**
 * Sets a bandwidth line (`b=AS:<kbps>`) in every video section of an SDP. Put into the *remote* description, it
 * caps what libwebrtc sends on that peer (the remote says how much it is willing to receive).
 */
export function setVideoBandwidth(sdp: string, bitsPerSecond: number): string {
  const kbps = Math.max(1, Math.floor(bitsPerSecond / 1000));
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(/\r?\n/);
  const out: string[] = [];
  let inVideo = false;
  for (const line of lines) {
    if (line.startsWith('m=')) inVideo = line.startsWith('m=video');
    if (inVideo && line.startsWith('b=')) continue;
    out.push(line);
    // b= goes after the c= line of the section (RFC 4566 order: m, i, c, b, ...).
    if (inVideo && line.startsWith('c=')) out.push(`b=AS:${kbps}`);
  }
  return out.join(eol);
}

/** The media kinds of an SDP's m-lines, in order. */
export function sdpMediaKinds(sdp: string): string[] {
  return sdp
    .split(/\r?\n/)
    .filter((l) => l.startsWith('m='))
    .map((l) => l.slice(2).split(' ')[0] ?? '');
}
