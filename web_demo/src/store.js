// Progress kept in IndexedDB, so a reload (or a closed tab) resumes: the model file, its
// labels, the trained state from `save`, the feature cache (when small) and the run's log.
const DB = 'tftl-web-demo';
const STORE = 'session';
const KEY = 'current';
const PREVIOUS = 'previous';
// Feature caches above this are not stored (the photos would have to be added again).
export const MAX_STORED_FEATURE_BYTES = 64 * 1024 * 1024;

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const req = fn(t.objectStore(STORE));
      t.oncomplete = () => resolve(req && req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error || new Error('IndexedDB transaction aborted'));
    });
  } finally {
    db.close();
  }
}

/** Store the session record (structured clone: typed arrays and Blobs are kept as they are). */
export function saveSession(record) {
  return tx('readwrite', (s) => s.put({ ...record, savedAt: Date.now() }, KEY));
}

export function loadSession(key = KEY) {
  return tx('readonly', (s) => s.get(key));
}

/** Move the current session aside (one level of undo for "Open another model" and "Forget"). */
export async function archiveSession() {
  const current = await loadSession();
  if (current) await tx('readwrite', (s) => s.put(current, PREVIOUS));
  return tx('readwrite', (s) => s.delete(KEY));
}

/** Bring the archived session back as the current one (the current one is archived in turn). */
export async function unarchiveSession() {
  const [current, previous] = [await loadSession(), await loadSession(PREVIOUS)];
  if (!previous) return false;
  await tx('readwrite', (s) => s.put(previous, KEY));
  await tx('readwrite', (s) => (current ? s.put(current, PREVIOUS) : s.delete(PREVIOUS)));
  return true;
}

export async function hasArchivedSession() {
  return Boolean(await tx('readonly', (s) => s.getKey(PREVIOUS)));
}
