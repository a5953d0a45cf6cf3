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
    root.textContent = `chatmq could not start: ${exc.message}`;
    throw exc;
  }
}

boot();
