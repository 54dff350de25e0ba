// Search, delete for me, the unread count, themes, the narrow layout and drag-and-drop, in a
// real browser with alice's and bob's pages:
//
// - bob writes while alice's tab is hidden: her tab's title counts the unread messages, a
//   desktop notification shows (the Notification API stands in for the browser's, granted)
//   and the live region announces them; opening the conversation clears the count;
// - alice drops a picture on the conversation (a synthetic drop event carrying a File) and
//   sends it; a dropped text file goes as a document, which bob downloads on click;
// - alice replies to bob's message with a quote (it travels in the end-to-end client
//   metadata); bob sees it and a click on it highlights his own message;
// - the page follows the system's dark theme (emulated), checked on a computed colour;
// - after more than a page of bob's messages, alice searches a word of an older message of
//   hers: the result shows the word marked, and a click opens the conversation at that
//   message, highlighted (older pages load until it is there);
// - alice deletes a message for herself: it leaves her page and is still gone after a reload,
//   while bob keeps his copy;
// - at 600 px wide one pane shows at a time: the conversation, or the list after Back.
//
// Run by tests/tests/browser.rs (KITH_ALICE_URL, KITH_BOB_URL, KITH_ALICE_ID, KITH_BOB_ID,
// KITH_SCREENSHOTS, KITH_CHROMIUM). With KITH_DOC_SCREENSHOTS=1 it also saves the light and
// dark screenshots of docs/screenshots/. Every wait is for a condition, bounded by WAIT.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { ARGS, WAIT, begin, env, log, openPage, png, row, run } from './common.mjs';

const ALICE_URL = env('KITH_ALICE_URL');
const BOB_URL = env('KITH_BOB_URL');
const ALICE = env('KITH_ALICE_ID');
const BOB = env('KITH_BOB_ID');
const SHOTS = env('KITH_SCREENSHOTS', 'target/browser');
const CHROMIUM = env('KITH_CHROMIUM', '/usr/bin/chromium');
const DOCS = env('KITH_DOC_SCREENSHOTS', '0') === '1';
const DOCS_DIR = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));

/** More messages than the page loads at once (app.js's PAGE is 40). */
const FILLERS = 50;

/** A JSON API call from inside the page, with the page's own token. */
const api = (page, method, path, body) =>
  page.evaluate(
    async ({ method, path, body }) => {
      const token = sessionStorage.getItem('kith.token');
      const headers = { Authorization: `Bearer ${token}` };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return res.status === 204 ? null : res.json();
    },
    { method, path, body },
  );

/** Sends `text` from the open conversation; returns the new message's id. */
async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#send').click();
  const item = page.locator('li.msg.out', { hasText: text });
  await item.waitFor();
  return item.getAttribute('data-id');
}

/** Drops `files` ({name, type, base64}) on the open conversation, as a file manager would. */
const drop = (page, files) =>
  page.evaluate((files) => {
    const dt = new DataTransfer();
    for (const f of files) {
      const bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], f.name, { type: f.type }));
    }
    const zone = document.getElementById('messages');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
    }
  }, files);

/** Stands in for the browser's Notification API, as granted, noting what it is asked to show. */
function fakeNotifications() {
  window.shownNotes = [];
  window.Notification = class {
    constructor(title, options = {}) {
      window.shownNotes.push({ title, body: options.body });
    }
    close() {}
    static get permission() {
      return 'granted';
    }
    static requestPermission() {
      return Promise.resolve('granted');
    }
  };
}

