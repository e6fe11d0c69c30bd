/**
 * The log-port file: every output frame of the main process, written by the hypervisor as the agent sent
 * it, from offset 0 of this boot. When the channel was never up (a short command can finish before the host
 * attaches) or dropped for good, the output the host has not shown yet is here.
 */
import { readFileSync } from 'node:fs';
import { LogFrameDecoder, type LogFrame } from '../../../protocol/src/logs/log-frame.ts';

/** Pure: the frames' output from stream offset `offset` on (an offset counts payload bytes, as attach does). */
export function framesFromOffset(frames: readonly LogFrame[], offset: number): LogFrame[] {
  const out: LogFrame[] = [];
  let at = 0;
  for (const frame of frames) {
    const end = at + frame.data.length;
    if (end > offset) out.push(at >= offset ? frame : { ...frame, data: frame.data.subarray(offset - at) });
    at = end;
  }
  return out;
}

/**
 * Pure: the whole frames in `bytes`. A frame cut short at the end (VM powered off mid-write) is left out;
 * so is everything from a damaged frame on, keeping what came before it.
 */
export function decodeLogBytes(bytes: Buffer, chunkBytes = 64 * 1024): LogFrame[] {
  const decoder = new LogFrameDecoder();
  const frames: LogFrame[] = [];
  try {
    for (let at = 0; at < bytes.length; at += chunkBytes)
      frames.push(...decoder.push(bytes.subarray(at, at + chunkBytes)));
  } catch {
    // Damaged from here on: what decoded so far stands.
  }
  return frames;
}

export function readLogFile(path: string, offset = 0): LogFrame[] {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return [];
  }
  return framesFromOffset(decodeLogBytes(bytes), offset);
}
