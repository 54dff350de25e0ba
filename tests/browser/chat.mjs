// The web app in a real browser: alice and bob chat through their own nodes' pages.
//
// Run by tests/tests/browser.rs, which starts the nodes and passes their addresses:
//   KITH_ALICE_URL, KITH_BOB_URL   http://127.0.0.1:PORT/#token=… (what `kith open` prints)
//   KITH_ALICE_ID,  KITH_BOB_ID    user ids
//   KITH_SCREENSHOTS               where alice.png and bob.png go
//   KITH_CHROMIUM                  the browser (default /usr/bin/chromium)
//   KITH_BROWSER_MEDIA=0           skip the media steps (a node without the media API)
//   KITH_MAX_MEDIA                 the nodes' largest media file in bytes (for "too large")
//
// Every wait is for a condition on the page, bounded by WAIT; nothing sleeps for a fixed
// time. Exits 0 when every step passed, 1 with the failing step otherwise.

import { createServer } from 'node:http';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

/** Longest wait for any one condition, in ms. */
const WAIT = 30_000;

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set (tests/tests/browser.rs sets it)`);
  return value;
};

const ALICE_URL = env('KITH_ALICE_URL');
const BOB_URL = env('KITH_BOB_URL');
const ALICE = env('KITH_ALICE_ID');
const BOB = env('KITH_BOB_ID');
const SHOTS = env('KITH_SCREENSHOTS', 'target/browser');
const CHROMIUM = env('KITH_CHROMIUM', '/usr/bin/chromium');
const MEDIA = env('KITH_BROWSER_MEDIA', '1') !== '0';
const MAX_MEDIA = Number(env('KITH_MAX_MEDIA', '0'));

/** Flags that work on a closed network: no sandbox (root in CI), no background fetches. */
const ARGS = [
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
const log = (msg) => console.log(`[browser] ${msg}`);
function begin(name) {
  step = name;
  log(name);
}

/** A solid-colour PNG with a gradient, `width`×`height`, made here (no fixtures, no deps). */
function png(width, height) {
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

/** Opens one user's page in its own browser context, failing on any uncaught page error. */
async function openPage(browser, who, url, problems) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${who} console: ${m.text()}`);
  });
  await page.goto(url);
  return page;
}