/** Makes the page believe its tab is hidden (or visible again), as switching tabs would. */
const setHidden = (page, hidden) =>
  page.evaluate((hidden) => {
    if (hidden) {
      Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
    } else {
      delete document.visibilityState;
    }
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);

/** The relative luminance (0 black … 1 white) of a computed `rgb(…)` colour. */
function luminance(rgb) {
  const [r, g, b] = rgb.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}

/** The computed background colours of the sidebar and the message pane. */
const backgrounds = (page) =>
  page.evaluate(() => ({
    sidebar: getComputedStyle(document.querySelector('.app')).backgroundColor,
    chat: getComputedStyle(document.getElementById('chat')).backgroundColor,
  }));

const unreadOf = async (page, peer) => {
  const { chats } = await api(page, 'GET', '/v1/chats');
  const chat = chats.find((c) => c.user_id === peer);
  return chat ? chat.unread : 0;
};

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const problems = [];
  try {
    begin('alice and bob open their pages');
    const alice = await openPage(browser, 'alice', ALICE_URL, problems, {
      viewport: { width: 1000, height: 700 },
    });
    await alice.context().addInitScript(fakeNotifications);
    await alice.reload();
    const bob = await openPage(browser, 'bob', BOB_URL, problems);
    await alice.locator(row(BOB)).waitFor();
    await bob.locator(row(ALICE)).waitFor();
    if (await alice.locator('#notify-ask').isVisible()) {
      throw new Error('notifications are allowed, yet the page asks for them');
    }

    begin("bob writes while alice's tab is hidden: title count, notification, live region");
    const before = await unreadOf(alice, BOB);
    await setHidden(alice, true);
    await bob.locator(row(ALICE)).click();
    await bob.locator('#chat-open').waitFor();
    await send(bob, 'Hi Alice! Are we still on for Saturday?');
    const last = 'I found the photos from the zoo';
    await send(bob, last);
    const want = `(${before + 2}) Kith`;
    await alice.waitForFunction((want) => document.title.startsWith(want), want, { timeout: WAIT });
    await alice.waitForFunction(
      (last) => document.getElementById('live').textContent.includes(last),
      last,
      { timeout: WAIT },
    );
    const notes = await alice.evaluate(() => window.shownNotes);
    if (!notes.some((n) => n.title === 'bob' && n.body === last)) {
      throw new Error(`no notification of "${last}" from bob: ${JSON.stringify(notes)}`);
    }
    log(`title "${await alice.title()}", live "${await alice.locator('#live').textContent()}"`);
    await setHidden(alice, false);

    begin('alice opens the conversation: the count leaves the title');
    await alice.locator(row(BOB)).click();
    await alice.locator('#chat-open').waitFor();
    await alice.waitForFunction(() => document.title.startsWith('Kith'), null, { timeout: WAIT });

    begin('alice writes the message she will search for later');
    const zebra = await send(alice, 'Yes! Did you see the zebra foal by the water?');

    begin('alice drops a picture on the conversation and sends it');
    await drop(alice, [{ name: 'zoo.png', type: 'image/png', base64: png(320, 200).toString('base64') }]);
    await alice.locator('#attachment:not([hidden])', { hasText: 'zoo.png' }).waitFor();
    if (await alice.locator('#drop-hint').isVisible()) throw new Error('the drop hint stayed up');
    await alice.locator('#send').click();
    await alice.locator('li.msg.out .media-img[data-loaded="full"]').waitFor();
    await alice.locator('#attachment').waitFor({ state: 'hidden' });

    begin('a dropped text file goes as a document: name and size, downloaded on click');
    const note = Buffer.from('shopping list').toString('base64');
    await drop(alice, [{ name: 'notes.txt', type: 'text/plain', base64: note }]);
    await alice.locator('#attachment:not([hidden])', { hasText: 'notes.txt' }).waitFor();
    await alice.locator('#send').click();
    await alice.locator('li.msg.out a.media-file', { hasText: 'notes.txt' }).waitFor();
    const doc = bob.locator('li.msg.in a.media-file[href]', { hasText: 'notes.txt' });
    await doc.waitFor();
    const [download] = await Promise.all([bob.waitForEvent('download', { timeout: WAIT }), doc.click()]);
    if (download.suggestedFilename() !== 'notes.txt') {
      throw new Error(`document downloaded as ${download.suggestedFilename()}`);
    }
    const saved = await download.path();
    const got = (await import('node:fs')).readFileSync(saved, 'utf8');
    if (got !== 'shopping list') throw new Error(`document content: ${JSON.stringify(got)}`);

    begin('bob answers');
    const answer = 'Only from far away: it hid behind its mother the whole time';
    await send(bob, answer);
    await alice.locator('li.msg.in', { hasText: answer }).waitFor();

    begin('alice replies to it with a quote; bob sees the quote and it takes him to his message');
    const answered = alice.locator('li.msg.in', { hasText: answer });
    await answered.locator('.bubble').click({ button: 'right' });
    await alice.locator('#msg-reply').click();
    await alice.locator('#reply-bar:not([hidden])', { hasText: 'Only from far away' }).waitFor();
    const reply = 'Shy little thing';
    await send(alice, reply);
    await alice.locator('#reply-bar').waitFor({ state: 'hidden' });
    const quoted = bob.locator('li.msg.in', { hasText: reply }).locator('.quote');
    await quoted.waitFor();
    const quoteText = await quoted.textContent();
    if (!quoteText.includes('You') || !quoteText.includes('Only from far away')) {
      throw new Error(`bob's quote reads ${JSON.stringify(quoteText)}`);
    }
    await quoted.click();
    await bob.locator('li.msg.out.highlight', { hasText: answer }).waitFor();

    begin('the page follows the system theme: light, then dark');
    await alice.emulateMedia({ colorScheme: 'light' });
    const light = await backgrounds(alice);
    if (luminance(light.sidebar) < 0.8 || luminance(light.chat) < 0.6) {
      throw new Error(`light theme is not light: ${JSON.stringify(light)}`);
    }
    await alice.screenshot({ path: join(SHOTS, 'history-light.png') });
    if (DOCS) {
      mkdirSync(DOCS_DIR, { recursive: true });
      await alice.screenshot({ path: join(DOCS_DIR, 'light.png') });
    }
    await alice.emulateMedia({ colorScheme: 'dark' });
    const dark = await backgrounds(alice);
    if (luminance(dark.sidebar) > 0.2 || luminance(dark.chat) > 0.2) {
      throw new Error(`dark theme is not dark: ${JSON.stringify(dark)}`);
    }
    log(`backgrounds light ${JSON.stringify(light)}, dark ${JSON.stringify(dark)}`);
    await alice.screenshot({ path: join(SHOTS, 'history-dark.png') });
    if (DOCS) await alice.screenshot({ path: join(DOCS_DIR, 'dark.png') });
    await alice.emulateMedia({ colorScheme: 'light' });

    begin(`bob sends ${FILLERS} more messages, more than a page`);
    for (let i = 1; i <= FILLERS; i++) {
      await api(bob, 'POST', '/v1/messages', { to: ALICE, text: `message number ${i}.` });
    }
    const newest = alice.locator('li.msg.in', { hasText: `message number ${FILLERS}.` });
    await newest.waitFor();
    const newestId = await newest.getAttribute('data-id');

    begin('alice reloads, searches "zebr" and sees her message with the word marked');
    await alice.reload();
    await alice.locator(row(BOB)).waitFor();
    await alice.locator('#search').fill('zebr');
    const result = alice.locator(`.search-row[data-id="${zebra}"]`);
    await result.waitFor();
    const rows = await alice.locator('.search-row').count();
    const mark = await result.locator('mark').first().textContent();
    if (rows !== 1 || mark.toLowerCase() !== 'zebr') {
      throw new Error(`expected one result with "zebr" marked, got ${rows} and "${mark}"`);
    }
    if (await alice.locator('#chat-list').isVisible()) throw new Error('the chat list stayed up');

    begin('a click opens the conversation at that message, highlighted');
    await result.click();
    const jumped = alice.locator(`li.msg.highlight[data-id="${zebra}"]`);
    await jumped.waitFor();
    await alice.waitForFunction(
      (id) => {
        const item = document.querySelector(`li.msg[data-id="${id}"]`);
        const pane = document.getElementById('messages').getBoundingClientRect();
        const r = item && item.getBoundingClientRect();
        return r && r.top >= pane.top && r.bottom <= pane.bottom;
      },
      zebra,
      { timeout: WAIT },
    );
    await alice.screenshot({ path: join(SHOTS, 'history-search.png') });
    await alice.locator('#search').fill('');
    await alice.locator('#chat-list').waitFor();

    begin('a right click on a message opens its menu; Escape closes it');
    const target = alice.locator(`li.msg[data-id="${newestId}"]`);
    await target.scrollIntoViewIfNeeded();
    await target.locator('.bubble').click({ button: 'right' });
    await alice.locator('#msg-menu:not([hidden])').waitFor();
    await alice.keyboard.press('Escape');
    await alice.locator('#msg-menu').waitFor({ state: 'hidden' });

    begin('alice deletes the newest message for herself');
    await target.hover();
    await target.locator('.msg-more').click();
    await alice.locator('#msg-delete').click();
    await alice.locator('#delete-dialog[open]').waitFor();
    await alice.locator('#delete-confirm').click();
    await target.waitFor({ state: 'detached' });
    const page = await api(alice, 'GET', `/v1/conversations/${BOB}?count=5`);
    if (page.messages.some((m) => m.id === newestId)) throw new Error('the node still has it');

    begin('it stays gone after a reload; bob keeps his copy');
    await alice.reload();
    await alice.locator(row(BOB)).click();
    await alice.locator('li.msg.in', { hasText: `message number ${FILLERS - 1}.` }).waitFor();
    if ((await alice.locator(`li.msg[data-id="${newestId}"]`).count()) !== 0) {
      throw new Error('the deleted message came back');
    }
    const bobs = await api(bob, 'GET', `/v1/conversations/${ALICE}?count=5`);
    if (!bobs.messages.some((m) => m.id === newestId)) throw new Error("bob's copy is gone");

    begin('at 600 px one pane shows: the conversation, Back to the list, a row back to it');
    await alice.setViewportSize({ width: 600, height: 800 });
    await alice.locator('#back').waitFor();
    if (await alice.locator('.sidebar').isVisible()) throw new Error('the list shows beside the chat');
    await alice.screenshot({ path: join(SHOTS, 'history-narrow-chat.png') });
    await alice.locator('#back').click();
    await alice.locator('.sidebar').waitFor();
    await alice.locator('#chat').waitFor({ state: 'hidden' });
    const width = await alice.locator('.sidebar').evaluate((e) => e.getBoundingClientRect().width);
    if (width < 590) throw new Error(`the list is ${width} px wide, not the whole width`);
    await alice.screenshot({ path: join(SHOTS, 'history-narrow-list.png') });
    await alice.locator(row(BOB)).click();
    await alice.locator('#chat-open').waitFor();
    await alice.locator('.sidebar').waitFor({ state: 'hidden' });

    begin('at 1000 px both panes show again');
    await alice.setViewportSize({ width: 1000, height: 700 });
    await alice.locator('.sidebar').waitFor();
    await alice.locator('#back').waitFor({ state: 'hidden' });

    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run(main);
