"""chatmq: a chat backend for devices that speak MQTT.

Subpackages: ``core`` (protocol, access rules, storage contract), ``broker``, ``bridge``, ``api``,
``notifier``, ``pushgateway`` (the services), ``adapters`` (other brokers), ``clients`` (the device
client library, installable without the server's dependencies) and ``cli`` (the ``chatmq`` command).
"""
