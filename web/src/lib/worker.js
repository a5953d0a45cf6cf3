// The SharedWorker: one MQTT connection for every tab of this origin (see hub.js).

import mqtt from '../vendor/mqtt.esm.js';
import { TabHub } from './hub.js';
import { createEngine } from './setup.js';

const hub = new TabHub({
  createEngine: (config) => createEngine(config, mqtt.connect),
  onIdle: () => self.close(),
});

self.addEventListener('connect', (event) => hub.attach(event.ports[0]));
self.addEventListener('online', () => hub.engine?.reconnectNow());
