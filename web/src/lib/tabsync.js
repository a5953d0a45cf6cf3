// Signing in and out across tabs that each run their own engine (where SharedWorker is missing):
// they share the session in IndexedDB but not a connection, so a tab that signs out tells the others
// over a BroadcastChannel, and they end their connections too; a tab that signs in has the others
// take the new session. (With the SharedWorker there is one engine and every tab hears it anyway.)

export const SESSION_CHANNEL = 'chatmq.session';

/**
 * Keep ``engine``'s session in step with the other tabs' on ``channel`` (a BroadcastChannel).
 * ``onSnapshot`` gets the engine's snapshot after it took another tab's new session.
 * @returns {() => void} stop
 */
export function shareSession(engine, channel, onSnapshot) {
  let fromPeer = false; // what a peer's message makes this engine do is not told back
  const off = engine.listen((name, data) => {
    if (fromPeer) return;
    if (name === 'session' && data) channel.postMessage({ type: 'signed-in', user: data.user, token: data.token });
    if (name === 'state' && data.state === 'signed-out') channel.postMessage({ type: 'signed-out', reason: data.reason });
  });
  const onMessage = async ({ data }) => {
    fromPeer = true;
    try {
      if (data?.type === 'signed-out' && engine.session) {
        await engine.signOut(data.reason ?? null, { revoke: false }); // the tab that signed out revoked it
      } else if (data?.type === 'signed-in' && engine.session?.token !== data.token) {
        await engine.stop({ clean: true });
        onSnapshot(await engine.resume()); // the session the other tab stored
      }
    } finally {
      fromPeer = false;
    }
  };
  channel.addEventListener('message', onMessage);
  return () => {
    off();
    channel.removeEventListener('message', onMessage);
  };
}
