"""Adapters that let standard MQTT brokers enforce chatmq's access rules (chatmq.core.access)."""
