// The Kith web app: conversation list, chat view, composer, contacts and invite. Group chats'
// own dialogs (new group, group info, message info) are in groups.js; settings and
// verification in settings.js; search and jump-to-message in search.js; the message menu
// (delete for me) in actions.js; notifications and screen reader announcements in notify.js;
// drag-and-drop and paste of files in drop.js.
//
// Plain DOM, no framework: the state below is the single source of truth, events from the
// node (/v1/events) and answers to calls update it, and small render functions redraw the
// affected part. Text from the network only ever goes into the page as textContent.

import { ApiError, blobUrl, call, followEvents, forgetToken, takeToken, upload } from './api.js';
import {
  canWrite,
  groupLine,
  groups,
  initGroups,
  isGroup,
  loadGroups,
  onGroupEvent,
  onStatus,
  openMessageInfo,
  senderName,
} from './groups.js';
import { initSettings, loadSettings, onContactEvent, renderContactNotes } from './settings.js';
import { initSearch } from './search.js';
import { actionButton, initActions } from './actions.js';
import { initNotify, onIncoming, updateAsk } from './notify.js';
import { initDrop } from './drop.js';
import { cancelReply, initReply, quoteBlock, takeReplyMeta } from './reply.js';
import { initTyping, isTyping, onTyping, stoppedTyping } from './typing.js';

/** Messages per page when loading history (the Conversation API's `count`). */
const PAGE = 40;
/** Load older messages when scrolled this close (px) to the top. */
const LOAD_OLDER_AT = 150;

const $ = (id) => document.getElementById(id);

/** Everything the page knows. */
const state = {
  /** `GET /v1/me`. */
  me: null,
  /** A name for this window (`#label=` in the address), e.g. in `kith demo`. */
  label: null,
  /** user id (or group id) → chat view from `GET /v1/chats`, kept current by events. */
  chats: new Map(),
  /** The user id (or group id) of the open conversation, or null. */
  open: null,
  /** Messages of the open conversation, oldest first. */
  messages: [],
  /** Whether older messages remain on the node. */
  hasMore: false,
  /** A history page is being fetched. */
  loadingOlder: false,
  /** Bumped on every chat switch so late answers for another chat are dropped. */
  generation: 0,
  /** The file chosen in the composer, sent with the next Send. */
  attachment: null,
  /** Whether /v1/events is connected. */
  live: false,
  /** The message pane was at its bottom when last scrolled: keep it there as media loads. */
  stick: true,
  /** The message a search result jumped to, shown highlighted. */
  highlight: null,
};

/** `GET /v1/requests`: strangers who wrote first, with their first message when known. */
let requests = [];

/** `${hash}:full|preview` → Promise of a blob URL (kept for the page's life). */
const mediaUrls = new Map();

// ---------------------------------------------------------------- small helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const shortId = (id) => (id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id);

function chatName(chat) {
  return chat && chat.name ? chat.name : chat ? shortId(chat.user_id) : '';
}