const row = (peer) => `.chat-row[data-peer="${peer}"]`;

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const problems = [];
  let alice;
  let bob;
  try {
    begin('alice and bob open their pages');
    alice = await openPage(browser, 'alice', ALICE_URL, problems);
    bob = await openPage(browser, 'bob', BOB_URL, problems);
    await alice.locator(row(BOB)).waitFor();
    await bob.locator(row(ALICE)).waitFor();

    begin('the token left the address bar and stays in the tab');
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      const { hash, stored } = await page.evaluate(() => ({
        hash: location.hash,
        stored: sessionStorage.getItem('kith.token') !== null,
      }));
      if (hash !== '' || !stored) throw new Error(`${who}: hash ${hash}, token kept ${stored}`);
    }

    begin('alice sends bob a message');
    const text = `hello bob, from the browser ${Date.now()}`;
    await alice.locator(row(BOB)).click();
    await alice.locator('#chat-open').waitFor();
    await alice.locator('#text').fill(text);
    await alice.locator('#text').press('Enter');
    const sent = alice.locator('li.msg.out', { hasText: text });
    await sent.waitFor();
    const id = await sent.getAttribute('data-id');

    begin("bob's page shows it live, unread, without a reload");
    await bob.waitForFunction(
      ([sel, want]) => {
        const r = document.querySelector(sel);
        return !!r && r.querySelector('.chat-last')?.textContent.includes(want) &&
          r.querySelector('.unread')?.textContent === '1';
      },
      [row(ALICE), text],
      { timeout: WAIT },
    );

    begin('alice sees ✓✓ delivered');
    await alice
      .locator(`li.msg.out[data-id="${id}"] .tick[data-status="delivered"], li.msg.out[data-id="${id}"] .tick[data-status="read"]`)
      .waitFor();

    begin('bob opens the chat: the message is there and the unread badge goes');
    await bob.locator(row(ALICE)).click();
    await bob.locator('li.msg.in', { hasText: text }).waitFor();
    await bob.locator(`${row(ALICE)} .unread`).waitFor({ state: 'detached' });

    begin("alice's page shows the blue ticks");
    const tick = alice.locator(`li.msg.out[data-id="${id}"] .tick[data-status="read"]`);
    await tick.waitFor();
    const colour = await tick.evaluate((e) => getComputedStyle(e).color);
    if (colour !== 'rgb(52, 183, 241)') throw new Error(`read tick is ${colour}, not blue`);

    begin('each sees the other online');
    await alice.waitForFunction(() => document.querySelector('#peer-presence')?.textContent === 'online');
    await bob.waitForFunction(() => document.querySelector('#peer-presence')?.textContent === 'online');

    begin('bob replies; alice has the chat open, so it is read at once');
    const reply = `hi alice ${Date.now()}`;
    await bob.locator('#text').fill(reply);
    await bob.locator('#send').click();
    await alice.locator('li.msg.in', { hasText: reply }).waitFor();
    await bob.locator(`li.msg.out:has-text("${reply}") .tick[data-status="read"]`).waitFor();

    begin('history pages in backwards as bob scrolls up, after a reload (the tab keeps the token)');
    const filler = 70; // more than the page's first page of 40
    await alice.evaluate(
      async ([to, n]) => {
        const token = sessionStorage.getItem('kith.token');
        for (let i = 1; i <= n; i++) {
          const res = await fetch('/v1/messages', {
            method: 'POST',
            headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
            body: JSON.stringify({ to, text: `filler ${i} of ${n}` }),
          });
          if (res.status !== 201) throw new Error(`sending filler ${i}: ${res.status}`);
        }
      },
      [BOB, filler],
    );
    const lastFiller = `filler ${filler} of ${filler}`;
    await bob.locator('li.msg.in', { hasText: lastFiller }).waitFor();
    await bob.reload();
    await bob.locator(row(ALICE)).click();
    await bob.locator('li.msg.in', { hasText: lastFiller }).waitFor();
    const firstPage = await bob.locator('li.msg').count();
    if (firstPage >= filler + 2) throw new Error(`first page already holds ${firstPage} messages`);
    // scroll to the top until alice's first message has been paged in
    await bob.waitForFunction(
      (first) => {
        const box = document.querySelector('#messages');
        box.scrollTop = 0;
        const all = [...document.querySelectorAll('li.msg')];
        return all.length > 0 && all[0].textContent.includes(first);
      },
      text,
      { timeout: WAIT, polling: 250 },
    );
    await bob.locator('#history-state', { hasText: 'beginning of your conversation' }).waitFor();
    const ids = await bob.locator('li.msg').evaluateAll((lis) => lis.map((li) => li.dataset.id));
    if (new Set(ids).size !== ids.length) throw new Error('a message is shown twice');
    if (ids.length !== filler + 2) throw new Error(`${ids.length} messages shown, want ${filler + 2}`);
    await bob.evaluate(() => {
      const box = document.querySelector('#messages');
      box.scrollTop = box.scrollHeight;
    });
    await alice.locator('li.msg.out', { hasText: lastFiller }).locator('.tick[data-status="read"]').waitFor();

    if (MEDIA) {
      begin('bob sends an image; it appears in alice\u2019s chat');
      const image = png(320, 200);
      await bob.locator('#file-input').setInputFiles({
        name: 'gradient.png',
        mimeType: 'image/png',
        buffer: image,
      });
      await bob.locator('#attachment').waitFor();
      await bob.locator('#text').fill('a picture');
      await bob.locator('#send').click();
      await bob.locator('#upload').waitFor({ state: 'hidden' });
      await bob.locator('li.msg.out img.media-img[data-loaded="full"]').waitFor();
      const img = alice.locator('li.msg.in', { hasText: 'a picture' }).locator('img.media-img[data-loaded="full"]');
      await img.waitFor();
      await alice.waitForFunction(
        () => [...document.querySelectorAll('li.msg.in img.media-img[data-loaded="full"]')]
          .some((i) => i.complete && i.naturalWidth === 320 && i.naturalHeight === 200),
        null,
        { timeout: WAIT },
      );

      if (MAX_MEDIA > 0) {
        begin('a file over the node\u2019s limit gives a clear error');
        await bob.locator('#file-input').setInputFiles({
          name: 'too-big.mp4',
          mimeType: 'video/mp4',
          buffer: Buffer.alloc(MAX_MEDIA + 4096, 7),
        });
        await bob.locator('#send').click();
        await bob.locator('#banner', { hasText: 'too large' }).waitFor();
        await bob.locator('#upload').waitFor({ state: 'hidden' });
        await bob.locator('#banner-close').click();
        if ((await bob.locator('li.msg', { hasText: 'too-big' }).count()) > 0) {
          throw new Error('the refused file shows as a message');
        }
      }
    } else {
      log('media steps skipped (KITH_BROWSER_MEDIA=0)');
    }

    begin('a bad invite gives a clear error');
    await alice.locator('#add-contact').click();
    await alice.locator('#add-invite').fill('kith:not-an-invite');
    await alice.locator('#add-submit').click();
    await alice.locator('#add-error').waitFor();
    const error = await alice.locator('#add-error').textContent();
    if (!/invite is not valid/i.test(error)) throw new Error(`add-contact error: ${error}`);
    await alice.locator('#add-cancel').click();

    begin('alice shows her invite as text and as a QR code');
    await alice.locator('#show-invite').click();
    await alice.waitForFunction(() => document.querySelector('#invite-text')?.value.startsWith('kith:'));
    await alice.waitForFunction(() => {
      const qr = document.querySelector('#invite-qr');
      return qr && qr.complete && qr.naturalWidth >= 100;
    });
    await alice.locator('#invite-close').click();

    begin('a page from another origin cannot use the API, even holding the token');
    await crossOriginRefused(browser, ALICE_URL);

    if (problems.length > 0) throw new Error(problems.join('; '));
    begin('screenshots');
    await alice.screenshot({ path: join(SHOTS, 'alice.png') });
    await bob.screenshot({ path: join(SHOTS, 'bob.png') });
    log(`screenshots in ${SHOTS}/alice.png and ${SHOTS}/bob.png`);
  } catch (err) {
    // keep what the pages looked like when it failed
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      if (page) await page.screenshot({ path: join(SHOTS, `${who}-failed.png`) }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
}

/** Serves a blank page on another loopback port and has it call alice's API with her token. */
async function crossOriginRefused(browser, apiUrl) {
  const server = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>elsewhere</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    await page.goto(`http://127.0.0.1:${port}/`);
    const api = new URL(apiUrl);
    const token = new URLSearchParams(api.hash.slice(1)).get('token');
    const outcome = await page.evaluate(
      async ([origin, token]) => {
        const results = {};
        for (const [name, init] of [
          ['with token', { headers: { Authorization: `Bearer ${token}` } }],
          ['plain', {}],
        ]) {
          try {
            const res = await fetch(`${origin}/v1/me`, init);
            results[name] = `read ${res.status}: ${(await res.text()).slice(0, 60)}`;
          } catch (e) {
            results[name] = 'refused';
          }
        }
        return results;
      },
      [api.origin, token],
    );
    for (const [name, result] of Object.entries(outcome)) {
      if (result !== 'refused') throw new Error(`cross-origin fetch ${name}: ${result}`);
    }
  } finally {
    await context.close();
    server.close();
  }
}

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
