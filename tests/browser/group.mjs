// A group chat in the browser: alice, bob and carol, each on their own node's page.
//
// Run by tests/tests/browser.rs, which starts the nodes (every pair already contacts, named
// alice, bob and carol) and passes their addresses:
//   KITH_ALICE_URL, KITH_BOB_URL, KITH_CAROL_URL   http://127.0.0.1:PORT/#token=…
//   KITH_ALICE_ID,  KITH_BOB_ID,  KITH_CAROL_ID    user ids
//   KITH_SCREENSHOTS                               where the screenshots go
//   KITH_CHROMIUM                                  the browser (default /usr/bin/chromium)
//
// alice creates a group with bob and carol from the page and writes; bob and carol see the
// message with alice's name; both read it, so alice's ticks turn blue and its message info
// shows each member's read. bob sends the group a picture, which both others see. alice removes carol: carol's page says she is no longer a
// member, and alice's next message reaches bob but not carol. Then alice renames the group.
//
// Every wait is for a condition on the page, bounded by WAIT; nothing sleeps for a fixed
// time. Exits 0 when every step passed, 1 with the failing step otherwise.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ARGS, WAIT, begin, env, log, openPage, png, row, run } from './common.mjs';

const URLS = {
  alice: env('KITH_ALICE_URL'),
  bob: env('KITH_BOB_URL'),
  carol: env('KITH_CAROL_URL'),
};
const ALICE = env('KITH_ALICE_ID');
const BOB = env('KITH_BOB_ID');
const CAROL = env('KITH_CAROL_ID');
const SHOTS = env('KITH_SCREENSHOTS', 'target/browser');
const CHROMIUM = env('KITH_CHROMIUM', '/usr/bin/chromium');

/** The blue of read ticks (style.css --blue-tick). */
const BLUE = 'rgb(52, 183, 241)';

