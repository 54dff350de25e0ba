// Settings and verification in a real browser: alice turns her read receipts off in the
// Settings dialog (and sets a profile name), then alice and bob write and read each other's
// messages: delivered ticks come both ways and no blue tick shows on either page. Then each
// opens the verification panel of the other: the same 12 groups of 5 digits and a QR code;
// alice marks bob verified and her conversation header says so.
//
// Run by tests/tests/browser.rs (KITH_ALICE_URL, KITH_BOB_URL, KITH_ALICE_ID, KITH_BOB_ID,
// KITH_SCREENSHOTS, KITH_CHROMIUM). Every wait is for a condition, bounded by WAIT.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { ARGS, WAIT, begin, env, log, openPage, row, run } from './common.mjs';

const ALICE_URL = env('KITH_ALICE_URL');
const BOB_URL = env('KITH_BOB_URL');
const ALICE = env('KITH_ALICE_ID');
const BOB = env('KITH_BOB_ID');
const SHOTS = env('KITH_SCREENSHOTS', 'target/browser');
const CHROMIUM = env('KITH_CHROMIUM', '/usr/bin/chromium');

/** A JSON API call from inside the page, with the page's own token. */
const api = (page, method, path) =>
  page.evaluate(
    async ({ method, path }) => {
      const token = sessionStorage.getItem('kith.token');
      const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` } });
      return res.status === 204 ? null : res.json();
    },
    { method, path },
  );

/** Polls `check` (an async function) until it is true, for at most WAIT. */
async function until(what, check) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sends `text` from the open conversation; returns the new message's id. */
async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#send').click();
  const item = page.locator('li.msg.out', { hasText: text });
  await item.waitFor();
  return item.getAttribute('data-id');
}

const delivered = (page, id) =>
  page.locator(`li.msg.out[data-id="${id}"] .tick[data-status="delivered"]`).waitFor();

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const problems = [];
  try {
    begin('alice and bob open their pages');
    const alice = await openPage(browser, 'alice', ALICE_URL, problems);
    const bob = await openPage(browser, 'bob', BOB_URL, problems);
    await alice.locator(row(BOB)).waitFor();
    await bob.locator(row(ALICE)).waitFor();

    begin('alice turns read receipts off and names herself in Settings');
    await alice.locator('#open-settings').click();
    await alice.locator('#settings-dialog[open]').waitFor();
    if (!(await alice.locator('#set-read-receipts').isChecked())) {
      throw new Error('read receipts should start on');
    }
    await alice.locator('#set-profile-name').fill('Alice Liddell');
    await alice.locator('#set-read-receipts').uncheck();
    await alice.locator('#settings-save').click();
    await alice.locator('#settings-dialog').waitFor({ state: 'hidden' });
    const saved = await api(alice, 'GET', '/v1/settings');
    if (saved.read_receipts !== false || saved.profile_name !== 'Alice Liddell') {
      throw new Error(`settings not saved: ${JSON.stringify(saved)}`);
    }

    begin("bob's node learns alice's profile (name, read receipts off)");
    await until("alice's profile at bob", async () => {
      const { contacts } = await api(bob, 'GET', '/v1/contacts');
      const a = contacts.find((c) => c.user_id === ALICE);
      return a && a.profile_name === 'Alice Liddell' && a.read_receipts === false;
    });

    begin('they write to each other and read, with both conversations open');
    await alice.locator(row(BOB)).click();
    await alice.locator('#chat-open').waitFor();
    await bob.locator(row(ALICE)).click();
    await bob.locator('#chat-open').waitFor();
    const fromAlice = await send(alice, `from alice ${Date.now()}`);
    const fromBob = await send(bob, `from bob ${Date.now()}`);
    await delivered(alice, fromAlice);
    await delivered(bob, fromBob);

    begin('later messages are delivered after any read receipt would have been');
    const againAlice = await send(alice, `again from alice ${Date.now()}`);
    const againBob = await send(bob, `again from bob ${Date.now()}`);
    await delivered(alice, againAlice);
    await delivered(bob, againBob);

    begin('no blue ticks on either page');
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      const blue = await page.locator('.tick[data-status="read"]').count();
      if (blue !== 0) throw new Error(`${who}'s page shows ${blue} blue ticks`);
    }

    begin('both open the verification panel: the same 12 groups and a QR code');
    const numbers = [];
    for (const page of [alice, bob]) {
      await page.locator('#verify-open').click();
      await page.locator('#verify-dialog[open]').waitFor();
      await page.locator('#safety-groups .safety-group').nth(11).waitFor();
      const groups = await page.locator('#safety-groups .safety-group').allTextContents();
      if (groups.length !== 12 || !groups.every((g) => /^\d{5}$/.test(g))) {
        throw new Error(`bad groups: ${JSON.stringify(groups)}`);
      }
      numbers.push(groups.join(' '));
      await page.waitForFunction(() => {
        const img = document.getElementById('safety-qr');
        return img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:');
      });
    }
    if (numbers[0] !== numbers[1]) throw new Error(`numbers differ: ${numbers[0]} / ${numbers[1]}`);
    log(`safety number ${numbers[0]}`);

    begin('alice marks bob verified; her header says so');
    await alice.locator('#verify-toggle').click();
    await alice.locator('#verify-state', { hasText: 'Verified' }).waitFor();
    await alice.screenshot({ path: join(SHOTS, 'settings-verify-alice.png') });
    await alice.locator('#verify-close').click();
    await alice.locator('#peer-verified').waitFor({ state: 'visible' });
    await bob.locator('#verify-close').click();
    await bob.screenshot({ path: join(SHOTS, 'settings-bob.png') });

    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run(main);
