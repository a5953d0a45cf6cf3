// One open conversation: the newest page of history, live messages after it (in order, each once),
// scroll-back by cursor, typing, receipts, attachments, and the composer.

import { h } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { Sequencer } from '../lib/sequencer.js';
import { randomId } from '../lib/protocol.js';
import { applyEntries, asViewMessage } from '../lib/timeline.js';
import {
  QUICK_REACTIONS, STATUS_MARK, applyReceipt, conversationName, deliveryStatus, ordered, pendingFor, sizeOf, snippet,
  timeOf, typingLine,
} from './format.js';

const html = htm.bind(h);
const PAPERCLIP = html`<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" fill="none" stroke="currentColor"
  stroke-width="2" stroke-linecap="round"><path d="M21 11.5 12.5 20a5.5 5.5 0 0 1-7.8-7.8l8.5-8.5a3.7 3.7 0 0 1 5.2 5.2l-8.5 8.5a1.8 1.8 0 0 1-2.6-2.6L15 7"/></svg>`;
const PAGE = 50;
const TYPING_REPEAT_MS = 3_000; // while typing, say so this often (docs/protocol.md)
const TYPING_LAPSE_MS = 6_000; // someone's "typing" without a repeat lapses after this
const NEAR_BOTTOM_PX = 80;

const FOCUS_PAGE = 200; // pages walking back to a search result
const FOCUS_SHOWN_MS = 4_000;

