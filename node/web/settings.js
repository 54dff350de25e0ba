// Settings and contact verification in the web app: the Settings dialog (profile name, last
// seen, read receipts, media auto-download, notifications), the verification panel of a
// contact (the safety number in 12 groups of 5 digits and as a QR code, "Mark verified"), the
// notice in a conversation whose contact's key changed. Notifications themselves are shown by
// notify.js, which reads `settings.notifications`.
//
// app.js owns the page's state and hands this module what it needs through initSettings();
// events of type "contact" from /v1/events come here through onContactEvent(). As in app.js,
// text from the network only ever goes into the page as textContent.

import { blobUrl, call } from './api.js';

const $ = (id) => document.getElementById(id);
const MIB = 1024 * 1024;

/** What app.js lends this module (see initSettings). */
let ui = null;

/** `GET /v1/settings`, once loaded. */
export let settings = null;

/** The contact whose verification panel is open, and its QR code's blob URL. */
let verifyFor = null;
let qrUrl = null;

/**
 * Wires the dialogs. `ctx` carries app.js's state and helpers: state, report, shortId,
 * renderChats, renderHeader.
 */
export function initSettings(ctx) {
  ui = ctx;
  $('open-settings').addEventListener('click', openSettings);
  $('settings-cancel').addEventListener('click', () => $('settings-dialog').close());
  $('settings-form').addEventListener('submit', saveSettings);
  $('verify-open').addEventListener('click', () => openVerify(ui.state.open));
  $('verify-toggle').addEventListener('click', toggleVerified);
  $('verify-close').addEventListener('click', () => $('verify-dialog').close());
  $('verify-dialog').addEventListener('close', () => {
    verifyFor = null;
  });
}

/** Loads the settings (the page reads `notifications` from them). */
export async function loadSettings() {
  settings = await call('GET', '/v1/settings');
  return settings;
}

function fillForm(s) {
  $('set-profile-name').value = s.profile_name;
  $('set-last-seen').value = s.last_seen;
  $('set-read-receipts').checked = s.read_receipts;
  $('set-auto-mib').value = String(Math.floor(s.auto_download_bytes / MIB));
  $('set-auto-contacts').checked = s.auto_download_contacts_only;
  $('set-notifications').checked = s.notifications;
}

async function openSettings() {
  $('settings-error').hidden = true;
  try {
    fillForm(await loadSettings());
    $('settings-dialog').showModal();
  } catch (err) {
    ui.report(err, 'Loading settings');
  }
}

async function saveSettings(event) {
  event.preventDefault();
  const mib = Number.parseInt($('set-auto-mib').value, 10);
  const change = {
    profile_name: $('set-profile-name').value,
    last_seen: $('set-last-seen').value,
    read_receipts: $('set-read-receipts').checked,
    auto_download_contacts_only: $('set-auto-contacts').checked,
    notifications: $('set-notifications').checked,
  };
  if (Number.isFinite(mib) && mib >= 0) change.auto_download_bytes = mib * MIB;
  $('settings-save').disabled = true;
  try {
    await call('PUT', '/v1/settings', change);
    await loadSettings();
    if (settings.notifications && 'Notification' in window && Notification.permission === 'default') {
      Notification.requestPermission().catch(() => {});
    }
    $('settings-dialog').close();
  } catch (err) {
    $('settings-error').textContent = err.message;
    $('settings-error').hidden = false;
  } finally {
    $('settings-save').disabled = false;
  }
}

/** The notice a conversation shows when its contact's key changed (empty when none). */
export function keyNotice(chat) {
  const c = chat && chat.contact;
  if (!c) return '';
  if (c.replaced_by) {
    return `This contact now uses a new key (user id ${ui.shortId(c.replaced_by)}): they reinstalled, or someone else took their name. Verify the new safety number before trusting it.`;
  }
  if (c.replaces) {
    return `Safety number changed: this contact replaces ${ui.shortId(c.replaces)}, who had the same name. Compare the safety number with them again.`;
  }
  return '';
}

/** Updates the open conversation's key-change notice and verified badge. */
export function renderContactNotes() {
  const chat = ui.state.open && ui.state.chats.get(ui.state.open);
  const contact = chat && chat.contact;
  $('verify-open').hidden = !contact;
  const notice = keyNotice(chat);
  $('key-notice').textContent = notice;
  $('key-notice').hidden = !notice;
  $('peer-verified').hidden = !(contact && contact.verified);
}

/** A "contact" event: a profile name, a verified mark or a key change. */
export function onContactEvent(contact) {
  const chat = ui.state.chats.get(contact.user_id);
  if (chat) {
    chat.contact = contact;
    chat.name = contact.display_name;
    ui.renderChats();
    if (ui.state.open === contact.user_id) ui.renderHeader();
  }
  if (verifyFor === contact.user_id) renderVerify(contact);
}

function renderVerify(contact) {
  $('verify-state').textContent = contact.verified
    ? 'Verified: you compared this number with them.'
    : 'Not verified. Compare these digits with the ones on their screen (or scan their code); if they match, mark them verified.';
  $('verify-toggle').textContent = contact.verified ? 'Clear verification' : 'Mark verified';
  $('verify-toggle').dataset.verified = contact.verified ? '1' : '0';
  const notice = keyNotice({ contact });
  $('verify-notice').textContent = notice;
  $('verify-notice').hidden = !notice;
}

async function openVerify(user) {
  if (!user) return;
  verifyFor = user;
  try {
    const number = await call('GET', `/v1/contacts/${encodeURIComponent(user)}/safety-number`);
    if (verifyFor !== user) return;
    $('verify-title').textContent = `Verify ${number.contact.display_name || ui.shortId(user)}`;
    $('safety-groups').replaceChildren(
      ...number.groups.map((g) => {
        const span = document.createElement('span');
        span.className = 'safety-group';
        span.textContent = g;
        return span;
      }),
    );
    renderVerify(number.contact);
    $('verify-dialog').showModal();
    if (qrUrl) URL.revokeObjectURL(qrUrl);
    qrUrl = await blobUrl(`/v1/contacts/${encodeURIComponent(user)}/safety-number/qr.svg`);
    $('safety-qr').src = qrUrl;
  } catch (err) {
    ui.report(err, 'Showing the safety number');
  }
}

async function toggleVerified() {
  const user = verifyFor;
  if (!user) return;
  const method = $('verify-toggle').dataset.verified === '1' ? 'DELETE' : 'POST';
  try {
    const contact = await call(method, `/v1/contacts/${encodeURIComponent(user)}/verify`);
    onContactEvent(contact);
  } catch (err) {
    ui.report(err, 'Marking the contact verified');
  }
}
