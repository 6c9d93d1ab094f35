// Progress kept in IndexedDB, so a reload (or a closed tab) resumes: the model file, its
// labels, the trained state from `save`, the feature cache (when small) and the run's log.
// Besides the current session: the previous one (one level of undo for "Open another model",
// "Forget" and "Load"), up to MAX_NAMED sessions saved under a name, an index of them (so the list
// never reads their bytes), and the last deleted or overwritten named session (its undo).
const DB = 'tftl-web-demo';
const STORE = 'session';
const KEY = 'current';
const PREVIOUS = 'previous';
const INDEX = 'index';
const DELETED = 'deleted';
const NAMED = 'named:';
// Feature caches above this are not stored (the photos would have to be added again).
export const MAX_STORED_FEATURE_BYTES = 64 * 1024 * 1024;
// Named sessions: each holds its model file and at most MAX_STORED_FEATURE_BYTES of features.
export const MAX_NAMED = 8;
export const MAX_NAME_LENGTH = 60;

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** One transaction: `fn(store)` may issue several requests; resolves with the last one's result. */
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
  return tx('readwrite', (s) => {
    if (current) s.put(current, PREVIOUS);
    return s.delete(KEY);
  });
}

/** Bring the archived session back as the current one (the current one is archived in turn). */
export async function unarchiveSession() {
  const [current, previous] = [await loadSession(), await loadSession(PREVIOUS)];
  if (!previous) return false;
  await tx('readwrite', (s) => {
    s.put(previous, KEY);
    return current ? s.put(current, PREVIOUS) : s.delete(PREVIOUS);
  });
  return true;
}

export async function hasArchivedSession() {
  return Boolean(await tx('readonly', (s) => s.getKey(PREVIOUS)));
}

/** The saved sessions' summaries, {name: {savedAt, modelName, photos, steps}}, newest first. */
export async function listNamed() {
  const index = (await loadSession(INDEX)) || {};
  return Object.entries(index).sort((a, b) => b[1].savedAt - a[1].savedAt);
}

/** The name as stored, or an Error saying what is wrong with it. */
export function checkName(name) {
  const clean = String(name || '').trim();
  if (!clean) throw new Error('give the session a name');
  if (clean.length > MAX_NAME_LENGTH) throw new Error(`a session name has at most ${MAX_NAME_LENGTH} characters`);
  return clean;
}

/**
 * Save the current session under `name`; an existing session of that name goes to the undo slot.
 * @returns {Promise<boolean>} whether a session of that name was replaced
 */
export async function saveNamed(name, summary) {
  const [current, index] = [await loadSession(), (await loadSession(INDEX)) || {}];
  if (!current) throw new Error('nothing to save yet: open a model first');
  const replaced = name in index;
  if (!replaced && Object.keys(index).length >= MAX_NAMED) {
    throw new Error(`at most ${MAX_NAMED} saved sessions: delete one first`);
  }
  const old = replaced ? await loadSession(NAMED + name) : null;
  const savedAt = Date.now();
  await tx('readwrite', (s) => {
    if (old) s.put({ name, record: old, summary: index[name] }, DELETED);
    s.put({ ...current, savedAs: name, unsaved: false }, NAMED + name);
    s.put({ ...current, savedAs: name, unsaved: false }, KEY);
    return s.put({ ...index, [name]: { ...summary, savedAt } }, INDEX);
  });
  return replaced;
}

/** Make saved session `name` the current one; the current one becomes the previous session. */
export async function loadNamed(name) {
  const record = await loadSession(NAMED + name);
  if (!record) throw new Error(`no saved session named ${name}`);
  await archiveSession();
  return tx('readwrite', (s) => s.put({ ...record, savedAs: name, unsaved: false }, KEY));
}

/** Delete saved session `name` into the undo slot (the slot's previous content is dropped). */
export async function deleteNamed(name) {
  const [record, index] = [await loadSession(NAMED + name), (await loadSession(INDEX)) || {}];
  if (!record) return false;
  const { [name]: summary, ...rest } = index;
  await tx('readwrite', (s) => {
    s.put({ name, record, summary }, DELETED);
    s.delete(NAMED + name);
    return s.put(rest, INDEX);
  });
  return true;
}

/** The name of the last deleted or overwritten saved session, or '' when there is none. */
export async function deletedName() {
  const d = await loadSession(DELETED);
  return d ? d.name : '';
}

/** Put the last deleted or overwritten saved session back (one now under its name takes the slot). */
export async function undoDelete() {
  const [d, index] = [await loadSession(DELETED), (await loadSession(INDEX)) || {}];
  if (!d) return '';
  if (!(d.name in index) && Object.keys(index).length >= MAX_NAMED) throw new Error(`at most ${MAX_NAMED} saved sessions: delete one first`);
  const now = index[d.name] ? await loadSession(NAMED + d.name) : null;
  await tx('readwrite', (s) => {
    if (now) s.put({ name: d.name, record: now, summary: index[d.name] }, DELETED);
    else s.delete(DELETED);
    s.put(d.record, NAMED + d.name);
    return s.put({ ...index, [d.name]: d.summary }, INDEX);
  });
  return d.name;
}
