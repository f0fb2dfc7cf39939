/**
 * Whether `text` takes more than `maxBytes` in UTF-8, without encoding it when its length settles it: a
 * UTF-16 code unit takes one to three bytes.
 */
export function exceedsBytes(text: string, maxBytes: number): boolean {
  if (text.length > maxBytes) return true;
  if (text.length * 3 <= maxBytes) return false;
  return Buffer.byteLength(text, 'utf8') > maxBytes;
}
