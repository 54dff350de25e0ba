// Group chats in the web app: the groups the node knows, the "New group" dialog, the group
// info panel (members, add and remove for admins, rename, leave) and the "message info"
// panel that lists each member's ticks for a message we sent to a group.
//
// app.js owns the page's state and hands this module what it needs through initGroups();
// events of type "group" from /v1/events come here through onGroupEvent(). As in app.js,
// text from the network only ever goes into the page as textContent.

import { ApiError, call } from './api.js';

/** How often an open "message info" panel refetches (members' reads move no group status). */
const INFO_REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);

/** What app.js lends this module (see initGroups). */
let ui = null;

/** group id → GroupView (`GET /v1/groups`), kept current by "group" events. */
export const groups = new Map();

/** The message whose info panel is open, and its refresh timer. */
let infoFor = null;
let infoTimer = null;

/** Whether a conversation id names a group (32 hex digits; user ids are base58). */
export const isGroup = (id) => typeof id === 'string' && /^[0-9a-f]{32}$/i.test(id);

/**
 * Wires the group dialogs. `ctx` carries app.js's state and helpers: state, el, shortId,
 * tick, report, explain, openChat, loadChats, renderChats, renderHeader.
 */
export function initGroups(ctx) {
  ui = ctx;
  $('new-group').addEventListener('click', openNewGroup);
  $('group-new-cancel').addEventListener('click', () => $('group-new-dialog').close());
  $('group-new-form').addEventListener('submit', createGroup);
  $('group-info-open').addEventListener('click', () => openGroupInfo(ui.state.open));
  $('group-close').addEventListener('click', () => $('group-dialog').close());
  $('group-rename-form').addEventListener('submit', renameGroup);
  $('group-add-form').addEventListener('submit', addMember);
  $('group-leave').addEventListener('click', leaveGroup);
  $('group-dialog').addEventListener('close', () => resetLeave());
  $('info-close').addEventListener('click', () => $('info-dialog').close());
  $('info-dialog').addEventListener('close', () => {
    infoFor = null;
    clearInterval(infoTimer);
    infoTimer = null;
  });
}

/** Loads every group the node knows. */
export async function loadGroups() {
  const answer = await call('GET', '/v1/groups');
  groups.clear();
  for (const g of answer.groups) groups.set(g.id, g);
}

/** The contacts (from the chat list), by name. */
function contacts() {
  return [...ui.state.chats.values()]
    .filter((c) => c.kind !== 'group')
    .sort((a, b) => contactName(a.user_id).localeCompare(contactName(b.user_id)));
}

/** A user's name as this page knows it: their contact name, else their short id. */
function contactName(user) {
  const chat = ui.state.chats.get(user);
  return chat && chat.name ? chat.name : ui.shortId(user);
}

/** The name a group message's sender shows with (contact name, member name or short id). */
export function senderName(user, groupId) {
  const chat = ui.state.chats.get(user);
  if (chat && chat.name) return chat.name;
  const group = groups.get(groupId);
  const member = group && group.members.find((m) => m.user_id === user);
  if (member && member.name) return member.name;
  return ui.shortId(user);
}

const me = () => (ui.state.me ? ui.state.me.user_id : '');

/** A member's name in lists: "You" for the local user. */
function memberName(member) {
  if (member.user_id === me()) return 'You';
  return member.name || contactName(member.user_id);
}

/** "You, Bob, Carol" (the header line of an open group), or why we cannot write. */
export function groupLine(id) {
  const group = groups.get(id);
  if (!group) return '';
  if (!group.active) return 'You are no longer a member';
  const names = group.members.map(memberName);
  return names.sort((a, b) => (a === 'You' ? 1 : b === 'You' ? -1 : a.localeCompare(b))).join(', ');
}

/** Whether the local user may write in a conversation (false once it left or was removed). */
export function canWrite(id) {
  const group = groups.get(id);
  return !isGroup(id) || !group || group.active;
}

// ---------------------------------------------------------------- events

/** A "group" event: a group was created, joined, changed, left, or we were removed. */
export function onGroupEvent(group) {
  groups.set(group.id, group);
  const chat = ui.state.chats.get(group.id);
  if (chat) {
    chat.name = group.name;
    chat.members = group.members.length;
    ui.renderChats();
  } else {
    ui.loadChats().catch((err) => ui.report(err, 'Loading conversations'));
  }
  if (ui.state.open === group.id) ui.renderHeader();
  if ($('group-dialog').open && $('group-dialog').dataset.group === group.id) {
    renderGroupInfo(group);
  }
}

