"""The shared core of chatmq: protocol, configuration, storage, presence and auth.

Everything here is plain Python plus redis/pymongo/pydantic. It never imports amqtt, paho or
flask, so the broker, the bridge and the API can each depend on it without depending on each other.
"""