const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** "Today", "Yesterday" or a date. */
function dayName(ms) {
  const d = new Date(ms);
  const now = new Date();
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (sameDay(d, now)) return 'Today';
  if (sameDay(d, yesterday)) return 'Yesterday';
  const opts = { day: 'numeric', month: 'short' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

/** The time shown in the chat list: a clock today, else the day. */
function listTime(ms) {
  return sameDay(new Date(ms), new Date()) ? clock(ms) : dayName(ms);
}

/** How messages to a contact travel now, discreetly: "" while direct (the normal case). */
function routeLine(presence) {
  if (!presence) return '';
  if (presence.route === 'relayed') return '· via relay';
  if (presence.route === 'store') return '· via store peers';
  return '';
}

const ROUTE_TITLES = {
  direct: 'Connected directly',
  relayed: 'Connected through a relay (end-to-end encrypted; the relay sees only that you talk)',
  store: 'Not connected: messages wait on store peers until they can be delivered',
};

/** "online", "last seen today at 14:05", or "" when hidden or unknown. */
function presenceLine(presence) {
  if (!presence) return '';
  if (presence.online) return 'online';
  if (presence.last_seen_ms == null) return '';
  const day = dayName(presence.last_seen_ms);
  const when = day === 'Today' || day === 'Yesterday' ? day.toLowerCase() : `on ${day}`;
  return `last seen ${when} at ${clock(presence.last_seen_ms)}`;
}

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

const mediaKind = (mime) =>
  mime.startsWith('image/') ? 'image' : mime.startsWith('video/') ? 'video' : 'file';

/** A line of text standing for a message in the chat list. */
function snippet(message) {
  if (message.media) {
    const kind = { image: 'Photo', video: 'Video', file: message.media.name }[
      mediaKind(message.media.mime)
    ];
    return message.text ? `${kind}: ${message.text}` : kind;
  }
  return message.text;
}

const TICKS = {
  pending:
    '<svg viewBox="0 0 16 16"><circle cx="8" cy="8" r="6"/><path d="M8 4.8V8l2.2 1.4"/></svg>',
  sent: '<svg viewBox="0 0 16 16"><path d="M3 8.5l3 3L13 4.5"/></svg>',
  delivered: '<svg viewBox="0 0 18 16"><path d="M1.5 8.5l3 3L11.5 4.5M7.5 11.5L14.5 4.5"/></svg>',
  read: '<svg viewBox="0 0 18 16"><path d="M1.5 8.5l3 3L11.5 4.5M7.5 11.5L14.5 4.5"/></svg>',
};
const TICK_TITLES = {
  pending: 'Waiting to send',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
};

/** The tick of an outgoing message: clock, ✓, ✓✓, or blue ✓✓. */
function tick(status) {
  const span = el('span', 'tick');
  span.dataset.status = status;
  span.title = TICK_TITLES[status] ?? status;
  span.setAttribute('aria-label', span.title);
  span.innerHTML = TICKS[status] ?? ''; // constant markup only
  return span;
}

// ---------------------------------------------------------------- errors

let bannerTimer = null;

/** Shows a message at the top; `sticky` ones stay until replaced or dismissed. */
function showBanner(text, { sticky = false, kind = 'error' } = {}) {
  $('banner-text').textContent = text;
  $('banner').dataset.kind = kind;
  $('banner').hidden = false;
  clearTimeout(bannerTimer);
  if (!sticky) bannerTimer = setTimeout(hideBanner, 8000);
}

function hideBanner() {
  $('banner').hidden = true;
}

/** A sentence for a person, from an API error. */
function explain(err, doing) {
  if (!(err instanceof ApiError)) return `${doing}: ${err}`;
  switch (err.code) {
    case 'offline':
      return `${doing}: your node is offline. Start it with \`kith run\`.`;
    case 'unknown_contact':
      return `${doing}: that user is not one of your contacts. Add them with their invite first.`;
    case 'too_large':
      return `${doing}: too large. ${err.message}`;
    case 'bad_invite':
      return `That invite is not valid: ${err.message}`;
    case 'not_found':
      return `${doing}: ${err.message}`;
    case 'not_admin':
      return `${doing}: only the group\u2019s admins can do that.`;
    case 'not_member':
      return `${doing}: you are no longer a member of this group.`;
    default:
      return `${doing}: ${err.message}`;
  }
}

function report(err, doing) {
  if (err instanceof ApiError && err.status === 401) {
    lock('Your node refused this page\u2019s token (it may have changed).');
    return;
  }
  showBanner(explain(err, doing));
}

/** Shows the "needs a token" screen. */
function lock(reason) {
  forgetToken();
  $('app').hidden = true;
  $('locked').hidden = false;
  if (reason) $('locked-reason').textContent = reason;
}

// ---------------------------------------------------------------- chat list

function sortedChats() {
  return [...state.chats.values()].sort((a, b) => {
    const ta = a.last_message ? a.last_message.sent_at_ms : -1;
    const tb = b.last_message ? b.last_message.sent_at_ms : -1;
    return tb - ta || chatName(a).localeCompare(chatName(b));
  });
}

function renderChats() {
  const list = $('chat-list');
  list.replaceChildren();
  const chats = sortedChats();
  $('no-chats').hidden = chats.length > 0;
  let unreadTotal = 0;
  for (const chat of chats) {
    unreadTotal += chat.unread;
    const li = el('li', 'chat-row');
    li.dataset.peer = chat.user_id;
    li.dataset.kind = chat.kind || 'contact';
    li.tabIndex = 0;
    li.setAttribute('role', 'button');
    if (chat.user_id === state.open) li.classList.add('active');

    const avatar = el('div', 'avatar', chatName(chat).slice(0, 1).toUpperCase());
    if (chat.kind === 'group') avatar.classList.add('group');
    if (chat.presence && chat.presence.online) avatar.classList.add('online');
    li.append(avatar);

    const body = el('div', 'chat-body');
    const top = el('div', 'chat-top');
    top.append(el('span', 'chat-name', chatName(chat)));
    if (chat.last_message) top.append(el('span', 'chat-time', listTime(chat.last_message.sent_at_ms)));
    const group = chat.kind === 'group';
    const presence = group
      ? el('div', 'chat-members', `${chat.members} member${chat.members === 1 ? '' : 's'}`)
      : el('div', 'chat-presence', presenceLine(chat.presence));
    const bottom = el('div', 'chat-bottom');
    const last = el('span', 'chat-last');
    if (chat.last_message) {
      if (chat.last_message.outgoing) last.append(tick(chat.last_message.status), ' ');
      else if (group) last.append(`${senderName(chat.last_message.from, chat.user_id)}: `);
      last.append(snippet(chat.last_message));
    } else {
      last.append('No messages yet');
      last.classList.add('muted');
    }
    bottom.append(last);
    if (chat.unread > 0) {
      bottom.append(el('span', 'unread', chat.unread >= 1000 ? '999+' : String(chat.unread)));
    }
    body.append(top, presence, bottom);
    li.append(body);
    li.addEventListener('click', () => openChat(chat.user_id));
    li.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        openChat(chat.user_id);
      }
    });
    list.append(li);
  }
  const who = state.label ? ` \u2014 ${state.label}` : '';
  document.title = `${unreadTotal > 0 ? `(${unreadTotal}) ` : ''}Kith${who}`;
}

