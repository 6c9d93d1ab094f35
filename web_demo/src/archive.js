// Bounded reading of the ZIP archives in a tftl file (the appended archive and its state.npz), by
// the rules of contract/rules.json "zip" that tftl/runtime/safezip.py applies: at most MAX_MEMBERS
// unique, unencrypted members, stored or deflated only, every declared size under the caller's cap
// and, above RATIO_FREE bytes, at most MAX_RATIO times its compressed size, checked before anything
// is inflated; the inflated bytes must have the declared size and CRC-32.
import { inflateSync } from 'fflate';

export const MAX_MEMBERS = 100016;
export const MAX_RATIO = 100;
export const RATIO_FREE = 1 << 20;

export class ArchiveError extends Error {}
/** The bytes hold no ZIP end record at all. */
export class NotZip extends ArchiveError {}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function endRecord(view, length) {
  const lowest = Math.max(0, length - 22 - 65535);
  for (let eocd = length - 22; eocd >= lowest; eocd--) {
    if (view.getUint32(eocd, true) === 0x06054b50) return eocd;
  }
  return -1;
}

/**
 * The archive at the end of `bytes` (bytes may be prepended, as the flatbuffer is): its members by
 * name and `start`, where its first member's local header lies in `bytes`.
 * @throws {NotZip} no end record; {ArchiveError} a damaged or refused directory
 */
export function openArchive(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const eocd = endRecord(view, bytes.length);
  if (eocd < 0) throw new NotZip('not a readable ZIP archive (no end record)');
  const count = view.getUint16(eocd + 10, true);
  const cdSize = view.getUint32(eocd + 12, true);
  const cdPos = eocd - cdSize;
  const shift = cdPos - view.getUint32(eocd + 16, true);
  if (cdPos < 0 || shift < 0) throw new ArchiveError('bad central directory');
  if (count > MAX_MEMBERS) throw new ArchiveError(`${count} archive members (at most ${MAX_MEMBERS})`);
  const entries = new Map();
  let start = Infinity;
  for (let i = 0, p = cdPos; i < count; i++) {
    if (p + 46 > eocd || view.getUint32(p, true) !== 0x02014b50) throw new ArchiveError('bad central directory');
    const nameLength = view.getUint16(p + 28, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLength));
    const entry = {
      flags: view.getUint16(p + 8, true), method: view.getUint16(p + 10, true), crc: view.getUint32(p + 16, true),
      csize: view.getUint32(p + 20, true), usize: view.getUint32(p + 24, true), local: shift + view.getUint32(p + 42, true),
    };
    if (entries.has(name)) throw new ArchiveError('duplicate archive member names');
    if (entry.flags & 1) throw new ArchiveError(`member '${name}' is encrypted`);
    if (entry.method !== 0 && entry.method !== 8) {
      throw new ArchiveError(`member '${name}' uses compression method ${entry.method} (only stored or deflated)`);
    }
    entries.set(name, entry);
    start = Math.min(start, entry.local);
    p += 46 + nameLength + view.getUint16(p + 30, true) + view.getUint16(p + 32, true);
  }
  return { bytes, view, entries, start: count ? start : cdPos };
}

/** Refuse a member whose declared size or compression ratio is over the caps. */
export function checkMember(name, entry, cap) {
  if (entry.usize > cap) throw new ArchiveError(`member '${name}' declares ${entry.usize} bytes (at most ${cap})`);
  if (entry.usize > RATIO_FREE && entry.usize > MAX_RATIO * Math.max(entry.csize, 1)) {
    throw new ArchiveError(`member '${name}' inflates ${Math.floor(entry.usize / Math.max(entry.csize, 1))}x (at most ${MAX_RATIO}x)`);
  }
}

/** The bytes of member `name`, read only after checkMember; ArchiveError otherwise. */
export function readMember(archive, name, cap) {
  const entry = archive.entries.get(name);
  if (!entry) throw new ArchiveError(`no member '${name}'`);
  checkMember(name, entry, cap);
  const { bytes, view } = archive;
  const p = entry.local;
  if (p < 0 || p + 30 > bytes.length || view.getUint32(p, true) !== 0x04034b50) {
    throw new ArchiveError(`member '${name}' is damaged (bad local header)`);
  }
  const from = p + 30 + view.getUint16(p + 26, true) + view.getUint16(p + 28, true);
  if (from + entry.csize > bytes.length) throw new ArchiveError(`member '${name}' is damaged (runs past the end)`);
  const raw = bytes.subarray(from, from + entry.csize);
  let data;
  if (entry.method === 0) {
    data = raw;
  } else {
    try {
      data = inflateSync(raw, { out: new Uint8Array(entry.usize) });
    } catch (e) {
      throw new ArchiveError(`member '${name}' is damaged (${e.message})`);
    }
  }
  if (data.length !== entry.usize || crc32(data) !== entry.crc) {
    throw new ArchiveError(`member '${name}' is damaged (size or CRC does not match)`);
  }
  return data;
}
