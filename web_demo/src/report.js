// The run as something to keep: the accuracy curve (train and held-out validation accuracy per
// epoch) drawn on a canvas, and a small report ZIP — report.json (classes, photos per class, the
// run's settings and per-epoch numbers), report.md (the same as a table) and accuracy.png.
import { zipSync, strToU8 } from 'fflate';

const COLORS = { train: '#36c', val: '#d60' };

/** Train (blue) and validation (orange) accuracy per epoch on `canvas`, 0..100%; nothing without epochs. */
export function drawAccuracy(canvas, history, title = '') {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, h);
  canvas.hidden = !history || !history.length;
  if (canvas.hidden) return;
  const [left, right, top, bottom] = [40, 10, title ? 34 : 20, 24];
  const x = (i) => left + (history.length > 1 ? (i / (history.length - 1)) * (w - left - right) : (w - left - right) / 2);
  const y = (a) => h - bottom - a * (h - top - bottom);
  ctx.font = '12px sans-serif';
  ctx.strokeStyle = '#ddd';
  ctx.fillStyle = '#666';
  for (const a of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.beginPath();
    ctx.moveTo(left, y(a));
    ctx.lineTo(w - right, y(a));
    ctx.stroke();
    ctx.fillText(`${100 * a}%`, 4, y(a) + 4);
  }
  ctx.fillText(`epoch 1..${history.length}`, left, h - 6);
  if (title) ctx.fillText(title, left, 14);
  for (const [key, color] of [['trainAccuracy', COLORS.train], ['valAccuracy', COLORS.val]]) {
    const points = history.map((e, i) => [x(i), e[key]]).filter(([, a]) => a !== null && a !== undefined);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([px, a], i) => (i ? ctx.lineTo(px, y(a)) : ctx.moveTo(px, y(a))));
    ctx.stroke();
    for (const [px, a] of points) ctx.fillRect(px - 2, y(a) - 2, 4, 4);
  }
  ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.train;
  ctx.fillText('train', w - 120, top - 4);
  ctx.fillStyle = COLORS.val;
  ctx.fillText('validation', w - 80, top - 4);
}

const pct = (a) => (a === null || a === undefined ? '–' : `${(100 * a).toFixed(1)}%`);

/** report.md: the report's numbers as a short Markdown page. */
function markdown(r) {
  const lines = [`# ${r.model} — fine-tuned in the browser`, '', `Saved ${r.createdAt}.`, '',
    '| class | photos | trained on | held out |', '|---|---|---|---|',
    ...r.classes.map((c) => `| ${c.name} | ${c.photos} | ${c.trained} | ${c.heldOut} |`), '',
    `Last run: ${r.run.epochs} epochs, ${r.run.steps} steps, learning rate ${r.run.lr}, ${r.run.views} cached view(s) per photo; `
    + `${r.run.totalSteps} steps trained in this browser in all.`, '',
    '| epoch | loss | train accuracy | validation accuracy |', '|---|---|---|---|',
    ...r.history.map((e) => `| ${e.epoch} | ${e.loss.toFixed(4)} | ${pct(e.trainAccuracy)} | ${pct(e.valAccuracy)} |`), '',
    '![accuracy per epoch](accuracy.png)', ''];
  return lines.join('\n');
}

/**
 * The report ZIP's bytes.
 * @param {object} report {model, createdAt, classes: [{name, photos, trained, heldOut}], run, history}
 * @param {Blob} png the accuracy curve
 */
export async function reportZip(report, png) {
  return zipSync({
    'report.json': strToU8(JSON.stringify(report, null, 1)),
    'report.md': strToU8(markdown(report)),
    'accuracy.png': [new Uint8Array(await png.arrayBuffer()), { level: 0 }],
  });
}

/** The curve as a PNG Blob (canvas.toBlob) on a canvas of its own, 640 x 320. */
export function accuracyPng(history, title) {
  const canvas = document.createElement('canvas');
  canvas.width = 640;
  canvas.height = 320;
  drawAccuracy(canvas, history, title);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the browser could not encode the PNG'))), 'image/png'));
}
