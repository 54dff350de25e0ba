// Telling the user a message came: a desktop notification while the tab is hidden (when the
// `notifications` setting is on and the browser allows them; the permission is asked from a
// button the user clicks, as browsers require), and a spoken announcement through a visually
// hidden aria-live region for screen readers. The unread total is in the tab's title
// (app.js's renderChats).
//
// app.js hands this module what it needs through initNotify() and calls onIncoming() for
// every message someone else sent.

import { settings } from './settings.js';

const $ = (id) => document.getElementById(id);

/** What app.js lends this module (see initNotify). */
let ui = null;

/** The notification shown per conversation, replaced by the next one from there. */
const shown = new Map();

const supported = () => 'Notification' in window;

/** Wires the permission button. `ctx` carries: chatName, senderName, snippet, openChat. */
export function initNotify(ctx) {
  ui = ctx;
  $('notify-ask').addEventListener('click', askPermission);
  // the Settings dialog may have turned notifications on or off
  $('settings-dialog').addEventListener('close', updateAsk);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    for (const n of shown.values()) n.close();
    shown.clear();
  });
}

/** Shows the "Turn on desktop notifications" button while it would do something. */
export function updateAsk() {
  $('notify-ask').hidden = !(
    settings &&
    settings.notifications &&
    supported() &&
    Notification.permission === 'default'
  );
}

async function askPermission() {
  try {
    await Notification.requestPermission();
  } catch {
    // an old browser without the promise form: nothing more to do
  }
  updateAsk();
}

/** Says `text` to screen readers (the live region is polite: it waits for a pause). */
export function announce(text) {
  $('live').textContent = text;
}

/** A message from someone else arrived in `chat` (the chat list's entry). */
export function onIncoming(chatId, chat, message) {
  const name = ui.chatName(chat);
  const from = message.group ? `${ui.senderName(message.from, message.group)} in ${name}` : name;
  const text = ui.snippet(message);
  announce(`New message from ${from}: ${text}`);
  if (document.visibilityState !== 'hidden') return;
  if (!settings || !settings.notifications) return;
  if (!supported() || Notification.permission !== 'granted') return;
  try {
    const n = new Notification(from, { body: text, tag: chatId });
    n.onclick = () => {
      window.focus();
      ui.openChat(chatId);
      n.close();
    };
    n.onclose = () => {
      if (shown.get(chatId) === n) shown.delete(chatId);
    };
    shown.set(chatId, n);
  } catch {
    // some browsers allow notifications only from a service worker: nothing to show then
  }
}
