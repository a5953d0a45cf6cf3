"""amqtt plugins, registered by dotted class path in the broker config (see broker.config)."""
