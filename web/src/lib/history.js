// The HTTP side of chatmq (docs/protocol.md, "HTTP API v1"): tokens, conversations, history by
// cursor, search, receipts, presence and media. One small class over fetch; every failure is an ApiError
// carrying the server's error code.

export class ApiError extends Error {
  /** @param {number} status 0 when the server could not be reached @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export class HistoryApi {
  /**
   * @param {{baseUrl?: string, token?: string|null, fetch?: typeof fetch}} options
   *   ``baseUrl`` '' means the page's own origin
   */
  constructor({ baseUrl = '', token = null, fetch: fetcher = globalThis.fetch.bind(globalThis) } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.token = token;
    this.fetch = fetcher;
  }

  async request(method, path, { json, body, query, raw = false } = {}) {
    const url = new URL(this.baseUrl + path, globalThis.location?.href ?? 'http://localhost/');
    for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await this.fetch(url, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
    } catch (exc) {
      throw new ApiError(0, 'unreachable', `the server could not be reached (${exc.message})`);
    }
    if (!response.ok) {
      const error = await response.json().then((b) => b?.error, () => null);
      throw new ApiError(response.status, error?.code ?? 'http_error', error?.message ?? `HTTP ${response.status}`);
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  /** POST /v1/auth/token: {token, expires_at} */
  signIn(username, password) {
    return this.request('POST', '/v1/auth/token', { json: { username, password } });
  }

  async conversations() {
    return (await this.request('GET', '/v1/conversations')).conversations;
  }

  conversation(conv) {
    return this.request('GET', `/v1/conversations/${encodeURIComponent(conv)}`);
  }

  createConversation({ members, title, id }) {
    return this.request('POST', '/v1/conversations', { json: { members, ...(title ? { title } : {}), ...(id ? { id } : {}) } });
  }

  /** One page: {messages (ascending seq), has_more}. At most one of ``before`` and ``after``. */
  messages(conv, { before, after, limit, view } = {}) {
    return this.request('GET', `/v1/conversations/${encodeURIComponent(conv)}/messages`,
      { query: { before, after, limit, view } });
  }

  /**
   * GET /v1/search: one page of {results (messages as they stand now, newest first), next}. Pass
   * ``next`` back as ``before`` for older results; null means there are no more.
   */
  search(q, { conv, sender, before, limit } = {}) {
    return this.request('GET', '/v1/search', { query: { q, conv, sender, before, limit } });
  }

  async receipts(conv) {
    return (await this.request('GET', `/v1/conversations/${encodeURIComponent(conv)}/receipts`)).receipts;
  }

  /** GET /v1/users: the profiles ({id, display_name, avatar_url}) of those of ``ids`` the caller may see. */
  async users(ids) {
    const query = new URLSearchParams(ids.map((id) => ['id', id]));
    return (await this.request('GET', `/v1/users?${query}`)).users;
  }

  presence(user) {
    return this.request('GET', `/v1/presence/${encodeURIComponent(user)}`);
  }

  /** POST /v1/media: an attachment ready for a send ({media_id, url, mime, size, sha256}), plus the name. */
  async upload(file, name = file.name) {
    const form = new FormData();
    form.append('file', file, name || 'file');
    const attachment = await this.request('POST', '/v1/media', { body: form });
    return name ? { ...attachment, name } : attachment;
  }

  /** The bytes of a media url (as a Blob): <img src> cannot send the bearer token, so fetch them. */
  async media(url) {
    return (await this.request('GET', url, { raw: true })).blob();
  }
}
