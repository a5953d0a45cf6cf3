"""RabbitMQ (``rabbitmq_mqtt``, ``rabbitmq_web_mqtt``, ``rabbitmq_auth_backend_http``) as chatmq's broker.

- ``topics``: MQTT topics as RabbitMQ routes them (routing keys on the MQTT exchange) and back;
- ``config``: the part of ``rabbitmq.conf`` chatmq needs, rendered from chatmq's settings;
- the decisions themselves are the API's (chatmq/api/brokerhooks/rabbitmq.py), from chatmq's one rule table.

docs/brokers.md says what RabbitMQ enforces and what it cannot.
"""
