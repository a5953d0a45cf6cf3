// The app shell: sign-in, the connection banner, the conversation list and the open conversation.

import { h } from 'preact';
import { useEffect, useReducer, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { ConversationView } from './conversation.js';
import { conversationName, timeOf } from './format.js';
import { Search } from './search.js';
import { SNAPSHOT_EVENTS } from '../lib/client.js';

const html = htm.bind(h);
const BACK_ONLINE_MS = 3_000;

/**
 * The client's snapshot as component state, re-rendered on every event that changes it. The listener
 * comes in an effect, which runs only after the browser painted this render: a change that arrived in
 * between (the worker's first answers often do) is caught by the client's version, else the view would
 * stay stale until some later event (after a reload while offline: a list that never shows).
 */
function useSnapshot(client) {
  const [, bump] = useReducer((n) => n + 1, 0);
  const rendered = useRef(client.version);
  rendered.current = client.version;
  useEffect(() => {
    const off = client.on('*', (name) => SNAPSHOT_EVENTS.has(name) && bump());
    if (client.version !== rendered.current) bump();
    return off;
  }, [client]);
  return client.snapshot;
}

/** Display names of everyone in the user's conversations; re-renders when they arrive. */
function useNames(client, conversations) {
  const [, bump] = useReducer((n) => n + 1, 0);
  useEffect(() => client.on('profiles', bump), [client]);
  const ids = [...new Set(conversations.flatMap((c) => c.members ?? []))].sort().join(',');
  useEffect(() => {
    if (ids && client.session) client.loadProfiles(ids.split(','));
  }, [client, ids]);
  return (id) => client.nameOf(id);
}

/** 'lost' while the connection is down (after it was up once), then 'back' for a moment. */
function useConnectionBanner(state) {
  const [banner, setBanner] = useState(null);
  const [wasOnline, setWasOnline] = useState(false);
  useEffect(() => {
    if (state === 'online') {
      setWasOnline(true);
      if (banner === 'lost') {
        setBanner('back');
        const timer = setTimeout(() => setBanner(null), BACK_ONLINE_MS);
        return () => clearTimeout(timer);
      }
    } else if (state === 'offline' && wasOnline) setBanner('lost');
    else if (state === 'signed-out') setBanner(null);
    return undefined;
  }, [state]);
  return banner;
}

export function App({ client }) {
  const snapshot = useSnapshot(client);
  const nameOf = useNames(client, snapshot.conversations);
  const banner = useConnectionBanner(snapshot.state);
  // the open conversation, and the message to show in it (a search result): #c=team&m=42
  const [target, setTarget] = useState(targetOf);
  useEffect(() => {
    const onHash = () => setTarget(targetOf());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  const choose = (conv, seq = null) => {
    location.hash = conv ? `c=${encodeURIComponent(conv)}${seq ? `&m=${seq}` : ''}` : '';
    setTarget({ conv, seq }); // a new object: choosing the same result again shows it again
  };
  const open = target.conv;

  if (!snapshot.session) return html`<${SignIn} client=${client} reason=${snapshot.reason} />`;
  const me = snapshot.session.user;
  const current = snapshot.conversations.find((c) => c.id === open) ?? null;
  return html`
    <div class=${`app ${current ? 'has-open' : ''}`} data-state=${snapshot.state}>
      <${Banner} banner=${banner} state=${snapshot.state} />
      <aside class="sidebar">
        <header class="bar">
          <span class="me" title=${`signed in as ${me} on device ${snapshot.device}`}>
            <span class=${`dot ${snapshot.state === 'online' ? 'online' : ''}`}></span>${nameOf(me)}
          </span>
          <button class="link" onClick=${() => client.signOut()} data-testid="sign-out">Sign out</button>
        </header>
        <${Search} client=${client} conversations=${snapshot.conversations} me=${me} open=${current?.id}
          nameOf=${nameOf} onChoose=${choose}>
          <${NewConversation} client=${client} onCreated=${choose} />
          <${ListProblem} client=${client} listing=${snapshot.listing} />
          <${ConversationList} listing=${snapshot.listing} conversations=${snapshot.conversations} me=${me} presence=${snapshot.presence}
            open=${open} onOpen=${(conv) => choose(conv)} nameOf=${nameOf} />
        <//>
      </aside>
      <main class="main">
        ${current
          ? html`<${ConversationView} key=${current.id} client=${client} conv=${current} me=${me} nameOf=${nameOf}
              presence=${snapshot.presence} outbox=${snapshot.outbox} onBack=${() => choose(null)}
              focus=${target.seq ? target : null} />`
          : html`<div class="empty">Choose a conversation</div>`}
      </main>
    </div>`;
}

/** The conversation and message the page's address names (#c=team&m=42). */
function targetOf() {
  const params = new URLSearchParams(location.hash.slice(1));
  const seq = Number(params.get('m'));
  return { conv: params.get('c'), seq: Number.isSafeInteger(seq) && seq > 0 ? seq : null };
}

function Banner({ banner, state }) {
  if (banner === 'lost' || state === 'offline') {
    return html`<div class="banner lost" role="status" data-testid="banner">Connection lost — reconnecting… Messages you send are kept and go out when it is back.</div>`;
  }
  if (banner === 'back') return html`<div class="banner back" role="status" data-testid="banner">Back online</div>`;
  if (state === 'connecting') return html`<div class="banner connecting" role="status" data-testid="banner">Connecting…</div>`;
  return null;
}

function SignIn({ client, reason }) {
  const [error, setError] = useState(reason);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    setBusy(true);
    setError(null);
    try {
      await client.signIn(String(form.get('user')).trim(), String(form.get('password')));
    } catch (exc) {
      setError(exc.code === 'invalid_credentials' ? 'Wrong user name or password.'
        : exc.code === 'rate_limited' ? 'Too many attempts; wait a minute and try again.' : exc.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <form class="signin" onSubmit=${submit} data-testid="sign-in">
      <h1>chatmq</h1>
      <label>User <input name="user" autocomplete="username" required autofocus pattern="[A-Za-z0-9_.\\-]{1,64}" /></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
      <button type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </form>`;
}

function presenceOf(conv, me, presence) {
  const others = (conv.members ?? []).filter((m) => m !== me);
  return others.some((u) => presence[u]?.status === 'online') ? 'online' : 'offline';
}

/** The conversation list could not be loaded: why, when it is tried again, and a way to try now. */
function ListProblem({ client, listing }) {
  const [now, setNow] = useState(Date.now());
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!listing?.error) return undefined;
    const timer = setInterval(() => setNow(Date.now()), 1_000);
    return () => clearInterval(timer);
  }, [listing?.error]);
  if (!listing?.error) return null;
  const retry = async () => {
    setBusy(true);
    try {
      await client.retryConversations();
    } finally {
      setBusy(false);
    }
  };
  const seconds = listing.retryAt ? Math.max(0, Math.ceil((listing.retryAt - now) / 1000)) : null;
  return html`
    <div class="list-problem" role="alert" data-testid="list-problem">
      <strong>${listing.loaded ? 'Your conversations may be out of date.' : 'Your conversations could not be loaded.'}</strong>
      <span>${listing.error}</span>
      <span>${busy ? 'Trying again…' : seconds ? `Trying again in ${seconds} s.` : 'Trying again…'}</span>
      <button onClick=${retry} disabled=${busy} data-testid="list-retry">Retry now</button>
    </div>`;
}

function ConversationList({ conversations, me, presence, open, onOpen, nameOf, listing }) {
  if (!conversations.length) {
    if (listing && !listing.loaded) {
      return listing.error ? null : html`<p class="hint" data-testid="list-loading">Loading conversations…</p>`;
    }
    return html`<p class="hint">No conversations yet.</p>`;
  }
  return html`
    <ul class="conversations" data-testid="conversations">
      ${conversations.map((c) => html`
        <li key=${c.id}>
          <button class=${`conversation ${c.id === open ? 'open' : ''}`} onClick=${() => onOpen(c.id)}
            data-testid="conversation" data-conv=${c.id} data-unread=${c.unread}>
            <span class=${`dot ${presenceOf(c, me, presence)}`} data-testid="presence-dot"></span>
            <span class="name">${conversationName(c, me, nameOf)}</span>
            ${c.last_message && html`<span class="when">${timeOf(c.last_message.ts)}</span>`}
            <span class="preview">
              ${c.last_message ? `${c.last_message.sender === me ? 'You' : nameOf(c.last_message.sender)}: ${
                c.last_message.deleted ? '[deleted]' : c.last_message.body}` : 'No messages yet'}
            </span>
            ${c.unread > 0 && html`<span class="unread" data-testid="unread">${c.unread}</span>`}
          </button>
        </li>`)}
    </ul>`;
}

function NewConversation({ client, onCreated }) {
  const [shown, setShown] = useState(false);
  const [error, setError] = useState(null);
  if (!shown) return html`<button class="new" onClick=${() => setShown(true)}>+ New conversation</button>`;
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const members = String(form.get('members')).split(/[\s,]+/).filter(Boolean);
    try {
      const created = await client.createConversation({ members, title: String(form.get('title')).trim() || undefined });
      setShown(false);
      onCreated(created.id);
    } catch (exc) {
      setError(exc.message);
    }
  };
  return html`
    <form class="new-conversation" onSubmit=${submit}>
      <input name="members" placeholder="members, e.g. bob, carol" required />
      <input name="title" placeholder="title (optional)" maxlength="200" />
      <div><button type="submit">Create</button> <button type="button" class="link" onClick=${() => setShown(false)}>Cancel</button></div>
      ${error && html`<p class="error">${error}</p>`}
    </form>`;
}
