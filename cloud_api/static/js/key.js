// The API key the page sends as `Authorization: Bearer <key>`. It comes from the key form or
// from the URL fragment (`/#key=...`: a fragment is never sent to the server), is kept in
// localStorage so it is asked for once, and is removed from the address bar at once.

const STORAGE_KEY = "aiot.apiKey";
const PRINTABLE = /^[\x21-\x7e]{1,1024}$/;

/** Why `key` cannot be sent in a header, or null when it can. */
export function keyProblem(key) {
  if (!key) return "enter an API key";
  if (!PRINTABLE.test(key)) return "an API key is printable ASCII without spaces (at most 1024 characters)";
  return null;
}

/** The key in the fragment (`#key=...`), which is then removed from the address bar. */
export function takeKeyFromFragment(win = window) {
  const fragment = win.location.hash.replace(/^#/, "");
  if (!fragment) return null;
  const params = new URLSearchParams(fragment);
  const key = params.get("key");
  if (key === null) return null;
  params.delete("key");
  const rest = params.toString();
  const url = `${win.location.pathname}${win.location.search}${rest ? `#${rest}` : ""}`;
  win.history.replaceState(win.history.state, "", url);
  return key.trim();
}

/** The stored key, or null. */
export function loadKey(storage = window.localStorage) {
  const key = storage.getItem(STORAGE_KEY);
  return key && keyProblem(key) === null ? key : null;
}

export function saveKey(key, storage = window.localStorage) {
  storage.setItem(STORAGE_KEY, key);
}

export function forgetKey(storage = window.localStorage) {
  storage.removeItem(STORAGE_KEY);
}
