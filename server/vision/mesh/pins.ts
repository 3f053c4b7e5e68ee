/**
 * The face model pins (models/face/sources.json) read without I/O: the sha256 of each converted ONNX file, for the
 * server's loader (models.ts) and the browser's tracker (client/lib/tracker), which check the same files against the
 * same pins.
 */

/** The tracker's three networks, as their files are named in models/face (`<name>.onnx`). */
export const MESH_MODEL_NAMES = ['blazeface', 'facemesh', 'iris'] as const;
export type MeshModelName = (typeof MESH_MODEL_NAMES)[number];

/**
 * sha256 (lower-case hex) of each converted ONNX file as a parsed sources.json pins it: `models` as an object by name
 * or an array of `{ name }`, with `onnx_sha256` or `onnx: { sha256 }`. Entries without a pin are left out.
 */
export function parseFacePins(json: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const models = (json as { models?: unknown } | null)?.models;
  const entries: unknown[] = Array.isArray(models)
    ? models
    : models && typeof models === 'object'
      ? Object.entries(models).map(([name, v]) => ({ name, ...(v as object) }))
      : [];
  for (const e of entries) {
    const m = e as { name?: unknown; onnx?: unknown; onnx_sha256?: unknown };
    const onnx = m.onnx as { sha256?: unknown } | string | undefined;
    const sha =
      typeof m.onnx_sha256 === 'string'
        ? m.onnx_sha256
        : typeof onnx === 'object' && onnx && typeof onnx.sha256 === 'string'
          ? onnx.sha256
          : undefined;
    if (typeof m.name === 'string' && sha) out[m.name] = sha;
  }
  return out;
}
