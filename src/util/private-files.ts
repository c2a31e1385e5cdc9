// Files only this process's user may read: the agent's cached mesh state and workload keys.
// Directories are 0700 and files 0600, written whole (temporary file, fsync, rename), and read
// back only when they still are private and ours: a file another user could have written is
// not trusted, whatever it holds.
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync, chmodSync } from 'node:fs';
import { dirname } from 'node:path';

const uid = () => process.getuid?.() ?? 0;

/** Creates (or tightens) a private directory; throws, naming it, when it is not ours or not a directory. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir}: not a directory`);
  if (st.uid !== uid()) throw new Error(`${dir}: owned by uid ${st.uid}, not ${uid()}`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

/** Replaces `path` atomically with `data`, mode 0600. */
export function writePrivateFile(path: string, data: string | Uint8Array): void {
  ensurePrivateDir(dirname(path));
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true }); // a leftover from a crash; O_EXCL below then cannot follow a planted link
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * The content of a private file, or undefined when there is none. Throws, naming the file, when
 * it exists but is not a regular file of ours with mode 0600 (or stricter).
 */
export function readPrivateFile(path: string): string | undefined {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  if (st.uid !== uid()) throw new Error(`${path}: owned by uid ${st.uid}, not ${uid()}`);
  if (st.mode & 0o077) throw new Error(`${path}: mode ${(st.mode & 0o777).toString(8)} lets others read or write it (want 600)`);
  return readFileSync(path, 'utf8');
}
