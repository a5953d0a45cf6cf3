// Search: the box at the top of the conversation list and its results (GET /v1/search, newest
// first, a page at a time). Choosing a result opens its conversation at that message.

import { h } from 'preact';
import { useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { conversationName, highlight, timeOf } from './format.js';

const html = htm.bind(h);
const PAGE = 20;

/**
 * The search box; while a search is shown, its results stand in for ``children`` (the conversation
 * list). ``open`` is the open conversation (the scope "in this conversation" offers it).
 */
export function Search({ client, conversations, me, open, nameOf, onChoose, children }) {
  const [text, setText] = useState('');
  const [within, setWithin] = useState(false);
  const [search, setSearch] = useState(null); // {q, conv, results, next, loading, error}
  const asked = useRef(0); // a newer search wins over the answer to an older one

  const run = async (q, conv, before = null) => {
    const n = ++asked.current;
    setSearch((old) => ({ q, conv, results: before ? old.results : [], next: before ? old.next : null, loading: true, error: null }));
    try {
      const page = await client.search(q, { conv: conv ?? undefined, before: before ?? undefined, limit: PAGE });
      if (n !== asked.current) return;
      setSearch((old) => ({ ...old, results: [...old.results, ...page.results], next: page.next, loading: false }));
    } catch (exc) {
      if (n !== asked.current) return;
      setSearch((old) => ({ ...old, loading: false,
        error: exc.code === 'unreachable' ? 'Search needs a connection to the server; try again when it is back.' : exc.message }));
    }
  };
  const submit = (event) => {
    event.preventDefault();
    const q = text.trim();
    if (q) run(q, within && open ? open : null);
  };
  const clear = () => {
    asked.current += 1;
    setText('');
    setSearch(null);
  };
  const onInput = (event) => {
    setText(event.target.value);
    if (!event.target.value) clear();
  };
  const onKey = (event) => {
    if (event.key === 'Escape') clear();
  };
  const openConv = conversations.find((c) => c.id === open);

  return html`
    <form class="search" role="search" onSubmit=${submit} data-testid="search">
      <div class="row">
        <input type="search" value=${text} onInput=${onInput} onKeyDown=${onKey} maxlength="256"
          placeholder="Search messages" aria-label="Search messages" data-testid="search-input" />
        ${search && html`<button type="button" class="link" onClick=${clear} data-testid="search-clear">Cancel</button>`}
      </div>
      ${openConv && (text || search) && html`<label class="scope">
        <input type="checkbox" checked=${within} onChange=${(e) => setWithin(e.target.checked)} data-testid="search-within" />
        only in ${conversationName(openConv, me, nameOf)}</label>`}
    </form>
    ${search ? html`<${Results} search=${search} conversations=${conversations} me=${me} nameOf=${nameOf}
        onChoose=${onChoose} onMore=${() => run(search.q, search.conv, search.next)} />` : children}`;
}

function Results({ search, conversations, me, nameOf, onChoose, onMore }) {
  const { q, results, next, loading, error } = search;
  const nameOfConv = (id) => {
    const conv = conversations.find((c) => c.id === id);
    return conv ? conversationName(conv, me, nameOf) : id;
  };
  return html`
    <div class="search-results" data-testid="search-results" data-loading=${loading ? 'yes' : 'no'}>
      ${error && html`<p class="error" role="alert" data-testid="search-error">${error}</p>`}
      ${!error && !loading && !results.length && html`<p class="hint" data-testid="search-empty">No messages match “${q}”.</p>`}
      <ul class="conversations">
        ${results.map((m) => html`
          <li key=${`${m.conv}:${m.seq}`}>
            <button class="conversation result" onClick=${() => onChoose(m.conv, m.seq)}
              data-testid="search-result" data-conv=${m.conv} data-seq=${m.seq}>
              <span class="name">${nameOfConv(m.conv)}</span>
              <span class="when">${timeOf(m.ts)}</span>
              <span class="preview">${m.sender === me ? 'You' : nameOf(m.sender)}: ${highlight(m.body, q, 30).map((part) => (
                part.match ? html`<mark>${part.text}</mark>` : part.text))}${m.edited ? ' (edited)' : ''}</span>
            </button>
          </li>`)}
      </ul>
      ${loading && html`<p class="hint">Searching…</p>`}
      ${next && !loading && html`<button class="new" onClick=${onMore} data-testid="search-more">More results</button>`}
    </div>`;
}