/** ``focus`` ({seq}, a new object each time it is asked for): scroll to that message and mark it. */
export function ConversationView({ client, conv, me, presence, outbox, onBack, nameOf, focus = null }) {
  const [messages, setMessages] = useState(() => new Map()); // seq -> message as it stands now
  const [lastEntry, setLastEntry] = useState(0); // the newest seq of the log applied (messages and changes)
  const [replyTo, setReplyTo] = useState(null);
  const [editing, setEditing] = useState(null);
  const [olderLeft, setOlderLeft] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  const [markers, setMarkers] = useState({});
  const [typing, setTyping] = useState({}); // user -> lapse time
  const [rejected, setRejected] = useState({}); // client_msg_id -> error
  const [focused, setFocused] = useState(null); // the seq marked after scrolling to it
  const focusDone = useRef(null); // the focus request already served
  const list = useRef(null);
  const stick = useRef(true); // follow new messages while the user is at the bottom
  const keep = useRef(null); // scroll height before prepending older messages

  // --- history and live messages -----------------------------------------------------------------
  useEffect(() => {
    let alive = true;
    const seqr = new Sequencer();
    // entries of the log, in order: messages are added, changes applied to what they target
    const add = (batch) => {
      if (!alive || !batch.length) return;
      setMessages((old) => applyEntries(old, batch));
      setLastEntry((old) => Math.max(old, batch[batch.length - 1].seq));
    };
    const fillGap = async () => {
      while (alive && seqr.missingAfter() !== null) {
        const page = await client.history(conv.id, { after: seqr.last, limit: 200 });
        for (const m of page.messages) add(seqr.offer(m));
        if (!page.has_more) break;
      }
    };
    // listen before fetching: what arrives meanwhile waits in the sequencer until the page sets its start
    const off = client.on('messages', ({ conv: c, messages: batch }) => {
      if (c !== conv.id) return;
      for (const m of batch) add(seqr.offer(m));
      setTyping((old) => (batch.some((m) => old[m.sender]) ? Object.fromEntries(
        Object.entries(old).filter(([u]) => !batch.some((m) => m.sender === u))) : old));
      if (seqr.missingAfter() !== null) fillGap().catch(() => {});
    });
    (async () => {
      try {
        // the newest messages as they stand now; the log's entries after the page's last_seq follow
        const page = await client.history(conv.id, { limit: PAGE, view: 'messages' });
        if (!alive) return;
        setMessages((old) => {
          const next = new Map(old);
          for (const m of page.messages) next.set(m.seq, asViewMessage(m));
          return next;
        });
        setOlderLeft(page.has_more);
        const start = page.last_seq ?? (page.messages.length ? page.messages[page.messages.length - 1].seq : 0);
        setLastEntry((old) => Math.max(old, start));
        add(seqr.start(start));
        await fillGap();
        const current = await client.receipts(conv.id);
        // live receipts may have arrived meanwhile: markers only move forward
        if (alive) setMarkers((live) => current.reduce((m, r) => applyReceipt(applyReceipt(m,
          { user: r.user, seq: r.delivered_seq, status: 'delivered' }), { user: r.user, seq: r.read_seq, status: 'read' }), live));
      } catch (exc) {
        setError(exc.message);
      } finally {
        if (alive) setLoading(false);
      }
    })();
    const offReceipt = client.on('receipt', (r) => r.conv === conv.id && setMarkers((m) => applyReceipt(m, r)));
    const offTyping = client.on('typing', (t) => {
      if (t.conv !== conv.id) return;
      setTyping((old) => ({ ...old, [t.user]: t.typing ? Date.now() + TYPING_LAPSE_MS : 0 }));
    });
    const offAck = client.on('ack', (ack) => {
      if (ack.conv === conv.id && ack.status === 'rejected') setRejected((r) => ({ ...r, [ack.client_msg_id]: ack.error }));
    });
    return () => {
      alive = false;
      off();
      offReceipt();
      offTyping();
      offAck();
    };
  }, [client, conv.id]);

  // a message from someone stops their typing indicator; lapsed indicators disappear
  useEffect(() => {
    const timer = setInterval(() => setTyping((old) => {
      const now = Date.now();
      const live = Object.fromEntries(Object.entries(old).filter(([, until]) => until > now));
      return Object.keys(live).length === Object.keys(old).length ? old : live;
    }), 1_000);
    return () => clearInterval(timer);
  }, []);

  const log = ordered(messages);
  const shown = log;
  const newest = lastEntry; // a read receipt covers every entry up to it, changes too

  // --- read receipts: what is on screen while the page is visible ----------------------------------
  useEffect(() => {
    const read = () => {
      if (document.visibilityState === 'visible' && newest > 0) client.markRead(conv.id, newest).catch(() => {});
    };
    read();
    document.addEventListener('visibilitychange', read);
    return () => document.removeEventListener('visibilitychange', read);
  }, [client, conv.id, newest]);

  // --- scrolling: stay at the bottom for new messages; keep the place when older ones come in --------
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (keep.current !== null) {
      el.scrollTop += el.scrollHeight - keep.current;
      keep.current = null;
    } else if (stick.current) el.scrollTop = el.scrollHeight;
  });
  const loadOlder = async (limit = PAGE) => {
    if (!olderLeft || loading || !shown.length) return;
    setLoading(true);
    try {
      const page = await client.history(conv.id, { before: shown[0].seq, limit, view: 'messages' });
      keep.current = list.current?.scrollHeight ?? null;
      setMessages((old) => {
        const next = new Map(old);
        for (const m of page.messages) if (!next.has(m.seq)) next.set(m.seq, asViewMessage(m));
        return next;
      });
      setOlderLeft(page.has_more);
    } catch (exc) {
      setError(exc.message);
    } finally {
      setLoading(false);
    }
  };

  // --- a search result: walk back (contiguously, by cursor) until its message is here, then show it --
  useEffect(() => {
    if (!focus || focusDone.current === focus || loading) return undefined;
    if (!messages.has(focus.seq)) {
      if (olderLeft && shown.length && shown[0].seq > focus.seq) loadOlder(FOCUS_PAGE);
      else focusDone.current = focus; // not in the log any more (purged by retention)
      return undefined;
    }
    focusDone.current = focus;
    stick.current = false;
    list.current?.querySelector(`[data-seq="${focus.seq}"]`)?.scrollIntoView({ block: 'center' });
    setFocused(focus.seq);
    return undefined;
  }, [focus, loading, messages, olderLeft]);
  useEffect(() => {
    if (focused === null) return undefined;
    const timer = setTimeout(() => setFocused(null), FOCUS_SHOWN_MS);
    return () => clearTimeout(timer);
  }, [focused]);

  const onScroll = (event) => {
    const el = event.currentTarget;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
    if (el.scrollTop < 40) loadOlder();
  };

  const members = conv.members ?? [];
  const typers = Object.entries(typing).filter(([u, until]) => until > Date.now() && u !== me).map(([u]) => u);
  const pending = pendingFor(conv.id, outbox, shown, me);
  return html`
    <section class="conversation-view" data-testid="conversation-view" data-conv=${conv.id}>
      <header class="bar">
        <button class="back-button" onClick=${onBack} aria-label="Back to conversations">‹</button>
        <div class="title">
          <strong data-testid="conversation-title">${conversationName(conv, me, nameOf)}</strong>
          <span class="members">
            ${members.filter((u) => u !== me).map((u) => html`
              <span key=${u} class="member" data-testid="member" data-user=${u} data-presence=${presence[u]?.status ?? 'offline'}>
                <span class=${`dot ${presence[u]?.status === 'online' ? 'online' : ''}`}></span>${nameOf(u)}
              </span>`)}
          </span>
        </div>
      </header>
      <ol class="messages" ref=${list} onScroll=${onScroll} data-testid="messages">
        ${olderLeft && html`<li class="more"><button class="link" onClick=${loadOlder} data-testid="load-older">${loading ? 'Loading…' : 'Earlier messages'}</button></li>`}
        ${!olderLeft && !loading && html`<li class="start">The start of the conversation</li>`}
        ${shown.map((m) => html`<${Message} key=${m.seq} client=${client} message=${m} me=${me} nameOf=${nameOf}
          focused=${m.seq === focused}
          status=${m.sender === me && !m.deleted ? deliveryStatus(m.seq, me, members, markers) : null}
          quoted=${m.reply_to ? messages.get(m.reply_to) ?? { seq: m.reply_to } : null}
          actions=${{
            conv: conv.id, mayDelete: m.sender === me || conv.owner === me,
            reply: () => { setEditing(null); setReplyTo(m); },
            edit: () => { setReplyTo(null); setEditing(m); },
          }} />`)}
        ${pending.map((item) => html`<${Message} key=${item.client_msg_id} client=${client} me=${me} nameOf=${nameOf}
          message=${{ ...item.payload, sender: me, ts: item.created }}
          status=${rejected[item.client_msg_id] ? 'failed' : 'pending'} />`)}
        ${Object.entries(rejected).filter(([id]) => !pending.some((p) => p.client_msg_id === id)).map(([id, err]) => html`
          <li key=${id} class="message mine failed" data-testid="rejected">Not sent: ${err?.message ?? 'refused'}</li>`)}
      </ol>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="typing" data-testid="typing" aria-live="polite">${typingLine(typers.map(nameOf))}</div>
      <${Composer} key=${editing ? `edit-${editing.seq}` : 'compose'} client=${client} conv=${conv.id}
        replyTo=${replyTo} editing=${editing} nameOf=${nameOf}
        onCancel=${() => { setReplyTo(null); setEditing(null); }}
        onSent=${() => { stick.current = true; setReplyTo(null); setEditing(null); }} />
    </section>`;
}