/** A conversation page straight from a user's node, newest first (with the page's token). */
function conversation(page, peer) {
  return page.evaluate(async (peer) => {
    const token = sessionStorage.getItem('kith.token');
    const res = await fetch(`/v1/conversations/${peer}?count=200`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (!res.ok) throw new Error(`conversation ${peer}: ${res.status}`);
    return (await res.json()).messages;
  }, peer);
}

/** Sends a text to the open conversation from the composer; returns the message's id. */
async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
  const item = page.locator('li.msg.out', { hasText: text });
  await item.waitFor();
  return item.getAttribute('data-id');
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const problems = [];
  const pages = {};
  try {
    begin('alice, bob and carol open their pages');
    for (const who of ['alice', 'bob', 'carol']) {
      pages[who] = await openPage(browser, who, URLS[who], problems);
    }
    const { alice, bob, carol } = pages;
    await alice.locator(row(BOB)).waitFor();
    await alice.locator(row(CAROL)).waitFor();
    await bob.locator(row(ALICE)).waitFor();
    await carol.locator(row(ALICE)).waitFor();

    begin('alice creates a group with bob and carol');
    const name = `Climbing ${Date.now() % 100000}`;
    await alice.locator('#new-group').click();
    await alice.locator('#group-new-dialog').waitFor();
    await alice.locator('#group-new-name').fill(name);
    await alice.locator(`#group-new-contacts input[value="${BOB}"]`).check();
    await alice.locator(`#group-new-contacts input[value="${CAROL}"]`).check();
    await alice.locator('#group-new-submit').click();
    await alice.locator('#group-new-dialog').waitFor({ state: 'hidden' });
    await alice.waitForFunction((n) => document.querySelector('#peer-name')?.textContent === n, name);
    const groupRow = alice.locator('.chat-row[data-kind="group"]', { hasText: name });
    await groupRow.waitFor();
    const group = await groupRow.getAttribute('data-peer');
    if (!/^[0-9a-f]{32}$/.test(group)) throw new Error(`group id ${group}`);
    await alice.locator(`${row(group)} .chat-members`, { hasText: '3 members' }).waitFor();
    await alice.locator('#group-info-open').waitFor();

    begin('bob and carol get the group in their chat lists, live');
    for (const page of [bob, carol]) {
      await page.locator(`${row(group)}[data-kind="group"]`, { hasText: name }).waitFor();
    }

    begin('alice writes to the group');
    const first = `hello group ${Date.now()}`;
    const firstId = await send(alice, first);

    begin("bob and carol see it, unread, under alice's name");
    for (const page of [bob, carol]) {
      await page.waitForFunction(
        ([sel, want]) => {
          const r = document.querySelector(sel);
          const last = r?.querySelector('.chat-last')?.textContent ?? '';
          return last.includes(want) && last.includes('alice: ') &&
            r.querySelector('.unread')?.textContent === '1';
        },
        [row(group), first],
        { timeout: WAIT },
      );
    }

    begin('bob and carol open the group: the message shows alice as its sender');
    for (const page of [bob, carol]) {
      await page.locator(row(group)).click();
      const item = page.locator('li.msg.in', { hasText: first });
      await item.waitFor();
      const sender = await item.locator('.sender').textContent();
      if (sender !== 'alice') throw new Error(`sender shows as "${sender}"`);
      await page.waitForFunction(() => document.querySelector('#peer-presence')?.textContent.includes('alice'));
      await page.locator(`${row(group)} .unread`).waitFor({ state: 'detached' });
    }

    begin("both read it: alice's ticks turn blue");
    const tick = alice.locator(`li.msg.out[data-id="${firstId}"] .tick[data-status="read"]`);
    await tick.waitFor();
    const colour = await tick.evaluate((e) => getComputedStyle(e).color);
    if (colour !== BLUE) throw new Error(`read tick is ${colour}, not blue`);

    begin("alice's message info shows that bob and carol read it");
    await alice.locator(`li.msg.out[data-id="${firstId}"] .info-button`).click();
    await alice.locator('#info-dialog').waitFor();
    for (const user of [BOB, CAROL]) {
      await alice.locator(`#info-members li[data-user="${user}"][data-status="read"] .tick[data-status="read"]`).waitFor();
    }
    const infoNames = await alice.locator('#info-members .member-name').allTextContents();
    if (infoNames.sort().join(',') !== 'bob,carol') throw new Error(`message info lists ${infoNames}`);
    await alice.screenshot({ path: join(SHOTS, 'alice-group-info.png') });
    await alice.locator('#info-close').click();
    await alice.locator('#info-dialog').waitFor({ state: 'hidden' });

    begin("bob sends the group a picture; alice and carol see it under bob's name");
    await bob.locator('#file-input').setInputFiles({
      name: 'crag.png',
      mimeType: 'image/png',
      buffer: png(160, 100),
    });
    await bob.locator('#attachment').waitFor();
    await bob.locator('#text').fill('the crag');
    await bob.locator('#send').click();
    await bob.locator('#upload').waitFor({ state: 'hidden' });
    for (const page of [alice, carol]) {
      const item = page.locator('li.msg.in', { hasText: 'the crag' });
      await item.locator('.sender', { hasText: 'bob' }).waitFor();
      await item.locator('img.media-img[data-loaded="full"]').waitFor();
    }

    begin('the group info panel lists the members; bob sees no admin buttons');
    await bob.locator('#group-info-open').click();
    await bob.locator('#group-dialog').waitFor();
    for (const user of [ALICE, BOB, CAROL]) {
      await bob.locator(`#group-members li[data-user="${user}"]`).waitFor();
    }
    await bob.locator(`#group-members li[data-user="${ALICE}"] .member-admin`).waitFor();
    if ((await bob.locator('#group-members .member-remove').count()) > 0) {
      throw new Error('bob, not an admin, is offered Remove');
    }
    if (await bob.locator('#group-add-form').isVisible()) throw new Error('bob is offered Add');
    await bob.locator('#group-close').click();

    begin('alice removes carol from the group info panel');
    await alice.locator('#group-info-open').click();
    await alice.locator('#group-dialog').waitFor();
    const carolRow = alice.locator(`#group-members li[data-user="${CAROL}"]`);
    await carolRow.locator('.member-remove').click();
    await carolRow.waitFor({ state: 'detached' });
    // carol is a contact again, not a member: she is offered in "Add a contact"
    await alice.locator(`#group-add-select option[value="${CAROL}"]`).waitFor({ state: 'attached' });
    await alice.locator('#group-close').click();
    await alice.locator(`${row(group)} .chat-members`, { hasText: '2 members' }).waitFor();

    begin("carol's page shows she is no longer a member");
    await carol.locator('#group-gone').waitFor();
    await carol.locator('#composer').waitFor({ state: 'hidden' });
    await carol.waitForFunction(
      () => document.querySelector('#peer-presence')?.textContent === 'You are no longer a member',
    );

    begin('alice writes again: bob gets it, carol does not');
    const second = `after carol left ${Date.now()}`;
    const secondId = await send(alice, second);
    await bob.locator('li.msg.in', { hasText: second }).waitFor();
    await alice
      .locator(`li.msg.out[data-id="${secondId}"] .tick[data-status="read"]`)
      .waitFor();
    // A one-to-one message alice sends carol after it: once carol has that, the group
    // message had its chance to arrive too.
    await alice.locator(row(CAROL)).click();
    const direct = `just you, carol ${Date.now()}`;
    await send(alice, direct);
    await carol.waitForFunction(
      ([sel, want]) => document.querySelector(sel)?.querySelector('.chat-last')?.textContent.includes(want),
      [row(ALICE), direct],
      { timeout: WAIT },
    );
    const held = await conversation(carol, group);
    if (held.some((m) => m.text === second)) throw new Error('carol holds the message sent after her removal');
    if (!held.some((m) => m.text === first)) throw new Error('carol lost the message from before her removal');
    if ((await carol.locator('li.msg', { hasText: second }).count()) > 0) {
      throw new Error("carol's page shows the message sent after her removal");
    }
    const carolRowText = await carol.locator(`${row(group)} .chat-last`).textContent();
    if (carolRowText.includes(second)) throw new Error(`carol's chat row shows "${carolRowText}"`);

    begin('alice renames the group; bob sees the new name');
    const renamed = `${name} (renamed)`;
    await alice.locator(row(group)).click();
    await alice.locator('#group-info-open').click();
    await alice.locator('#group-rename-name').fill(renamed);
    await alice.locator('#group-rename-submit').click();
    await alice.locator('#group-title', { hasText: renamed }).waitFor();
    await alice.locator('#group-close').click();
    await bob.locator(`${row(group)} .chat-name`, { hasText: renamed }).waitFor();
    await bob.waitForFunction((n) => document.querySelector('#peer-name')?.textContent === n, renamed);

    if (problems.length > 0) throw new Error(problems.join('; '));
    begin('screenshots');
    for (const [who, page] of Object.entries(pages)) {
      await page.screenshot({ path: join(SHOTS, `${who}-group.png`) });
    }
    log(`screenshots in ${SHOTS}/{alice,bob,carol}-group.png and alice-group-info.png`);
  } catch (err) {
    // keep what the pages looked like when it failed
    for (const [who, page] of Object.entries(pages)) {
      await page.screenshot({ path: join(SHOTS, `${who}-group-failed.png`) }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
}

run(main);
