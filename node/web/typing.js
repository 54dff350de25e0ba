// "typing…": while the user types in a one-to-one conversation, the page tells the node at
// most every SEND_EVERY_MS (`POST /v1/conversations/{user}/typing`), which passes it on only
// over a direct link that is up, never through store peers, and nobody stores it. A contact's
// `typing` event shows "typing…" under their name for SHOW_MS, or until their message comes.
//
// app.js hands this module what it needs through initTyping().

import { call } from './api.js';

const $ = (id) => document.getElementById(id);

/** How often, at most, typing is told to the node while the user types. */
const SEND_EVERY_MS = 3000;
/** How long a contact's "typing…" shows without news. */
const SHOW_MS = 6000;

/** What app.js lends this module (see initTyping). */
let ui = null;
/** Contacts shown typing: user id → the timer that ends it. */
const shown = new Map();
let lastPeer = null;
let lastSent = 0;

/** Wires the composer. `ctx`: state, isGroup, renderHeader. */
export function initTyping(ctx) {
  ui = ctx;
  $('text').addEventListener('input', () => {
    const peer = ui.state.open;
    if (!peer || ui.isGroup(peer) || $('text').value.trim() === '') return;
    const now = Date.now();
    if (peer === lastPeer && now - lastSent < SEND_EVERY_MS) return;
    lastPeer = peer;
    lastSent = now;
    call('POST', `/v1/conversations/${encodeURIComponent(peer)}/typing`, { typing: true }).catch(
      () => {}, // ephemeral: a lost one is no loss
    );
  });
}

/** A `typing` event: `peer` types (or stopped). */
export function onTyping({ peer, typing }) {
  clearTimeout(shown.get(peer));
  shown.delete(peer);
  if (typing) {
    shown.set(
      peer,
      setTimeout(() => {
        shown.delete(peer);
        if (ui.state.open === peer) ui.renderHeader();
      }, SHOW_MS),
    );
  }
  if (ui.state.open === peer) ui.renderHeader();
}

/** Their message came: they are no longer typing it. */
export function stoppedTyping(peer) {
  if (!shown.has(peer)) return;
  clearTimeout(shown.get(peer));
  shown.delete(peer);
  if (ui.state.open === peer) ui.renderHeader();
}

/** Whether `peer` is shown typing. */
export const isTyping = (peer) => shown.has(peer);