async function loadChats() {
  const { chats } = await call('GET', '/v1/chats');
  state.chats = new Map(chats.map((c) => [c.user_id, c]));
  renderChats();
  renderHeader();
}

// ---------------------------------------------------------------- message requests

/** Loads the requests and the newest message of each, then redraws them. */
async function loadRequests() {
  const answer = await call('GET', '/v1/requests');
  requests = await Promise.all(
    answer.requests.map(async (r) => {
      try {
        const page = await call('GET', `/v1/conversations/${encodeURIComponent(r.user_id)}?count=1`);
        return { ...r, first: page.messages[0] || null };
      } catch {
        return { ...r, first: null };
      }
    }),
  );
  renderRequests();
}

function renderRequests() {
  const list = $('request-list');
  list.replaceChildren();
  $('requests').hidden = requests.length === 0;
  for (const r of requests) {
    const li = el('li', 'request-row');
    const who = el('div', 'request-who');
    who.append(el('div', 'chat-name', shortId(r.user_id)));
    who.title = r.user_id;
    const first = r.first ? snippet(r.first) : `${r.messages} message(s)`;
    who.append(el('div', 'request-first', first));
    const accept = el('button', 'request-accept', 'Accept');
    accept.type = 'button';
    accept.addEventListener('click', () => answerRequest(r.user_id, 'accept'));
    const block = el('button', 'request-block', 'Block');
    block.type = 'button';
    block.addEventListener('click', () => answerRequest(r.user_id, 'block'));
    li.append(who, accept, block);
    list.append(li);
  }
}

/** Accepts (the sender becomes a contact) or blocks (what they send is dropped) a request. */
async function answerRequest(user, answer) {
  try {
    await call('POST', `/v1/requests/${encodeURIComponent(user)}/${answer}`);
    await Promise.all([loadRequests(), loadChats()]);
    if (answer === 'accept') openChat(user);
  } catch (err) {
    report(err, answer === 'accept' ? 'Accepting the request' : 'Blocking');
  }
}

/** Asks the node to fetch media that waits for the user, or failed (a retry). */
async function fetchMedia(message) {
  const media = message.media;
  try {
    const view = await call('POST', `/v1/media/${encodeURIComponent(media.hash)}/download${ofQuery(media)}`);
    message.media = { ...media, ...view };
    renderMessage(message);
  } catch (err) {
    report(err, 'Downloading');
  }
}

// ---------------------------------------------------------------- media

/**
 * The query naming this message's own record of its media (`?of=`): other messages may name
 * the same hash.
 */
const ofQuery = (media) => (media.id ? `?of=${encodeURIComponent(media.id)}` : '');

/** A blob URL for a media file (`full`) or its thumbnail (`preview`), fetched once. */
function mediaUrl(media, which) {
  const key = `${media.id || media.hash}:${which}`;
  let url = mediaUrls.get(key);
  if (!url) {
    const path = `/v1/media/${encodeURIComponent(media.hash)}${which === 'preview' ? '/preview' : ''}${ofQuery(media)}`;
    url = blobUrl(path);
    mediaUrls.set(key, url);
    url.catch(() => mediaUrls.delete(key)); // try again on the next update
  }
  return url;
}

/**
 * A URL that streams a media file without the token (`POST /v1/media/{hash}/link`): a
 * <video> element then fetches it itself with Range requests, so playback starts before
 * the whole file is here, even while it is still downloading.
 */
function mediaLink(media) {
  const key = `${media.id || media.hash}:link`;
  let url = mediaUrls.get(key);
  if (!url) {
    url = call('POST', `/v1/media/${encodeURIComponent(media.hash)}/link${ofQuery(media)}`).then(
      (r) => r.url,
    );
    mediaUrls.set(key, url);
    url.catch(() => mediaUrls.delete(key));
  }
  return url;
}

/** Whether the whole file is on this node. */
const haveFull = (message) => message.outgoing || message.media.state === 'complete';

