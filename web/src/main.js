// The chatmq web app: boot. Reads the server's config.json, connects the client library (one
// connection per browser through the SharedWorker), then renders the app.

import { h, render } from 'preact';
import { ChatClient } from './lib/client.js';
import { App } from './app/app.js';
import { brokerUrl } from './app/format.js';

async function boot() {
  const root = document.getElementById('root');
  try {
    const config = await (await fetch('config.json', { cache: 'no-cache' })).json();
    const params = new URLSearchParams(location.search);
    const client = await ChatClient.connect({
      wsUrl: brokerUrl(config, location),
      apiUrl: config.api_url ?? '',
      heartbeatMs: config.heartbeat_interval_s * 1000,
      maxBodyBytes: config.max_body_bytes,
      shared: params.get('shared') === 'off' ? false : undefined, // ?shared=off: one connection for this tab
    });
    globalThis.chatmq = client; // for the console (and the browser tests)
    render(h(App, { client }), root);
  } catch (exc) {
    showBootError(root, exc);
    throw exc;
  }
}

/** The app could not start (most often: the server was not reachable): say so, and offer to try again. */
function showBootError(root, exc) {
  const box = document.createElement('div');
  box.className = 'boot-error';
  box.setAttribute('role', 'alert');
  box.dataset.testid = 'boot-error';
  const reason = exc instanceof TypeError ? 'the server could not be reached' : exc.message;
  box.append(Object.assign(document.createElement('p'), { textContent: `chatmq could not start: ${reason}.` }));
  const retry = Object.assign(document.createElement('button'), { textContent: 'Try again' });
  retry.dataset.testid = 'boot-retry';
  retry.addEventListener('click', () => {
    root.replaceChildren(Object.assign(document.createElement('p'), { className: 'boot', textContent: 'Loading chatmq…' }));
    boot();
  });
  box.append(retry);
  root.replaceChildren(box);
}

boot();
