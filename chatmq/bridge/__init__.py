"""The bridge: the one MQTT client that turns device sends into stored, ordered, acked messages.

It talks to any MQTT 3.1.1 broker as the service identity, so it never imports ``chatmq/broker/``.
"""
