// The public REST API, called with the API key. Paths are relative to the page, so the
// dashboard also works behind a reverse proxy that serves it under a prefix.

/** A call that did not answer 2xx; `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(path, status, detail) {
    super(status ? `${path}: ${status} ${detail}` : `${path}: ${detail}`);
    this.name = "ApiError";
    this.path = path;
    this.status = status;
    this.detail = detail;
  }
}

/** 401 or 403: the key is missing, wrong, revoked or lacks the scope. */
export class AuthError extends ApiError {
  constructor(path, status, detail) {
    super(path, status, detail);
    this.name = "AuthError";
  }
}

/** FastAPI's `{"detail": ...}` as one line of text (validation errors are a list). */
export function detailOf(body, fallback) {
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  }
  return fallback;
}

/** The error for a response that is not 2xx. */
export async function errorOf(path, response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status text says enough.
  }
  const detail = detailOf(body, response.statusText || "request failed");
  const Kind = response.status === 401 || response.status === 403 ? AuthError : ApiError;
  return new Kind(path, response.status, detail);
}

export class Api {
  constructor(key, base = document.baseURI) {
    this.key = key;
    this.base = base;
  }

  /** `path` (no leading slash) with query `params`; an array value repeats the parameter. */
  url(path, params = {}) {
    const url = new URL(path, this.base);
    for (const [name, value] of Object.entries(params)) {
      if (value === undefined || value === null) continue;
      for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(name, item);
    }
    return url;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  /** The JSON of a GET; ApiError (AuthError on 401/403) otherwise. */
  async get(path, params = {}) {
    const response = await this.fetch(path, params);
    if (!response.ok) throw await errorOf(path, response);
    return response.json();
  }

  /** Like `get`, but null when the route answers 404 (a resource this server does not have). */
  async getOptional(path, params = {}) {
    const response = await this.fetch(path, params);
    if (response.status === 404) return null;
    if (!response.ok) throw await errorOf(path, response);
    return response.json();
  }

  /** POST a JSON body; the JSON answer, or ApiError (AuthError on 401/403). */
  async post(path, body) {
    let response;
    try {
      response = await fetch(this.url(path), {
        method: "POST",
        headers: this.headers({ Accept: "application/json", "Content-Type": "application/json" }),
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(path, 0, `the API did not answer (${error.message})`);
    }
    if (!response.ok) throw await errorOf(path, response);
    return response.json();
  }

  async fetch(path, params) {
    try {
      return await fetch(this.url(path, params), {
        headers: this.headers({ Accept: "application/json" }),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(path, 0, `the API did not answer (${error.message})`);
    }
  }
}
