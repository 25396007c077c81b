// The gateway's public API, as this tab's signed-in principal. The key lives in sessionStorage (this tab only,
// gone when it closes) and travels only in the Authorization header, never in a URL.

const KEY = "ragswap.console.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY) || "";
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
  principal: null,
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.type = error?.type;
    this.param = error?.param;
    this.code = error?.code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function headers(extra = {}) {
  const out = { ...extra };
  if (session.key) out.Authorization = `Bearer ${session.key}`;
  return out;
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  return new ApiError(resp.status, body?.error || { message: `${resp.status} ${resp.statusText}` });
}

// JSON request; throws ApiError with the gateway's OpenAI-shaped error (message, type, param, code).
export async function api(path, { method = "GET", json, body, signal, raw = false, quiet401 = false } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

// Streams a chat completion (server-sent events). onChunk gets every parsed chunk; resolves when [DONE] arrives.
export async function streamChat(body, { onChunk, signal }) {
  const resp = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(Number(chunk.error.code) || 502, chunk.error);
      onChunk(chunk);
    }
  }
  throw new ApiError(502, { message: "the stream ended before [DONE]" });
}

// Multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
export function upload(path, formData, { onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    if (session.key) xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total, "upload");
    });
    xhr.upload.addEventListener("load", () => onProgress && onProgress(1, "processing"));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else {
        const err = new ApiError(xhr.status, xhr.response?.error || { message: `HTTP ${xhr.status}` });
        if (xhr.status === 401) onUnauthorized(err);
        reject(err);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { message: "network error during upload" })));
    xhr.send(formData);
  });
}