function mediaBlock(message) {
  const media = message.media;
  const kind = mediaKind(media.mime);
  const box = el('div', `media media-${kind}`);
  box.dataset.state = media.state;
  const full = haveFull(message);

  if (kind === 'image') {
    const img = el('img', 'media-img');
    img.alt = media.name;
    img.dataset.loaded = 'none';
    box.append(img);
    const show = (which) => (url) => {
      // a full image never gives way to its preview
      if (which === 'preview' && img.dataset.loaded === 'full') return;
      img.src = url;
      img.dataset.loaded = which;
    };
    if (media.has_preview) mediaUrl(media, 'preview').then(show('preview'), () => {});
    if (full) mediaUrl(media, 'full').then(show('full'), () => {});
    img.addEventListener('click', () => openViewer(message));
    img.addEventListener('load', keepAtBottom);
  } else if (kind === 'video') {
    if (full || media.state === 'downloading') {
      const video = el('video', 'media-video');
      video.controls = true;
      video.preload = 'metadata';
      video.playsInline = true;
      video.addEventListener('loadedmetadata', keepAtBottom);
      box.append(video);
      mediaLink(media).then((url) => {
        video.src = url;
        video.dataset.loaded = full ? 'full' : 'streaming';
      }, () => {});
    } else {
      const poster = el('div', 'media-poster', `Video \u00b7 ${sizeText(media.size)}`);
      box.append(poster);
    }
  } else {
    const link = el('a', 'media-file', `${media.name} \u00b7 ${sizeText(media.size)}`);
    link.download = media.name;
    box.append(link);
    if (full) mediaUrl(media, 'full').then((url) => (link.href = url), () => {});
  }

  if (media.state === 'uploading' || media.state === 'downloading') {
    const bar = el('progress', 'media-progress');
    bar.max = 1;
    bar.value = media.progress ?? 0;
    const label = el(
      'span',
      'media-progress-label',
      `${media.state === 'uploading' ? 'Sending' : 'Receiving'} ${Math.round((media.progress ?? 0) * 100)}%`,
    );
    box.append(bar, label);
  } else if (media.state === 'failed') {
    box.append(el('span', 'media-failed', message.outgoing ? 'Could not send' : 'Could not download'));
  }
  // Received media that waits for the user (large, or from someone just accepted), or whose
  // download failed (no holder served it in time): a button fetches it.
  if (!message.outgoing && (media.state === 'waiting' || media.state === 'failed')) {
    const label = media.state === 'waiting' ? `Download · ${sizeText(media.size)}` : 'Retry';
    const button = el('button', 'media-fetch', label);
    button.type = 'button';
    button.addEventListener('click', () => fetchMedia(message));
    box.append(button);
  }
  return box;
}

async function openViewer(message) {
  try {
    const url = await mediaUrl(message.media, haveFull(message) ? 'full' : 'preview');
    $('viewer-img').src = url;
    $('viewer-img').alt = message.media.name;
    $('viewer').showModal();
  } catch (err) {
    report(err, 'Opening the image');
  }
}

// ---------------------------------------------------------------- the open conversation

function messageItem(message) {
  const li = el('li', `msg ${message.outgoing ? 'out' : 'in'}`);
  li.dataset.id = message.id;
  if (message.id === state.highlight) li.classList.add('highlight');
  const bubble = el('div', 'bubble');
  bubble.append(actionButton());
  if (message.group && !message.outgoing) {
    const sender = el('div', 'sender', senderName(message.from, message.group));
    sender.title = message.from;
    bubble.append(sender);
  }
  if (message.media) bubble.append(mediaBlock(message));
  const quote = quoteBlock(message);
  if (quote) bubble.append(quote);
  if (message.text) bubble.append(el('div', 'text', message.text));
  const meta = el('div', 'meta');
  const time = el('time', '', clock(message.sent_at_ms));
  time.dateTime = new Date(message.sent_at_ms).toISOString();
  time.title = new Date(message.sent_at_ms).toLocaleString();
  meta.append(time);
  if (message.outgoing) meta.append(tick(message.status));
  if (message.outgoing && message.group) {
    const info = el('button', 'info-button icon-button', 'i');
    info.type = 'button';
    info.title = 'Message info: who has it, who read it';
    info.setAttribute('aria-label', 'Message info');
    info.addEventListener('click', () => openMessageInfo(message));
    meta.append(info);
  }
  bubble.append(meta);
  li.append(bubble);
  return li;
}

function daySeparator(ms) {
  const li = el('li', 'day');
  li.append(el('span', '', dayName(ms)));
  return li;
}

/** Redraws every message (after a page of history or a resync). */
function renderMessages() {
  const list = $('message-list');
  list.replaceChildren();
  let prev = null;
  for (const m of state.messages) {
    if (!prev || !sameDay(new Date(prev.sent_at_ms), new Date(m.sent_at_ms))) {
      list.append(daySeparator(m.sent_at_ms));
    }
    list.append(messageItem(m));
    prev = m;
  }
  $('history-state').textContent = state.hasMore
    ? state.loadingOlder
      ? 'Loading older messages…'
      : ''
    : state.messages.length > 0
      ? 'This is the beginning of your conversation.'
      : 'No messages yet. Say hello!';
}

