// What can be done to one message: a small menu, opened from the button on a message (shown
// on hover and focus), a right click, or a long press (a touch screen's context menu). Its
// actions: "Reply" (a quote above the composer, see reply.js) and "Delete for me" (`DELETE
// /v1/conversations/{chat}/messages/{id}`), confirmed in a dialog: the message leaves this
// node and this page, the others keep theirs.
//
// app.js owns the page's state and hands this module what it needs through initActions();
// it puts a button made by actionButton() on every message.

import { ApiError, call } from './api.js';
import { startReply } from './reply.js';
import { chatOf, forgetResult } from './search.js';

const $ = (id) => document.getElementById(id);

/** What app.js lends this module (see initActions). */
let ui = null;

/** The message the menu (and then the dialog) is about. */
let target = null;
/** The element to give focus back to when the menu closes. */
let returnFocus = null;

/**
 * Wires the menu and the dialog. `ctx` carries app.js's state and helpers: state, el,
 * snippet, renderMessages, loadChats, report.
 */
export function initActions(ctx) {
  ui = ctx;
  const list = $('message-list');
  list.addEventListener('click', (e) => {
    const button = e.target.closest('.msg-more');
    if (!button) return;
    const r = button.getBoundingClientRect();
    openMenu(button.closest('li.msg'), r.right, r.bottom, button);
  });
  list.addEventListener('contextmenu', (e) => {
    const item = e.target.closest('li.msg');
    // a right click on a link or a video keeps the browser's own menu
    if (!item || e.target.closest('a, video')) return;
    e.preventDefault();
    openMenu(item, e.clientX, e.clientY, item.querySelector('.msg-more'));
  });
  $('msg-delete').addEventListener('click', askDelete);
  $('msg-reply').addEventListener('click', () => {
    closeMenu(false);
    if (target) startReply(target);
  });
  $('msg-menu').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeMenu(true);
  });
  document.addEventListener('pointerdown', (e) => {
    if (!$('msg-menu').hidden && !e.target.closest('#msg-menu')) closeMenu(false);
  });
  $('messages').addEventListener('scroll', () => closeMenu(false));
  window.addEventListener('resize', () => closeMenu(false));
  $('delete-cancel').addEventListener('click', () => $('delete-dialog').close());
  $('delete-confirm').addEventListener('click', confirmDelete);
}

/** The button that opens a message's menu (app.js adds it to every message). */
export function actionButton() {
  const button = ui.el('button', 'msg-more icon-button');
  button.type = 'button';
  button.title = 'More';
  button.setAttribute('aria-label', 'Message actions');
  button.setAttribute('aria-haspopup', 'menu');
  button.innerHTML =
    '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M4 6l4 4 4-4"/></svg>'; // constant markup only
  return button;
}

function openMenu(item, x, y, focusBack) {
  if (!item) return;
  const message = ui.state.messages.find((m) => m.id === item.dataset.id);
  if (!message) return;
  target = message;
  returnFocus = focusBack;
  if (focusBack) focusBack.setAttribute('aria-expanded', 'true');
  const menu = $('msg-menu');
  menu.hidden = false;
  const w = menu.offsetWidth;
  const h = menu.offsetHeight;
  menu.style.left = `${Math.max(4, Math.min(x - w, window.innerWidth - w - 4))}px`;
  menu.style.top = `${Math.max(4, Math.min(y + 4, window.innerHeight - h - 4))}px`;
  $('msg-reply').focus();
}

function closeMenu(giveBackFocus) {
  if ($('msg-menu').hidden) return;
  $('msg-menu').hidden = true;
  if (returnFocus) returnFocus.removeAttribute('aria-expanded');
  if (giveBackFocus && returnFocus) returnFocus.focus();
  returnFocus = null;
}

function askDelete() {
  closeMenu(false);
  if (!target) return;
  $('delete-text').textContent = ui.snippet(target) || '';
  $('delete-text').hidden = !$('delete-text').textContent;
  $('delete-dialog').showModal();
}

async function confirmDelete() {
  const message = target;
  $('delete-dialog').close();
  if (!message) return;
  const chat = chatOf(message);
  try {
    await call(
      'DELETE',
      `/v1/conversations/${encodeURIComponent(chat)}/messages/${encodeURIComponent(message.id)}`,
    );
  } catch (err) {
    // Already gone from the node (another tab deleted it): drop it from the page too.
    if (!(err instanceof ApiError && err.code === 'not_found')) {
      ui.report(err, 'Deleting the message');
      return;
    }
  }
  removeMessage(chat, message.id);
}

/** Takes a deleted message out of the page: the conversation, the chat list, the results. */
function removeMessage(chat, id) {
  const state = ui.state;
  target = null;
  forgetResult(id);
  if (state.open === chat) {
    const box = $('messages');
    const top = box.scrollTop;
    state.messages = state.messages.filter((m) => m.id !== id);
    ui.renderMessages();
    box.scrollTop = top;
  }
  const row = state.chats.get(chat);
  if (row && row.last_message && row.last_message.id === id) {
    ui.loadChats().catch((err) => ui.report(err, 'Loading conversations'));
  }
}