function Message({ client, message, me, status, nameOf, quoted = null, actions = null, focused = false }) {
  const [picking, setPicking] = useState(false);
  const mine = message.sender === me;
  const stored = Boolean(message.seq) && !message.deleted;
  const toggle = (emoji, on) => (on ? client.unreact(actions.conv, message.seq, emoji)
    : client.react(actions.conv, message.seq, emoji)).catch(() => {});
  return html`
    <li class=${`message ${mine ? 'mine' : ''} ${message.deleted ? 'deleted' : ''} ${focused ? 'focused' : ''}`} data-testid="message"
        data-seq=${message.seq ?? ''} data-client-msg-id=${message.client_msg_id} data-status=${status ?? ''}>
      ${!mine && html`<span class="sender" title=${message.sender}>${nameOf(message.sender)}</span>`}
      ${quoted && html`<span class="quote" data-testid="reply-to" data-target=${quoted.seq}>
        ↪ ${quoted.sender ? `${nameOf(quoted.sender)}: ${snippet(quoted)}` : `message #${quoted.seq}`}</span>`}
      ${message.deleted
        ? html`<span class="body tombstone" data-testid="deleted">[deleted]</span>`
        : message.body && html`<span class="body">${message.body}</span>`}
      ${(message.attachments ?? []).map((a) => html`<${Attachment} key=${a.media_id} client=${client} attachment=${a} />`)}
      ${message.reactions?.length > 0 && html`<span class="reactions">
        ${message.reactions.map((r) => {
          const on = r.users.includes(me);
          return html`<button key=${r.emoji} class=${`reaction ${on ? 'on' : ''}`} data-testid="reaction" data-emoji=${r.emoji}
            title=${r.users.map(nameOf).join(', ')} onClick=${() => actions && toggle(r.emoji, on)}>${r.emoji} ${r.count}</button>`;
        })}</span>`}
      <span class="meta">
        ${message.edited && !message.deleted && html`<span class="edited" data-testid="edited">(edited)</span> `}
        ${message.ts ? timeOf(message.ts) : ''}
        ${status && html` <span class=${`status ${status}`} data-testid="status" title=${status}>${STATUS_MARK[status]}</span>`}
      </span>
      ${actions && stored && html`<span class="actions">
        <button class="link" onClick=${actions.reply} data-testid="action-reply">Reply</button>
        <button class="link" onClick=${() => setPicking(!picking)} data-testid="action-react">React</button>
        ${mine && html`<button class="link" onClick=${actions.edit} data-testid="action-edit">Edit</button>`}
        ${actions.mayDelete && html`<button class="link danger" data-testid="action-delete"
          onClick=${() => confirm('Delete this message for everyone?') && client.delete(actions.conv, message.seq).catch(() => {})}>Delete</button>`}
      </span>`}
      ${picking && html`<span class="picker" data-testid="picker">${QUICK_REACTIONS.map((e) => html`
        <button key=${e} class="link" data-testid="pick-emoji" data-emoji=${e} onClick=${() => {
          setPicking(false);
          toggle(e, Boolean(message.reactions?.find((r) => r.emoji === e)?.users.includes(me)));
        }}>${e}</button>`)}</span>`}
    </li>`;
}