/** Redraws one message in place. */
function renderMessage(message) {
  const old = $('message-list').querySelector(`li.msg[data-id="${CSS.escape(message.id)}"]`);
  if (!old) return;
  const item = messageItem(message);
  // A video that is already streaming keeps playing: move it into the redrawn item.
  const playing = old.querySelector('video.media-video');
  const fresh = item.querySelector('video.media-video');
  if (playing && playing.src && fresh) fresh.replaceWith(playing);
  old.replaceWith(item);
}

const nearBottom = () => {
  const box = $('messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
};

const scrollToBottom = () => {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
  state.stick = true;
};

/** After something in the pane grew (an image loaded): follow it if the pane was at the bottom. */
function keepAtBottom() {
  if (state.stick) scrollToBottom();
}

/** Adds a new message at the bottom (or updates it if already there). */
function appendMessage(message) {
  const i = state.messages.findIndex((m) => m.id === message.id);
  if (i >= 0) {
    state.messages[i] = { ...state.messages[i], ...message };
    renderMessage(state.messages[i]);
    return;
  }
  const stick = state.stick || nearBottom() || message.outgoing;
  const prev = state.messages[state.messages.length - 1];
  state.messages.push(message);
  const list = $('message-list');
  if (!prev || !sameDay(new Date(prev.sent_at_ms), new Date(message.sent_at_ms))) {
    list.append(daySeparator(message.sent_at_ms));
  }
  list.append(messageItem(message));
  $('history-state').textContent = state.hasMore ? '' : 'This is the beginning of your conversation.';
  if (stick) scrollToBottom();
}

function renderHeader() {
  if (!state.open) return;
  const chat = state.chats.get(state.open);
  const name = chat ? chatName(chat) : shortId(state.open);
  $('peer-name').textContent = name;
  $('peer-name').title = state.open;
  $('peer-avatar').textContent = name.slice(0, 1).toUpperCase();
  const group = isGroup(state.open);
  $('peer-avatar').classList.toggle('group', group);
  $('group-info-open').hidden = !group;
  renderContactNotes();
  const writable = canWrite(state.open);
  $('group-gone').hidden = writable;
  $('composer').hidden = !writable;
  if (!writable) clearAttachment();
  if (group) {
    $('peer-avatar').classList.remove('online');
    $('peer-presence').textContent = groupLine(state.open);
    $('peer-route').textContent = '';
    $('peer-route').title = '';
    return;
  }
  $('peer-avatar').classList.toggle('online', !!(chat && chat.presence && chat.presence.online));
  $('peer-presence').textContent = isTyping(state.open)
    ? 'typing…'
    : presenceLine(chat && chat.presence);
  const presence = chat && chat.presence;
  $('peer-route').textContent = routeLine(presence);
  $('peer-route').title = (presence && ROUTE_TITLES[presence.route]) || '';
}

const historyPath = (peer, offset, count) =>
  `/v1/conversations/${encodeURIComponent(peer)}?offset=${offset}&count=${count}`;

/** Opens a conversation; `focus: false` leaves the focus where it is (a search result). */
async function openChat(peer, { focus = true } = {}) {
  const generation = ++state.generation;
  state.open = peer;
  state.messages = [];
  state.hasMore = false;
  state.loadingOlder = false;
  state.highlight = null;
  clearAttachment();
  cancelReply();
  $('app').dataset.pane = 'chat'; // the one-pane layout (narrow screens) shows it alone
  $('chat-empty').hidden = true;
  $('chat-open').hidden = false;
  $('message-list').replaceChildren();
  $('history-state').textContent = 'Loading…';
  renderHeader();
  renderChats();
  try {
    const page = await call('GET', historyPath(peer, 0, PAGE));
    if (generation !== state.generation) return;
    const fresh = page.messages.slice().reverse();
    // events that arrived while the page was on its way stay after it
    const later = state.messages.filter((m) => !fresh.some((f) => f.id === m.id));
    state.messages = fresh.concat(later);
    state.hasMore = page.next_offset != null;
    renderMessages();
    scrollToBottom();
    await fillScreen(generation);
  } catch (err) {
    if (generation === state.generation) {
      $('history-state').textContent = '';
      report(err, 'Loading the conversation');
    }
    return;
  }
  if (focus && !$('composer').hidden) $('text').focus();
  markRead(peer);
}

/** Closes the conversation: the back button of the one-pane layout. */
function closeChat() {
  const peer = state.open;
  state.generation++;
  state.open = null;
  state.messages = [];
  state.highlight = null;
  clearAttachment();
  $('chat-open').hidden = true;
  $('chat-empty').hidden = false;
  $('app').dataset.pane = 'list';
  renderChats();
  // back where the user came from: the search result, else the conversation's row
  const from =
    document.querySelector('.sidebar.searching .search-row.active') ||
    (peer && document.querySelector(`.chat-row[data-peer="${CSS.escape(peer)}"]`));
  if (from) from.focus();
}

/** Loads older pages until the message pane can scroll (or history ends). */
async function fillScreen(generation) {
  const box = $('messages');
  while (
    generation === state.generation &&
    state.hasMore &&
    box.scrollHeight <= box.clientHeight + LOAD_OLDER_AT
  ) {
    if (!(await loadOlder())) break;
  }
}

/** The page of older messages on its way, if any, and the chat switch it belongs to. */
let olderCall = null;
let olderFor = -1;

/**
 * Fetches the page before the oldest message held (or waits for the one on its way).
 * Returns whether it added any.
 */
function loadOlder() {
  if (!olderCall || olderFor !== state.generation) {
    const pending = fetchOlder().finally(() => {
      if (olderCall === pending) olderCall = null;
    });
    olderCall = pending;
    olderFor = state.generation;
  }
  return olderCall;
}

async function fetchOlder() {
  if (state.loadingOlder || !state.hasMore || !state.open) return false;
  const generation = state.generation;
  const peer = state.open;
  state.loadingOlder = true;
  $('history-state').textContent = 'Loading older messages…';
  try {
    // The messages held are the newest ones without a gap, so their count is the offset.
    const page = await call('GET', historyPath(peer, state.messages.length, PAGE));
    if (generation !== state.generation) return false;
    const held = new Set(state.messages.map((m) => m.id));
    const older = page.messages.filter((m) => !held.has(m.id)).reverse();
    state.hasMore = page.next_offset != null && older.length > 0;
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    state.messages = older.concat(state.messages);
    state.loadingOlder = false;
    renderMessages();
    box.scrollTop = box.scrollHeight - fromBottom; // keep the view where it was
    return older.length > 0;
  } catch (err) {
    report(err, 'Loading older messages');
    return false;
  } finally {
    if (generation === state.generation) {
      state.loadingOlder = false;
      if (state.hasMore) $('history-state').textContent = '';
    }
  }
}

/** The conversation being marked read, and whether more arrived meanwhile. */
let marking = null;
let markAgain = false;

/** Marks the open conversation read (the sender then sees blue ticks). */
async function markRead(peer) {
  if (marking === peer) {
    markAgain = true; // messages that arrive during the call are marked right after it
    return;
  }
  const chat = state.chats.get(peer);
  const anyUnread =
    (chat && chat.unread > 0) ||
    state.messages.some((m) => !m.outgoing && m.status !== 'read');
  if (!anyUnread) return;
  marking = peer;
  markAgain = false;
  const asked = new Set(
    state.messages.filter((m) => !m.outgoing && m.status !== 'read').map((m) => m.id),
  );
  try {
    await call('POST', `/v1/conversations/${encodeURIComponent(peer)}/read`);
    if (chat) chat.unread = 0;
    if (state.open === peer) {
      for (const m of state.messages) if (asked.has(m.id)) m.status = 'read';
    }
    renderChats();
  } catch (err) {
    report(err, 'Marking the conversation read');
  } finally {
    marking = null;
    if (markAgain && state.open === peer) {
      markAgain = false;
      markRead(peer);
    }
  }
}

const looking = () => document.visibilityState === 'visible';

/** After a reconnection or lost events: fetch the newest page and merge it in. */
async function resync() {
  await loadGroups().catch((err) => report(err, 'Loading groups'));
  await loadChats();
  await loadRequests();
  if (!state.open) return;
  const generation = state.generation;
  const peer = state.open;
  const page = await call('GET', historyPath(peer, 0, PAGE));
  if (generation !== state.generation) return;
  const fresh = page.messages.slice().reverse();
  const held = new Map(state.messages.map((m) => [m.id, m]));
  const overlap = fresh.some((m) => held.has(m.id));
  if (!overlap && state.messages.length > 0) {
    // more new messages than a page: start over from the newest
    state.messages = fresh;
    state.hasMore = page.next_offset != null;
    renderMessages();
    scrollToBottom();
  } else {
    for (const m of fresh) appendMessage(m);
  }
  if (looking()) markRead(peer);
}

// ---------------------------------------------------------------- events from the node

function onEvent(type, data) {
  switch (type) {
    case 'message': {
      const { peer, message } = data;
      const chat = state.chats.get(peer);
      if (!chat) {
        // Someone who is not a contact yet: a message request (or a contact just added).
        loadChats().catch((err) => report(err, 'Loading conversations'));
        loadRequests().catch((err) => report(err, 'Loading requests'));
        return;
      }
      chat.last_message = message;
      const isOpen = state.open === peer;
      if (!message.outgoing && !(isOpen && looking())) chat.unread += 1;
      if (isOpen) {
        appendMessage(message);
        if (!message.outgoing && looking()) markRead(peer);
      }
      if (!message.outgoing) {
        onIncoming(peer, chat, message);
        stoppedTyping(peer);
      }
      renderChats();
      break;
    }
    case 'typing':
      onTyping(data);
      break;
    case 'status': {
      const { peer, id, status } = data;
      onStatus(id);
      const chat = state.chats.get(peer);
      if (chat && chat.last_message && chat.last_message.id === id) {
        chat.last_message.status = status;
        renderChats();
      }
      if (state.open === peer) {
        const m = state.messages.find((x) => x.id === id);
        if (m) {
          m.status = status;
          renderMessage(m);
        }
      }
      break;
    }
    case 'presence': {
      const chat = state.chats.get(data.user);
      if (chat) {
        chat.presence = data.presence;
        renderChats();
        if (state.open === data.user) renderHeader();
      }
      break;
    }
    case 'media_progress': {
      // The message it is about, by id and peer: another message may name the same hash.
      const { id, peer, state: mediaState, progress } = data;
      const m = state.messages.find(
        (x) => x.media && x.id === id && (x.from === peer || x.to === peer),
      );
      if (m) {
        m.media = { ...m.media, state: mediaState, progress };
        renderMessage(m);
      }
      break;
    }
    case 'group':
      onGroupEvent(data.group);
      break;
    case 'contact':
      onContactEvent(data.contact);
      break;
    case 'lagged':
      resync().catch((err) => report(err, 'Catching up'));
      break;
    default:
      break; // an event this page does not know
  }
}

function onStreamState(connected, err) {
  state.live = connected;
  const dot = $('link-state');
  dot.classList.toggle('up', connected);
  dot.title = connected ? 'connected to your node' : 'not connected to your node';
  if (connected) {
    hideBanner();
    // whatever happened while the stream was down (or before it first opened)
    resync().catch((e) => report(e, 'Catching up'));
  } else if (err && err.status === 401) {
    lock('Your node refused this page\u2019s token (it may have changed).');
  } else {
    showBanner('Your node is offline or not answering; retrying\u2026 (is `kith run` running?)', {
      sticky: true,
    });
  }
}

// ---------------------------------------------------------------- composer

function updateSend() {
  $('send').disabled = !state.open || ($('text').value.trim() === '' && !state.attachment);
}

function autoGrow() {
  const t = $('text');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

function clearAttachment() {
  state.attachment = null;
  $('attachment').hidden = true;
  const thumb = $('attachment-thumb');
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.removeAttribute('src');
  $('file-input').value = '';
  updateSend();
}

function chooseFile(file) {
  clearAttachment();
  if (!file) return;
  state.attachment = file;
  $('attachment-name').textContent = `${file.name} \u00b7 ${sizeText(file.size)}`;
  if (file.type.startsWith('image/')) $('attachment-thumb').src = URL.createObjectURL(file);
  $('attachment').hidden = false;
  updateSend();
  $('text').focus();
}

async function submit() {
  const peer = state.open;
  if (!peer) return;
  const text = $('text').value;
  const file = state.attachment;
  if (!file && text.trim() === '') return;
  if (file) {
    await sendFile(peer, file, text.trim());
  } else {
    await sendText(peer, text);
  }
}

async function sendText(peer, text) {
  $('send').disabled = true;
  try {
    const target = isGroup(peer) ? { group: peer } : { to: peer };
    const clientMeta = { client: 'kith web', ...takeReplyMeta() };
    const sent = await call('POST', '/v1/messages', {
      ...target,
      text,
      client_meta: clientMeta,
    });
    $('text').value = '';
    autoGrow();
    // The node's `message` event normally arrives first; if not, show it at once.
    if (state.open === peer && !state.messages.some((m) => m.id === sent.id)) {
      const me = state.me ? state.me.user_id : '';
      appendMessage({
        id: sent.id,
        from: me,
        to: peer,
        text,
        client_meta: clientMeta,
        sent_at_ms: Date.now(),
        status: sent.status,
        outgoing: true,
        group: isGroup(peer) ? peer : undefined,
      });
    }
  } catch (err) {
    report(err, 'Sending the message');
  } finally {
    updateSend();
  }
}

async function sendFile(peer, file, caption) {
  $('send').disabled = true;
  $('upload').hidden = false;
  $('upload-label').textContent = `Sending ${file.name}`;
  $('upload-progress').value = 0;
  try {
    const sent = await upload(peer, file, caption, (f) => {
      $('upload-progress').value = f;
      $('upload-label').textContent = `Sending ${file.name} \u00b7 ${Math.round(f * 100)}%`;
    });
    $('text').value = '';
    autoGrow();
    clearAttachment();
    if (state.open === peer && sent && !state.messages.some((m) => m.id === sent.id)) {
      await resync();
    }
  } catch (err) {
    if (err instanceof ApiError && err.code === 'offline' && (await nodeAnswers())) {
      // The node closed the upload early without an answer the browser could read.
      showBanner(
        `${file.name} (${sizeText(file.size)}) could not be sent: your node stopped the ` +
          'upload, most likely because the file is too large.',
      );
    } else if (err instanceof ApiError && err.code === 'too_large') {
      showBanner(`${file.name} (${sizeText(file.size)}) is too large to send. ${err.message}`);
    } else if (err instanceof ApiError && err.status === 404 && err.code === 'not_found') {
      showBanner(`Sending ${file.name}: ${err.message}`);
    } else {
      report(err, `Sending ${file.name}`);
    }
  } finally {
    $('upload').hidden = true;
    updateSend();
  }
}

/** Whether the node answers at all (to tell a refused upload from a node that is down). */
async function nodeAnswers() {
  try {
    await call('GET', '/v1/me');
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- dialogs

function openAddContact() {
  $('add-invite').value = '';
  $('add-name').value = '';
  $('add-error').hidden = true;
  $('add-dialog').showModal();
  $('add-invite').focus();
}

async function addContact(event) {
  event.preventDefault();
  const invite = $('add-invite').value.trim();
  const name = $('add-name').value.trim();
  if (!invite) return;
  $('add-submit').disabled = true;
  try {
    const body = { invite };
    if (name) body.name = name;
    const contact = await call('POST', '/v1/contacts', body);
    $('add-dialog').close();
    await loadChats();
    openChat(contact.user_id);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $('add-dialog').close();
      report(err, 'Adding the contact');
    } else {
      $('add-error').textContent = explain(err, 'Adding the contact');
      $('add-error').hidden = false;
    }
  } finally {
    $('add-submit').disabled = false;
  }
}

let qrUrl = null;
async function showInvite() {
  try {
    state.me = await call('GET', '/v1/me');
    $('invite-text').value = state.me.invite;
    $('invite-dialog').showModal();
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = null;
    $('invite-qr').hidden = false;
    qrUrl = await blobUrl('/v1/me/qr.svg');
    $('invite-qr').src = qrUrl;
  } catch (err) {
    $('invite-qr').hidden = true;
    report(err, 'Showing your invite');
  }
}

async function copyInvite() {
  const text = $('invite-text').value;
  try {
    await navigator.clipboard.writeText(text);
    $('invite-copy').textContent = 'Copied';
  } catch {
    $('invite-text').select();
    $('invite-copy').textContent = 'Press Ctrl+C';
  }
  setTimeout(() => ($('invite-copy').textContent = 'Copy'), 2000);
}

// ---------------------------------------------------------------- start

function wire() {
  $('banner-close').addEventListener('click', hideBanner);
  $('add-contact').addEventListener('click', openAddContact);
  $('add-cancel').addEventListener('click', () => $('add-dialog').close());
  $('add-form').addEventListener('submit', addContact);
  $('show-invite').addEventListener('click', showInvite);
  $('invite-close').addEventListener('click', () => $('invite-dialog').close());
  $('invite-copy').addEventListener('click', copyInvite);
  $('viewer-close').addEventListener('click', () => $('viewer').close());
  $('viewer').addEventListener('click', (e) => {
    if (e.target === $('viewer')) $('viewer').close();
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  $('text').addEventListener('input', () => {
    autoGrow();
    updateSend();
  });
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $('file-input').addEventListener('change', (e) => chooseFile(e.target.files[0]));
  $('attachment-remove').addEventListener('click', clearAttachment);
  $('back').addEventListener('click', closeChat);
  $('messages').addEventListener('scroll', () => {
    state.stick = nearBottom();
    if ($('messages').scrollTop < LOAD_OLDER_AT) loadOlder();
  });
  document.addEventListener('visibilitychange', () => {
    if (looking() && state.open) markRead(state.open);
  });
  // "last seen today" becomes "yesterday" at midnight; presence lines age
  setInterval(() => {
    renderChats();
    renderHeader();
  }, 60_000);
}

async function start() {
  const { token, label } = takeToken();
  if (!token) {
    lock();
    return;
  }
  state.label = label;
  wire();
  initGroups({
    state,
    el,
    shortId,
    tick,
    report,
    explain,
    openChat,
    loadChats,
    renderChats,
    renderHeader,
  });
  initSettings({ state, report, shortId, renderChats, renderHeader });
  const ctx = {
    state,
    el,
    shortId,
    chatName,
    snippet,
    listTime,
    senderName,
    openChat,
    loadOlder,
    loadChats,
    renderMessages,
    renderHeader,
    isGroup,
    chooseFile,
    report,
    showBanner,
  };
  initSearch(ctx);
  initActions(ctx);
  initReply(ctx);
  initTyping(ctx);
  initNotify(ctx);
  initDrop(ctx);
  $('app').hidden = false;
  try {
    state.me = await call('GET', '/v1/me');
    $('me-name').textContent = label || 'You';
    $('me-id').textContent = shortId(state.me.user_id);
    $('me-id').title = state.me.user_id;
    $('me-avatar').textContent = (label || 'Y').slice(0, 1).toUpperCase();
    await loadGroups().catch((err) => report(err, 'Loading groups'));
    await loadSettings().catch((err) => report(err, 'Loading settings'));
    updateAsk();
    await loadChats();
    await loadRequests();
  } catch (err) {
    report(err, 'Connecting to your node');
  }
  followEvents({ onEvent, onState: onStreamState });
}

start();
