"""The chatmq MQTT broker: amqtt 0.12.1 with chatmq's authentication and access-control plugins.

Nothing outside this package imports it (the bridge and API work with any MQTT 3.1.1 broker).
"""
