/**
 * PostgreSQL advisory-lock keys derived from text, so that each deployment
 * (namespace) gets its own key instead of one constant per database, which
 * would make independent deployments sharing a database contend.
 *
 * The hash is 64-bit FNV-1a over the UTF-8 bytes of the text, in pure
 * TypeScript (no `node:crypto`), so every runtime computes the same key.
 *
 * @module
 */
import { SluiceError } from "../errors.ts";

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK_64 = 0xffffffffffffffffn;
const encoder = new TextEncoder();

/**
 * A stable signed 64-bit advisory-lock key for `text`, for
 * `pg_advisory_lock($1::bigint)` and friends. The value is in
 * `[-2^63, 2^63)` and never changes between versions or runtimes.
 *
 * Lone UTF-16 surrogates are encoded as U+FFFD (as `TextEncoder` does), so
 * `"\uD800"` and `"\uFFFD"` share a key.
 *
 * @example
 * ```ts
 * const key = lockKey("sluice:leader:" + namespace);
 * await sql`select pg_try_advisory_lock(${key.toString()}::bigint)`;
 * ```
 */
export function lockKey(text: string): bigint {
  let h = FNV_OFFSET;
  for (const byte of encoder.encode(text)) {
    h = ((h ^ BigInt(byte)) * FNV_PRIME) & MASK_64;
  }
  return BigInt.asIntN(64, h);
}

/**
 * How `pg_locks` shows the advisory lock taken with the bigint `key`:
 * `classid` is its high 32 bits and `objid` its low 32 bits, both as
 * unsigned oids, and `objsubid` is 1 (two-int4 keys use 2). Useful to find
 * who holds a lock:
 * `select pid from pg_locks where locktype = 'advisory' and classid = $1 and objid = $2 and objsubid = 1`.
 *
 * Throws `INVALID_ARGUMENT` when `key` is outside the signed 64-bit range.
 *
 * @example
 * ```ts
 * lockKeyParts(7237492748123847n); // { classid: 1685110, objid: 407961287 }
 * lockKeyParts(-1n);               // { classid: 4294967295, objid: 4294967295 }
 * ```
 */
export function lockKeyParts(key: bigint): { classid: number; objid: number } {
  if (BigInt.asIntN(64, key) !== key) {
    throw new SluiceError("INVALID_ARGUMENT", `Advisory lock key ${key} is outside the bigint range`, { details: { key: key.toString() } });
  }
  const u = BigInt.asUintN(64, key);
  return { classid: Number(u >> 32n), objid: Number(u & 0xffffffffn) };
}
