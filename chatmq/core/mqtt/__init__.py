"""MQTT 3.1.1 on the wire, without I/O: ``chatmq.core.mqtt.codec`` frames, parses and builds packets
for the broker, the probes, the benchmarks' client and the tests (see that module)."""
