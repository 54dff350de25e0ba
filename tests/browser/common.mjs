// What the browser scripts share (group.mjs uses it; chat.mjs predates it): settings from
// the environment tests/tests/browser.rs sets, Chromium's flags, step logging, pages.

/** Longest wait for any one condition, in ms. */
export const WAIT = 30_000;

/** A setting from the environment, or `fallback`; throws when neither is there. */
export const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set (tests/tests/browser.rs sets it)`);
  return value;
};

/** Flags that work on a closed network: no sandbox (root in CI), no background fetches. */
export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let step = 'starting';

/** Logs a line of the script's progress. */
export const log = (msg) => console.log(`[browser] ${msg}`);

/** Starts a named step: logged, and named if the script fails. */
export function begin(name) {
  step = name;
  log(name);
}

/** The step running now. */
export const currentStep = () => step;

/** Opens one user's page in its own browser context, noting any uncaught page error. */
export async function openPage(browser, who, url, problems) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${who} console: ${m.text()}`);
  });
  await page.goto(url);
  return page;
}

/** The chat list row of a contact or a group. */
export const row = (peer) => `.chat-row[data-peer="${peer}"]`;

/** Runs `main` and exits 0 when it passed, 1 naming the failing step otherwise. */
export function run(main) {
  main().then(
    () => {
      log('all steps passed');
      process.exit(0);
    },
    (err) => {
      console.error(`[browser] FAILED at "${step}": ${err.stack || err}`);
      process.exit(1);
    },
  );
}