/** A "status" event: refresh an open message info panel about that message. */
export function onStatus(id) {
  if (infoFor === id) refreshInfo().catch(() => {});
}

// ---------------------------------------------------------------- new group

function openNewGroup() {
  $('group-new-name').value = '';
  $('group-new-error').hidden = true;
  const list = $('group-new-contacts');
  list.replaceChildren();
  const all = contacts();
  $('group-new-none').hidden = all.length > 0;
  for (const c of all) {
    const li = ui.el('li', 'pick-row');
    const label = ui.el('label', 'pick-label');
    const box = ui.el('input');
    box.type = 'checkbox';
    box.value = c.user_id;
    box.name = 'member';
    label.append(box, ' ', contactName(c.user_id));
    label.title = c.user_id;
    li.append(label);
    list.append(li);
  }
  $('group-new-dialog').showModal();
  $('group-new-name').focus();
}

async function createGroup(event) {
  event.preventDefault();
  const name = $('group-new-name').value.trim();
  const members = [...$('group-new-contacts').querySelectorAll('input:checked')].map((b) => b.value);
  const error = (text) => {
    $('group-new-error').textContent = text;
    $('group-new-error').hidden = false;
  };
  if (!name) return error('Give the group a name.');
  if (members.length === 0) return error('Pick at least one contact.');
  $('group-new-submit').disabled = true;
  try {
    const group = await call('POST', '/v1/groups', { name, members });
    groups.set(group.id, group);
    $('group-new-dialog').close();
    await ui.loadChats();
    ui.openChat(group.id);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $('group-new-dialog').close();
      ui.report(err, 'Creating the group');
    } else {
      error(ui.explain(err, 'Creating the group'));
    }
  } finally {
    $('group-new-submit').disabled = false;
  }
}

// ---------------------------------------------------------------- group info

/** Opens the group info panel of a group, with its current state from the node. */
export async function openGroupInfo(id) {
  if (!isGroup(id)) return;
  const dialog = $('group-dialog');
  dialog.dataset.group = id;
  $('group-error').hidden = true;
  resetLeave();
  if (groups.has(id)) renderGroupInfo(groups.get(id));
  if (!dialog.open) dialog.showModal();
  try {
    const group = await call('GET', `/v1/groups/${encodeURIComponent(id)}`);
    groups.set(id, group);
    if (dialog.open && dialog.dataset.group === id) renderGroupInfo(group);
  } catch (err) {
    groupError(err, 'Loading the group');
  }
}

