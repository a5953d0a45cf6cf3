// Building a ChatEngine for this browser: its IndexedDB store and its device id.

import { ChatEngine } from './engine.js';
import { Backoff } from './retry.js';
import { LocalStore } from './storage.js';
import { randomId } from './protocol.js';

/**
 * The browser's device id, created once and kept in IndexedDB: one device per browser profile,
 * as the server sees it (presence, client id).
 */
export async function browserDevice(store) {
  let device = await store.get('device');
  if (!device) {
    device = `web-${randomId().slice(0, 12)}`;
    await store.set('device', device);
  }
  return device;
}

/**
 * @param {{wsUrl: string, apiUrl?: string, heartbeatMs?: number, maxBodyBytes?: number, dbName?: string,
 *          deviceSuffix?: string}} config
 * @param {Function} mqttConnect the MQTT library's connect (mqtt.js)
 */
export async function createEngine(config, mqttConnect, log = (line) => console.debug(`chatmq: ${line}`)) {
  const store = await LocalStore.open(config.dbName);
  const device = (await browserDevice(store)) + (config.deviceSuffix ? `-${config.deviceSuffix}` : '');
  const engine = new ChatEngine({
    store, mqttConnect, device, log,
    wsUrl: config.wsUrl,
    apiUrl: config.apiUrl ?? '',
    heartbeatMs: config.heartbeatMs ?? 30_000,
    maxBodyBytes: config.maxBodyBytes ?? 4096,
    backoff: new Backoff({ min: 500, max: 15_000 }),
  });
  return engine;
}
