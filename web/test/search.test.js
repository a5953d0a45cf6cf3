// HistoryApi.search: the query it sends (docs/protocol.md, GET /v1/search) and the errors it raises.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, HistoryApi } from '../src/lib/history.js';

function recording(status, body) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: new URL(url), init });
    return { ok: status < 400, status, json: async () => body };
  };
  return { calls, fetch };
}

test('search sends q and the given filters, and returns the page', async () => {
  const page = { results: [{ conv: 'team', seq: 4, body: 'lunch?' }], next: 'WzFd' };
  const { calls, fetch } = recording(200, page);
  const api = new HistoryApi({ baseUrl: 'http://chat.example', token: 't0k', fetch });
  assert.deepEqual(await api.search('lunch "at" *noon', { conv: 'team', before: 'WzJd', limit: 5 }), page);
  const { url, init } = calls[0];
  assert.equal(url.pathname, '/v1/search');
  assert.deepEqual(Object.fromEntries(url.searchParams), { q: 'lunch "at" *noon', conv: 'team', before: 'WzJd', limit: '5' });
  assert.equal(init.method, 'GET');
  assert.equal(init.headers.Authorization, 'Bearer t0k');
});

test('a refused search raises the server error code', async () => {
  const { fetch } = recording(400, { error: { code: 'bad_request', message: 'q: needs at least one word' } });
  const api = new HistoryApi({ baseUrl: 'http://chat.example', fetch });
  await assert.rejects(api.search('*'), (err) => err instanceof ApiError && err.status === 400 && err.code === 'bad_request'
    && err.message === 'q: needs at least one word');
});
