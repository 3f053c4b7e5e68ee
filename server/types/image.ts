/**
 * Frame and image vocabulary shared by every floor (media, avatar, portraits, provenance, vision, util): plain data
 * shapes with no behaviour beyond their size. Ground floor: this module imports nothing.
 */

/** 8-bit RGB, packed, stride = width * 3. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** I420 (YUV 4:2:0 planar): Y (w*h), then U and V ((w/2)*(h/2) each). Width and height are even. */
export interface I420Frame {
  width: number;
  height: number;
  data: Uint8Array;
}

/** 8-bit single-channel image, row-major, stride = width. */
export interface GrayImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Bytes of an I420 frame of this size (chroma planes rounded up). */
export function i420Bytes(width: number, height: number): number {
  return width * height + 2 * ((width + 1) >> 1) * ((height + 1) >> 1);
}