function renderGroupInfo(group) {
  const admin = group.active && group.me_admin;
  $('group-title').textContent = group.name;
  const n = group.members.length;
  const standing = !group.active
    ? 'You are no longer a member of this group.'
    : admin
      ? 'You are an admin.'
      : 'Only admins can add or remove members.';
  $('group-summary').textContent = `${n} member${n === 1 ? '' : 's'} \u00b7 ${standing}`;
  $('group-rename-form').hidden = !admin;
  if (document.activeElement !== $('group-rename-name')) $('group-rename-name').value = group.name;

  const list = $('group-members');
  list.replaceChildren();
  const members = [...group.members].sort((a, b) => memberName(a).localeCompare(memberName(b)));
  for (const m of members) {
    const li = ui.el('li', 'member-row');
    li.dataset.user = m.user_id;
    const avatar = ui.el('div', 'avatar small', memberName(m).slice(0, 1).toUpperCase());
    avatar.setAttribute('aria-hidden', 'true');
    const name = ui.el('span', 'member-name', memberName(m));
    name.title = m.user_id;
    li.append(avatar, name);
    if (m.admin || group.admins.includes(m.user_id)) li.append(ui.el('span', 'member-admin', 'admin'));
    if (admin && m.user_id !== me()) {
      const remove = ui.el('button', 'member-remove', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Remove ${memberName(m)} from the group`);
      remove.addEventListener('click', () => removeMember(group.id, m.user_id, remove));
      li.append(remove);
    }
    list.append(li);
  }

  const present = new Set(group.members.map((m) => m.user_id));
  const candidates = contacts().filter((c) => !present.has(c.user_id));
  $('group-add-form').hidden = !admin || candidates.length === 0;
  const select = $('group-add-select');
  const chosen = select.value;
  select.replaceChildren();
  for (const c of candidates) {
    const option = ui.el('option', '', contactName(c.user_id));
    option.value = c.user_id;
    select.append(option);
  }
  if (candidates.some((c) => c.user_id === chosen)) select.value = chosen;
  $('group-leave').hidden = !group.active;
}

function groupError(err, doing) {
  if (err instanceof ApiError && err.status === 401) {
    $('group-dialog').close();
    ui.report(err, doing);
    return;
  }
  let text = ui.explain(err, doing);
  if (err instanceof ApiError && err.code === 'not_admin') {
    text = `${doing}: only the group\u2019s admins can do that.`;
  }
  $('group-error').textContent = text;
  $('group-error').hidden = false;
}

/** Runs a change to the open group and shows its answer (the node's new GroupView). */
async function change(doing, method, path, body) {
  const id = $('group-dialog').dataset.group;
  $('group-error').hidden = true;
  try {
    const group = await call(method, `/v1/groups/${encodeURIComponent(id)}${path}`, body);
    onGroupEvent(group);
    if ($('group-dialog').open) renderGroupInfo(group);
    return group;
  } catch (err) {
    groupError(err, doing);
    return null;
  }
}

async function renameGroup(event) {
  event.preventDefault();
  const name = $('group-rename-name').value.trim();
  if (!name) return;
  $('group-rename-submit').disabled = true;
  const group = await change('Renaming the group', 'PATCH', '', { name });
  $('group-rename-submit').disabled = false;
  if (group) $('group-rename-name').blur();
}

async function addMember(event) {
  event.preventDefault();
  const user = $('group-add-select').value;
  if (!user) return;
  $('group-add-submit').disabled = true;
  await change('Adding the member', 'POST', '/members', { user_id: user });
  $('group-add-submit').disabled = false;
}

async function removeMember(id, user, button) {
  button.disabled = true;
  await change('Removing the member', 'DELETE', `/members/${encodeURIComponent(user)}`);
  button.disabled = false;
}

function resetLeave() {
  const button = $('group-leave');
  delete button.dataset.confirm;
  button.textContent = 'Leave group';
}

/** Leaving takes two clicks: the first asks, the second leaves. */
async function leaveGroup() {
  const button = $('group-leave');
  if (!button.dataset.confirm) {
    button.dataset.confirm = '1';
    button.textContent = 'Click again to leave';
    return;
  }
  button.disabled = true;
  const group = await change('Leaving the group', 'POST', '/leave');
  button.disabled = false;
  resetLeave();
  if (group && ui.state.open === group.id) ui.renderHeader();
}

// ---------------------------------------------------------------- message info

/** Opens the "message info" panel of a message we sent to a group: each member's ticks. */
export async function openMessageInfo(message) {
  infoFor = message.id;
  $('info-text').textContent = message.text || '';
  $('info-members').replaceChildren();
  $('info-state').textContent = 'Loading…';
  if (!$('info-dialog').open) $('info-dialog').showModal();
  clearInterval(infoTimer);
  infoTimer = setInterval(() => refreshInfo().catch(() => {}), INFO_REFRESH_MS);
  try {
    await refreshInfo();
  } catch (err) {
    $('info-state').textContent = ui.explain(err, 'Loading the message info');
  }
}

async function refreshInfo() {
  const id = infoFor;
  if (!id) return;
  const info = await call('GET', `/v1/messages/${encodeURIComponent(id)}/info`);
  if (infoFor !== id) return;
  $('info-state').textContent = '';
  const list = $('info-members');
  list.replaceChildren();
  const order = { read: 0, delivered: 1, sent: 2, pending: 3 };
  const members = [...info.members].sort(
    (a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9) || nameOf(a).localeCompare(nameOf(b)),
  );
  for (const m of members) {
    const li = ui.el('li', 'member-row');
    li.dataset.user = m.user_id;
    li.dataset.status = m.status;
    const name = ui.el('span', 'member-name', nameOf(m));
    name.title = m.user_id;
    li.append(name, ui.tick(m.status), ui.el('span', 'member-status', STATUS_WORDS[m.status] ?? m.status));
    list.append(li);
  }
}

const nameOf = (m) => m.name || contactName(m.user_id);

const STATUS_WORDS = {
  pending: 'waiting to send',
  sent: 'sent',
  delivered: 'delivered',
  read: 'read',
};
