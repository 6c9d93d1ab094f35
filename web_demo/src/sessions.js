// "Saved sessions": the current session saved under a name, several kept (src/store.js, IndexedDB),
// each loaded or deleted from a list. Loading asks first when this session has unsaved work, and the
// replaced session stays "the previous session" (its undo); a deleted or overwritten saved session
// can be brought back with "Undo delete".
import { saveSession, listNamed, checkName, saveNamed, loadNamed, deleteNamed, deletedName, undoDelete, MAX_NAMED } from './store.js';

const $ = (id) => document.getElementById(id);
let ctx = null; // {app, fail, showError, summary, record}

function say(text) {
  $('sessions-status').textContent = text;
  ctx.showError('sessions', '');
}

/** What this session would lose if replaced now ('' when nothing). */
function unsavedWork() {
  const { app } = ctx;
  if (!app.model || !(app.features.length || app.trainedSteps) || !app.unsaved) return '';
  return `${app.features.length} photos, ${app.trainedSteps} trained steps${app.sessionName ? `, changed since saved as "${app.sessionName}"` : ', never saved'}`;
}

async function save() {
  const name = checkName($('session-name').value);
  const existing = (await listNamed()).some(([n]) => n === name);
  if (existing && !confirm(`Replace the saved session "${name}" with this one? "Undo delete" brings the old one back.`)) return;
  await saveSession(await ctx.record());
  await saveNamed(name, ctx.summary());
  Object.assign(ctx.app, { sessionName: name, unsaved: false });
  await refreshSessions();
  say(`saved as "${name}"${existing ? ' (the old one can be brought back with "Undo delete")' : ''}`);
}

async function load(name) {
  const work = unsavedWork();
  if (work && !confirm(`Load "${name}"? It replaces this session (${work}); "Bring back the previous session" undoes it.`)) return;
  await loadNamed(name);
  location.reload();
}

async function remove(name) {
  if (!confirm(`Delete the saved session "${name}"? "Undo delete" brings it back.`)) return;
  await deleteNamed(name);
  await refreshSessions();
  say(`deleted "${name}"`);
}

async function restoreDeleted() {
  const name = await undoDelete();
  await refreshSessions();
  say(name ? `brought back "${name}"` : '');
}

function row(name, info) {
  const li = document.createElement('li');
  const open = ctx.app.sessionName === name ? (ctx.app.unsaved ? ' · open, changed since saved' : ' · open') : '';
  li.innerHTML = '<span class="session-name"></span> <span class="hint"></span> <button data-load>Load</button> <button data-delete>Delete</button>';
  li.querySelector('.session-name').textContent = name;
  li.querySelector('.hint').textContent = `${info.modelName} · ${info.photos} photos · ${info.steps} steps · `
    + `${new Date(info.savedAt).toLocaleString()}${open}`;
  li.querySelector('[data-load]').addEventListener('click', () => load(name).catch(ctx.fail));
  li.querySelector('[data-delete]').addEventListener('click', () => remove(name).catch(ctx.fail));
  li.dataset.session = name;
  return li;
}

/** Redraw the list and the undo button from IndexedDB. */
export async function refreshSessions() {
  if (!ctx) return;
  const named = await listNamed();
  $('session-list').replaceChildren(...named.map(([name, info]) => row(name, info)));
  $('sessions-empty').hidden = named.length > 0;
  const deleted = await deletedName();
  $('session-undo-delete').hidden = !deleted;
  $('session-undo-delete').textContent = `Undo delete of "${deleted}"`;
  for (const b of document.querySelectorAll('#sessions button')) b.disabled = ctx.app.busy;
  $('session-save').disabled = ctx.app.busy || !ctx.app.model;
}

export function initSessions(context) {
  ctx = context;
  $('sessions-limit').textContent = `up to ${MAX_NAMED}`;
  $('session-save').addEventListener('click', () => save().catch(ctx.fail));
  $('session-undo-delete').addEventListener('click', () => restoreDeleted().catch(ctx.fail));
  refreshSessions().catch(ctx.fail);
}
