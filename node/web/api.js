// The web app's only link to the node: the API token, JSON calls, uploads with progress,
// media as blob URLs, and the /v1/events stream.
//
// The token arrives once in the address fragment (`#token=…`, which never reaches a server or
// a log), moves to this tab's sessionStorage and is wiped from the address bar. Every call
// sends it as `Authorization: Bearer`. The event stream is read with fetch() and a stream
// reader, because EventSource cannot send headers and the token must not go in a URL.

const TOKEN_KEY = 'kith.token';
const LABEL_KEY = 'kith.label';

/** An API error with the node's `{error: {code, message}}` body, or a network failure. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the node could not be reached
   * @param {string} code stable error code (`unknown_contact`, `too_large`, `offline`, …)
   * @param {string} message what the node said
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Takes the token (and an optional label naming this window, e.g. `alice`) from the address
 * fragment into sessionStorage, wipes the fragment, and returns what is stored.
 * @returns {{token: string|null, label: string|null}}
 */
export function takeToken() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = fragment.get('token');
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    const label = fragment.get('label');
    if (label) sessionStorage.setItem(LABEL_KEY, label);
    else sessionStorage.removeItem(LABEL_KEY);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return {
    token: sessionStorage.getItem(TOKEN_KEY),
    label: sessionStorage.getItem(LABEL_KEY),
  };
}

/** Forgets the token (after the node refused it). */
export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}`, ...extra };
}

/** Turns a failed answer into an ApiError carrying the node's code and message. */
async function failure(res) {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

const offline = () =>
  new ApiError(0, 'offline', 'The node is not answering. Is `kith run` still running?');

/**
 * Calls the API and returns the parsed JSON answer (null for 204).
 * @param {string} method
 * @param {string} path e.g. `/v1/me`
 * @param {object} [body] sent as JSON
 */
export async function call(method, path, body) {
  const init = { method, headers: authHeaders(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw offline();
  }
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return null;
  return res.json();
}

/**
 * Fetches a guarded binary resource (a media file, a preview, the QR code) as a blob URL,
 * since <img> and <video> cannot send the token themselves. The caller revokes it.
 * Videos do not come through here: they stream from a media link (see app.js).
 * @param {string} path
 * @returns {Promise<string>} a `blob:` URL
 */
export async function blobUrl(path) {
  let res;
  try {
    res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  } catch {
    throw offline();
  }
  if (!res.ok) throw await failure(res);
  return URL.createObjectURL(await res.blob());
}

/**
 * Sends a file to `to` with an optional caption (`POST /v1/media`), reporting upload
 * progress (0..1) while the browser hands the bytes to the node. XMLHttpRequest because
 * fetch() reports no upload progress.
 * @param {string} to user id, or a group id (32 hex digits: sent with `?group=`)
 * @param {File} file
 * @param {string} caption
 * @param {(fraction: number) => void} onProgress
 * @returns {Promise<{id: string, status: string}>}
 */
export function upload(to, file, caption, onProgress) {
  const key = /^[0-9a-f]{32}$/i.test(to) ? 'group' : 'to';
  const query = new URLSearchParams({ [key]: to, name: file.name });
  if (caption) query.set('caption', caption);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1/media?${query}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    };
    xhr.onerror = () => reject(offline());
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        const err = body && body.error ? body.error : {};
        reject(
          new ApiError(
            xhr.status,
            err.code || 'http_' + xhr.status,
            err.message || `${xhr.status} ${xhr.statusText}`,
          ),
        );
      }
    };
    xhr.send(file);
  });
}

/**
 * Follows `/v1/events` for as long as the page lives, reconnecting with backoff.
 * @param {object} handlers
 * @param {(type: string, data: object) => void} handlers.onEvent one parsed event
 * @param {(connected: boolean, error?: ApiError) => void} handlers.onState stream up or down
 */
export async function followEvents({ onEvent, onState }) {
  let backoff = 500;
  for (;;) {
    let err;
    try {
      const res = await fetch('/v1/events', {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        cache: 'no-store',
      });
      if (!res.ok) throw await failure(res);
      onState(true);
      backoff = 500;
      await readStream(res.body, onEvent);
      err = offline();
    } catch (e) {
      err = e instanceof ApiError ? e : offline();
    }
    onState(false, err);
    if (err.status === 401) return; // a wrong token stays wrong
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 8000);
  }
}

/** Parses a text/event-stream body: `event:` and `data:` lines, frames end at a blank line. */
async function readStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.search(/\r?\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer[nl] === '\r' ? 2 : 1));
      if (line === '') {
        if (data.length > 0) {
          try {
            onEvent(type, JSON.parse(data.join('\n')));
          } catch (e) {
            console.warn('event not understood', type, e);
          }
        }
        type = 'message';
        data = [];
      } else if (line.startsWith(':')) {
        // keep-alive comment
      } else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
      }
    }
  }
}
