// Reply with a quote. The quote travels inside the end-to-end payload, in the message's
// client metadata (`client_meta.reply_to = {id, from, text}`: the quoted message's id, its
// sender and a snippet of at most QUOTE_CHARS characters), so store peers see nothing new and
// any client can show it. The quoted message need not be on the reader's node: the snippet is
// shown as carried; a click jumps to the message when it is there and says so when it is not.
// A reply_to that is not of that shape is ignored (the message shows without a quote).
//
// app.js hands this module what it needs through initReply().

import { jumpTo, chatOf } from './search.js';

const $ = (id) => document.getElementById(id);

/** Most characters of the quoted text carried with a reply. */
const QUOTE_CHARS = 160;

/** What app.js lends this module (see initReply). */
let ui = null;

/** The message being replied to, as it will be carried, or null. */
let replying = null;

/** Wires the reply bar. `ctx`: state, el, snippet, senderName, shortId, showBanner. */
export function initReply(ctx) {
  ui = ctx;
  $('reply-cancel').addEventListener('click', () => cancelReply());
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && replying) cancelReply();
  });
}

/** Starts a reply to `message` (from the message menu). */
export function startReply(message) {
  const text = (ui.snippet(message) || '').slice(0, QUOTE_CHARS);
  replying = { id: message.id, from: message.from, text };
  $('reply-name').textContent = whoName(message.from, message.group);
  $('reply-text').textContent = text;
  $('reply-bar').hidden = false;
  $('text').focus();
}

/** Drops the reply being written (also when another conversation opens). */
export function cancelReply() {
  replying = null;
  $('reply-bar').hidden = true;
}

/** The client metadata a text sent now carries (`{reply_to}` while replying); ends the reply. */
export function takeReplyMeta() {
  if (!replying) return {};
  const meta = { reply_to: replying };
  cancelReply();
  return meta;
}

function whoName(user, group) {
  if (ui.state.me && user === ui.state.me.user_id) return 'You';
  return ui.senderName(user, group);
}

/** A carried quote, checked: `{id, from, text}` strings of sane length, or null. */
function quoteOf(message) {
  const q = message.client_meta && message.client_meta.reply_to;
  if (!q || typeof q !== 'object') return null;
  const { id, from, text } = q;
  if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) return null;
  if (typeof from !== 'string' || from.length > 200) return null;
  if (typeof text !== 'string') return null;
  return { id, from, text: text.slice(0, QUOTE_CHARS) };
}

/** The quote block shown above a reply's text, or null when it carries none. */
export function quoteBlock(message) {
  const q = quoteOf(message);
  if (!q) return null;
  const box = ui.el('button', 'quote');
  box.type = 'button';
  box.title = 'Show the quoted message';
  box.append(ui.el('span', 'quote-name', whoName(q.from, message.group)));
  box.append(ui.el('span', 'quote-text', q.text));
  box.addEventListener('click', () => {
    jumpTo(chatOf(message), q.id).catch(() =>
      ui.showBanner('The quoted message is not on this device.', { kind: 'info' }),
    );
  });
  return box;
}
