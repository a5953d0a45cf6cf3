"""Adapters that let standard MQTT brokers enforce chatmq's access rules (chatcore.access)."""