/** Media needs the bearer token, so it is fetched and shown from a blob URL. */
function Attachment({ client, attachment }) {
  const [url, setUrl] = useState(null);
  const image = attachment.mime.startsWith('image/');
  useEffect(() => {
    if (!image) return undefined;
    let objectUrl = null;
    let alive = true;
    client.media(attachment.url ?? `/v1/media/${attachment.media_id}`).then((blob) => {
      objectUrl = URL.createObjectURL(blob);
      if (alive) setUrl(objectUrl);
    }).catch(() => {});
    return () => {
      alive = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [attachment.media_id]);
  const download = async () => {
    const blob = await client.media(attachment.url ?? `/v1/media/${attachment.media_id}`);
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: attachment.name ?? 'file' });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  };
  if (image) {
    return html`<span class="attachment image" data-testid="attachment">
      ${url ? html`<img src=${url} alt=${attachment.name ?? 'image'} data-testid="attachment-image" />` : html`<span class="placeholder">image…</span>`}
    </span>`;
  }
  return html`<button class="attachment file" onClick=${download} data-testid="attachment">
    ${PAPERCLIP} ${attachment.name ?? attachment.mime} <small>${sizeOf(attachment.size)}</small></button>`;
}

function Composer({ client, conv, onSent, onCancel, replyTo, editing, nameOf }) {
  const [text, setText] = useState(editing ? editing.body : '');
  const [files, setFiles] = useState([]); // {file, preview}
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const lastTyping = useRef(0);
  const input = useRef(null);

  const stopTyping = () => {
    if (lastTyping.current) client.typing(conv, false).catch(() => {});
    lastTyping.current = 0;
  };
  useEffect(() => stopTyping, [conv]);
  const onInput = (event) => {
    setText(event.target.value);
    if (!event.target.value) return stopTyping();
    if (Date.now() - lastTyping.current > TYPING_REPEAT_MS) {
      lastTyping.current = Date.now();
      client.typing(conv, true).catch(() => {});
    }
    return undefined;
  };
  const pick = (event) => {
    const chosen = [...event.target.files].map((file) => ({
      file, preview: file.type.startsWith('image/') ? URL.createObjectURL(file) : null }));
    setFiles((old) => [...old, ...chosen]);
    event.target.value = '';
  };
  const unpick = (index) => setFiles((old) => {
    if (old[index].preview) URL.revokeObjectURL(old[index].preview);
    return old.filter((_, i) => i !== index);
  });
  const send = async (event) => {
    event?.preventDefault();
    const body = text.trim();
    if ((!body && !files.length) || busy) return;
    setBusy(true);
    setError(null);
    try {
      if (editing) {
        if (body !== editing.body) await client.edit(conv, editing.seq, body);
        setText('');
        onSent();
        return;
      }
      const attachments = [];
      for (const { file } of files) attachments.push(await client.upload(file));
      await client.send(conv, body, { attachments, replyTo: replyTo?.seq ?? null, clientMsgId: randomId() });
      for (const f of files) if (f.preview) URL.revokeObjectURL(f.preview);
      setText('');
      setFiles([]);
      stopTyping();
      onSent();
    } catch (exc) {
      setError(exc.code === 'unreachable' ? 'Uploads need a connection; try again when it is back.' : exc.message);
    } finally {
      setBusy(false);
      input.current?.focus();
    }
  };
  const onKey = (event) => {
    if (event.key === 'Enter' && !event.shiftKey) send(event);
    if (event.key === 'Escape' && (replyTo || editing)) onCancel();
  };
  return html`
    <form class="composer" onSubmit=${send} data-testid="composer">
      ${(replyTo || editing) && html`<div class="context" data-testid="composer-context">
        <span>${editing ? 'Editing your message' : `Replying to ${nameOf(replyTo.sender)}: ${snippet(replyTo, 60)}`}</span>
        <button type="button" class="link" onClick=${onCancel} aria-label="Cancel">×</button>
      </div>`}
      ${files.length > 0 && html`<div class="previews" data-testid="previews">
        ${files.map((f, i) => html`<span class="preview-item" key=${i}>
          ${f.preview ? html`<img src=${f.preview} alt=${f.file.name} />` : html`<span class="file">${PAPERCLIP} ${f.file.name}</span>`}
          <small>${sizeOf(f.file.size)}</small>
          <button type="button" class="link" onClick=${() => unpick(i)} aria-label=${`remove ${f.file.name}`}>×</button>
        </span>`)}
      </div>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="row">
        <label class="attach" title="Attach a picture or a file">${PAPERCLIP}<input type="file" multiple onChange=${pick} data-testid="file-input" /></label>
        <textarea ref=${input} rows="1" value=${text} onInput=${onInput} onKeyDown=${onKey} onBlur=${stopTyping}
          placeholder="Message" aria-label="Message" data-testid="message-input"></textarea>
        <button type="submit" disabled=${busy} data-testid="send">${busy ? '…' : editing ? 'Save' : 'Send'}</button>
      </div>
    </form>`;
}
