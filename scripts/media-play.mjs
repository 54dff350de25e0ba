// Plays a received video in headless Chromium from a node's `GET /v1/media/{hash}`.
//
// Run by scripts/media-demo.sh, which passes:
//   KITH_ORIGIN          the node's API / web app origin, http://127.0.0.1:PORT
//   KITH_HASH            the media hash
//   KITH_TOKEN           the node's API token
//   KITH_PLAYWRIGHT_DIR  a directory whose node_modules holds playwright-core
//   KITH_PROFILE         a fresh Chromium user-data directory
//   KITH_CHROMIUM        the browser (default /usr/bin/chromium)
//   KITH_MIN_WIDTH       the video width expected (default 1280)
//
// The page is the node's own web app origin, so the API's Origin check passes. The video is
// played twice, muted: (1) streamed, from a token-free media link (`POST /v1/media/{hash}/link`)
// set as <video src>, so Chromium asks for it with Range requests (skipped on a node without
// links); (2) whole, fetched with `Authorization: Bearer` into a Blob and played from a blob:
// URL (a <video src> cannot send the header). Each passes when the video has a finite
// duration, the expected width, and has played more than 1 s. Exits 0 when both pass, 1
// with the reason otherwise.

import { createRequire } from 'node:module';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set (scripts/media-demo.sh sets it)`);
  return value;
};

const ORIGIN = env('KITH_ORIGIN');
const HASH = env('KITH_HASH');
const TOKEN = env('KITH_TOKEN');
const PW_DIR = env('KITH_PLAYWRIGHT_DIR');
const PROFILE = env('KITH_PROFILE');
const CHROMIUM = env('KITH_CHROMIUM', '/usr/bin/chromium');
const WIDTH = Number(env('KITH_MIN_WIDTH', '1280'));
/** Longest wait for the whole fetch-and-play, ms. */
const WAIT = 180_000;

const { chromium } = createRequire(join(PW_DIR, 'package.json'))('playwright-core');

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

// A persistent context is how playwright takes a fresh --user-data-dir.
const browser = await chromium.launchPersistentContext(PROFILE, { executablePath: CHROMIUM, args: ARGS });
let failed = null;
/** Responses to the streamed video's requests: status and Range asked. */
const ranges = [];
const log_ranges = () => {
  if (ranges.length) console.log(`  the browser's requests: ${ranges.slice(0, 6).join(', ')}${ranges.length > 6 ? ', …' : ''}`);
};
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname === `/v1/media/${HASH}` && u.searchParams.has('cap')) {
      ranges.push(`${r.status()} ${r.request().headers()['range'] ?? '(no range)'}`);
    }
  });
  await page.goto(`${ORIGIN}/`);
  // Plays `src` muted in a new <video>; resolves when more than 1 s has played.
  await page.evaluate(() => {
    window.__kithPlay = (src, wait) =>
      new Promise((resolve) => {
        const video = document.createElement('video');
        video.muted = true;
        video.playsInline = true;
        document.body.appendChild(video);
        const done = (r) => {
          clearTimeout(timer);
          video.pause();
          resolve({
            ...r,
            currentTime: video.currentTime,
            duration: video.duration,
            width: video.videoWidth,
            height: video.videoHeight,
          });
        };
        const timer = setTimeout(() => done({ error: `no 1 s of playback within ${wait} ms` }), wait);
        video.addEventListener('error', () =>
          done({ error: `the video element failed: code ${video.error?.code} ${video.error?.message ?? ''}` }),
        );
        video.addEventListener('timeupdate', () => {
          if (video.currentTime > 1) done({});
        });
        video.src = src;
        video.play().catch((e) => done({ error: `play() refused: ${e}` }));
      });
  });
  // 1. Streaming: a token-free link (`POST /v1/media/{hash}/link`) as <video src>, so the
  //    browser itself asks with Range, as the web app does. Skipped on a node without links.
  const streamed = await page.evaluate(
    async ({ hash, token, wait }) => {
      const res = await fetch(`/v1/media/${hash}/link`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
      });
      if (res.status === 404 || res.status === 405) return { skipped: `link answered ${res.status}` };
      if (!res.ok) return { error: `POST /v1/media/${hash}/link answered ${res.status}: ${await res.text()}` };
      const { url } = await res.json();
      return await window.__kithPlay(url, wait);
    },
    { hash: HASH, token: TOKEN, wait: WAIT },
  );
  // 2. Whole file: fetched with the token into a Blob and played from a blob: URL.
  const whole = await page.evaluate(
    async ({ hash, token, wait }) => {
      const started = performance.now();
      const res = await fetch(`/v1/media/${hash}`, { headers: { Authorization: `Bearer ${token}` } });
      if (!res.ok) return { error: `GET /v1/media/${hash} answered ${res.status}: ${await res.text()}` };
      const type = res.headers.get('content-type');
      const blob = await res.blob();
      const fetchMs = Math.round(performance.now() - started);
      const played = await window.__kithPlay(URL.createObjectURL(blob), wait);
      return { ...played, type, bytes: blob.size, fetchMs };
    },
    { hash: HASH, token: TOKEN, wait: WAIT },
  );
  const check = (how, r) => {
    if (r.skipped) {
      console.log(`${how}: skipped (${r.skipped})`);
      return;
    }
    if (r.error) throw new Error(`${how}: ${r.error}`);
    if (!Number.isFinite(r.duration) || r.duration <= 1) throw new Error(`${how}: the duration is ${r.duration}`);
    if (r.width !== WIDTH) throw new Error(`${how}: the video is ${r.width}x${r.height}, not ${WIDTH} wide`);
    const fetched = r.bytes === undefined ? '' : `fetched ${r.bytes} bytes (${r.type}) in ${r.fetchMs} ms; `;
    console.log(
      `${how}: ${fetched}played ${r.currentTime.toFixed(2)} s of ${r.duration.toFixed(1)} s ` +
        `${r.width}x${r.height} video`,
    );
  };
  check('streamed <video src> (media link, Range requests)', streamed);
  log_ranges();
  check('whole file (fetch with token → blob: URL)', whole);
} catch (e) {
  failed = e instanceof Error ? e.message : String(e);
} finally {
  await browser.close();
}
if (failed) {
  console.error(`media-play: FAILED: ${failed}`);
  process.exit(1);
}
