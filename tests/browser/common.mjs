// What the browser scripts share (group.mjs uses it; chat.mjs predates it): settings from
// the environment tests/tests/browser.rs sets, Chromium's flags, step logging, pages.

import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { deflateSync } from 'node:zlib';

/** Longest wait for any one condition, in ms. */
export const WAIT = 30_000;

/** A setting from the environment, or `fallback`; throws when neither is there. */
export const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set (tests/tests/browser.rs sets it)`);
  return value;
};

/** Flags that work on a closed network: no sandbox (root in CI), no background fetches. */
export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let step = 'starting';

/** Logs a line of the script's progress. */
export const log = (msg) => console.log(`[browser] ${msg}`);

/** Starts a named step: logged, and named if the script fails. */
export function begin(name) {
  step = name;
  log(name);
}

/** The step running now. */
export const currentStep = () => step;

const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html', '.svg': 'image/svg+xml' };

/**
 * With `KITH_WEB_DIR` (e.g. `node/web`) set, the page's own files come from that directory
 * instead of the node, so a script can run against a running `kith demo` while the web app
 * is edited, without rebuilding the node. The API still comes from the node.
 */
async function serveWebDir(context) {
  const dir = process.env.KITH_WEB_DIR;
  if (!dir) return;
  await context.route(
    (url) => !url.pathname.startsWith('/v1/'),
    (route) => {
      const path = new URL(route.request().url()).pathname;
      const file = join(dir, path === '/' ? 'index.html' : path.slice(1));
      try {
        const body = readFileSync(file);
        return route.fulfill({ body, contentType: TYPES[extname(file)] ?? 'application/octet-stream' });
      } catch {
        return route.continue();
      }
    },
  );
}

/** Opens one user's page in its own browser context, noting any uncaught page error. */
export async function openPage(browser, who, url, problems, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...options });
  await serveWebDir(context);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${who} console: ${m.text()}`);
  });
  await page.goto(url);
  return page;
}

/** The chat list row of a contact or a group. */
export const row = (peer) => `.chat-row[data-peer="${peer}"]`;

/** Runs `main` and exits 0 when it passed, 1 naming the failing step otherwise. */
export function run(main) {
  main().then(
    () => {
      log('all steps passed');
      process.exit(0);
    },
    (err) => {
      console.error(`[browser] FAILED at "${step}": ${err.stack || err}`);
      process.exit(1);
    },
  );
}

/** A PNG with a gradient, `width`×`height`, made here (no fixtures, no deps). */
export function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((x / width) * 255);
      row[2 + x * 3] = Math.round((y / height) * 255);
      row[3 + x * 3] = 160;
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
