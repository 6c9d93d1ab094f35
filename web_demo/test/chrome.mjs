// Shared by the test driver and the benchmark: Chromium's flags (as root, headless, no
// network side channels) and a /proc reading of its processes' memory.
import { readdirSync, readFileSync } from 'node:fs';

export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Every Chromium process of this profile: type, VmRSS and VmHWM (peak) in kB, from /proc (Linux). */
export function chromeMemory(profile) {
  const browserPid = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).find((pid) => {
    try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`--user-data-dir=${profile}`) && !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--type='); } catch { return false; }
  });
  if (!browserPid) return [];
  const kids = (pid) => {
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch { return []; }
  };
  const all = [];
  const walk = (pid) => { all.push(pid); kids(pid).forEach(walk); };
  walk(browserPid);
  const per = all.map((pid) => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const kb = (k) => Number((new RegExp(`${k}:\\s+(\\d+)`).exec(status) || [0, 0])[1]);
      const type = (/--type=([\w-]+)/.exec(cmd) || [0, 'browser'])[1];
      return { pid, type, rss_kb: kb('VmRSS'), hwm_kb: kb('VmHWM') };
    } catch { return null; }
  }).filter(Boolean);
  return per;
}


/** CPU seconds (user + system) used so far by every Chromium process of this profile. */
export function chromeCpuSeconds(profile) {
  const TICKS = 100; // Linux USER_HZ
  return chromeMemory(profile).reduce((sum, p) => {
    try {
      const fields = readFileSync(`/proc/${p.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return sum + (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime
    } catch { return sum; }
  }, 0);
}

/** Page errors and console errors; LiteRT INFO/WARNING lines that still arrive as console errors go to infoAsErrors. */
export function watchErrors(page, infoAsErrors = []) {
  const errors = [];
  page.on('pageerror', (e) => { errors.push(String(e)); console.error(`page error: ${e}`); });
  // LiteRT.js logs INFO and WARNING lines through console.error: those are not errors.
  page.on('console', (m) => {
    if (m.type() === 'error' && /^(INFO|WARNING): /.test(m.text())) infoAsErrors.push(m.text());
    else if (m.type() === 'error') {
      errors.push(m.text());
      console.error(`console: ${m.text()}`);
    }
  });
  return errors;
}
