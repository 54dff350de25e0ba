// Searching messages from the chat list: the search box calls `GET /v1/search`, the results
// replace the chat list while it holds words (chat name, time and a snippet with the words
// marked), and a click opens that conversation at that message (jumpTo: older pages are
// loaded until it is there, within a bound, and it is highlighted).
//
// app.js owns the page's state and hands this module what it needs through initSearch().
// Text from the network only ever goes into the page as textContent.

import { call } from './api.js';

const $ = (id) => document.getElementById(id);

/** Results per page of `GET /v1/search`. */
const RESULTS = 20;
/** Wait this long (ms) after the last keystroke before searching. */
const TYPING_PAUSE = 250;
/** Snippets longer than this are cut around the first match. */
const SNIPPET_CHARS = 140;
/** A jump loads at most this many older pages looking for its message. */
const JUMP_PAGES = 50;

/** What app.js lends this module (see initSearch). */
let ui = null;

/** The words searched for now, the next page's offset, and a counter dropping late answers. */
let query = '';
let nextOffset = null;
let asked = 0;
let typingTimer = null;

/**
 * Wires the search box. `ctx` carries app.js's state and helpers: state, el, chatName,
 * shortId, listTime, senderName, openChat, loadOlder, report, showBanner.
 */
export function initSearch(ctx) {
  ui = ctx;
  const box = $('search');
  box.addEventListener('input', () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => search(box.value), TYPING_PAUSE);
  });
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      box.value = '';
      search('');
    } else if (e.key === 'Enter') {
      clearTimeout(typingTimer);
      search(box.value);
    } else if (e.key === 'ArrowDown') {
      const first = $('search-list').querySelector('.search-row');
      if (first) {
        e.preventDefault();
        first.focus();
      }
    }
  });
  $('search-more').addEventListener('click', () => fetchPage(query, nextOffset));
}

/** The conversation a message belongs to: its group, or the other person. */
export const chatOf = (m) => m.group || (m.outgoing ? m.to : m.from);

/** The lowercased words of a query, split as the node splits them. */
function words(text) {
  return text
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w !== '');
}

/** A regular expression finding the start of any of `terms` at the start of a word. */
function matcher(terms) {
  if (terms.length === 0) return null;
  const escaped = terms
    .sort((a, b) => b.length - a.length)
    .map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${escaped.join('|')})`, 'giu');
}

/** `text` as nodes, with each match of `re` in a <mark>; cut around the first when long. */
function marked(text, re) {
  let shown = text;
  if (re && text.length > SNIPPET_CHARS) {
    re.lastIndex = 0;
    const first = re.exec(text);
    const start = first ? Math.max(0, first.index - 40) : 0;
    shown = (start > 0 ? '\u2026' : '') + text.slice(start, start + SNIPPET_CHARS) + '\u2026';
  }
  const out = [];
  let at = 0;
  if (re) {
    re.lastIndex = 0;
    for (const m of shown.matchAll(re)) {
      if (m.index > at) out.push(document.createTextNode(shown.slice(at, m.index)));
      out.push(ui.el('mark', '', m[0]));
      at = m.index + m[0].length;
    }
  }
  if (at < shown.length) out.push(document.createTextNode(shown.slice(at)));
  return out;
}

/** Shows the results of `text` (the chat list again when it is empty). */
async function search(text) {
  const q = text.trim();
  const searching = q !== '';
  document.querySelector('.sidebar').classList.toggle('searching', searching);
  $('search-results').hidden = !searching;
  if (q === query && searching) return;
  query = q;
  $('search-list').replaceChildren();
  $('search-more').hidden = true;
  if (!searching) {
    asked++;
    return;
  }
  await fetchPage(q, 0);
}

async function fetchPage(q, offset) {
  if (offset == null) return;
  const mine = ++asked;
  $('search-state').textContent = 'Searching\u2026';
  try {
    const params = new URLSearchParams({ q, offset: String(offset), count: String(RESULTS) });
    const page = await call('GET', `/v1/search?${params}`);
    if (mine !== asked) return;
    const re = matcher(words(q));
    for (const m of page.messages) $('search-list').append(resultRow(m, re));
    nextOffset = page.next_offset;
    $('search-more').hidden = nextOffset == null;
    const n = $('search-list').children.length;
    $('search-state').textContent =
      n === 0 ? 'No messages found.' : `${n}${nextOffset == null ? '' : '+'} message${n === 1 ? '' : 's'} found`;
  } catch (err) {
    if (mine !== asked) return;
    $('search-state').textContent = '';
    ui.report(err, 'Searching');
  }
}

function resultRow(m, re) {
  const chatId = chatOf(m);
  const chat = ui.state.chats.get(chatId);
  const li = ui.el('li', 'search-row');
  li.dataset.id = m.id;
  li.dataset.chat = chatId;
  li.tabIndex = 0;
  li.setAttribute('role', 'button');
  const top = ui.el('div', 'chat-top');
  top.append(ui.el('span', 'chat-name', chat ? ui.chatName(chat) : ui.shortId(chatId)));
  top.append(ui.el('span', 'chat-time', ui.listTime(m.sent_at_ms)));
  const line = ui.el('div', 'search-snippet');
  if (m.outgoing) line.append(ui.el('span', 'search-who', 'You: '));
  else if (m.group) line.append(ui.el('span', 'search-who', `${ui.senderName(m.from, m.group)}: `));
  const kind = m.media ? (m.media.mime.startsWith('video/') ? 'Video' : 'Photo') : '';
  if (kind) line.append(`${kind}${m.text ? ': ' : ''}`);
  line.append(...marked(m.text, re));
  li.append(top, line);
  const go = () => jumpTo(chatId, m.id);
  li.addEventListener('click', go);
  li.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      go();
    } else if (e.key === 'ArrowDown' && li.nextElementSibling) {
      e.preventDefault();
      li.nextElementSibling.focus();
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      (li.previousElementSibling || $('search')).focus();
    }
  });
  return li;
}

/** Drops a deleted message from the results shown. */
export function forgetResult(id) {
  const row = $('search-list').querySelector(`.search-row[data-id="${CSS.escape(id)}"]`);
  if (row) row.remove();
}

/**
 * Opens `chat` (unless open) and shows message `id` in it, highlighted: older pages are
 * loaded until it is there, at most JUMP_PAGES of them.
 */
export async function jumpTo(chat, id) {
  const state = ui.state;
  for (const row of $('search-list').querySelectorAll('.search-row.active')) {
    row.classList.remove('active');
  }
  const row = $('search-list').querySelector(`.search-row[data-id="${CSS.escape(id)}"]`);
  if (row) row.classList.add('active');
  if (state.open !== chat) await ui.openChat(chat, { focus: false });
  const generation = state.generation;
  for (let pages = 0; !state.messages.some((m) => m.id === id); pages++) {
    if (pages >= JUMP_PAGES || !state.hasMore || generation !== state.generation) break;
    if (!(await ui.loadOlder())) break;
  }
  if (generation !== state.generation) return;
  if (!state.messages.some((m) => m.id === id)) {
    ui.showBanner('That message is too far back in this conversation to show here.', {
      kind: 'info',
    });
    return;
  }
  state.highlight = id;
  const list = $('message-list');
  for (const old of list.querySelectorAll('li.msg.highlight')) old.classList.remove('highlight');
  const item = list.querySelector(`li.msg[data-id="${CSS.escape(id)}"]`);
  if (!item) return;
  item.classList.add('highlight');
  state.stick = false;
  item.scrollIntoView({ block: 'center' });
}
