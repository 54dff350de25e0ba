// Files dragged onto the conversation or pasted into the page go to the composer, like one
// chosen with the paperclip (app.js's chooseFile; Send then uploads it through /v1/media).
// Photos and videos show inline; any other file travels as a document (its name and size
// shown, downloaded on click).
//
// app.js hands this module what it needs through initDrop().

const $ = (id) => document.getElementById(id);

/** What app.js lends this module (see initDrop). */
let ui = null;

/** Whether a drag carries files (not text or a link dragged from the page). */
const hasFiles = (e) => !!e.dataTransfer && [...e.dataTransfer.types].includes('Files');

/** Whether the composer can take a file now: a conversation is open and may be written to. */
const open = () => !!ui.state.open && !$('composer').hidden;

/** Wires drag-and-drop on the conversation and paste. `ctx`: state, chooseFile, showBanner. */
export function initDrop(ctx) {
  ui = ctx;
  const zone = $('chat');
  let depth = 0; // dragenter and dragleave come for every child crossed
  zone.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    $('drop-hint').hidden = !open();
  });
  zone.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = open() ? 'copy' : 'none';
  });
  zone.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) $('drop-hint').hidden = true;
  });
  zone.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    $('drop-hint').hidden = true;
    take([...e.dataTransfer.files]);
  });
  // A file dropped beside the conversation must not make the browser leave the app for it.
  window.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  window.addEventListener('drop', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener('paste', (e) => {
    const files = [...((e.clipboardData && e.clipboardData.files) || [])];
    if (files.length === 0 || !open()) return;
    // pasting into a dialog or the search box is theirs
    if (e.target instanceof Element && e.target.closest('dialog, #search')) return;
    e.preventDefault();
    take(files);
  });
}

/** Puts the first of `files` in the composer; says that the others wait their turn. */
function take(files) {
  if (files.length === 0) return;
  if (!open()) {
    ui.showBanner('Open a conversation first, then drop the file on it.', { kind: 'info' });
    return;
  }
  ui.chooseFile(files[0]);
  if (files.length > 1) {
    ui.showBanner(`One file at a time: ${files[0].name} is ready to send, drop the others after it.`, {
      kind: 'info',
    });
  }
}
