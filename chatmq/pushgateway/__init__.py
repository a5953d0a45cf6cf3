"""chatmq's push gateway: the other side of the push-gateway interface (chatmq/core/push.py).

It receives chatmq's notifications and turns each into an FCM HTTP v1 or APNs request, signed
with the operator's credentials from a TOML file, and answers which device tokens the provider
declared dead. Stateless: chatmq's notifier owns retries and dead letters. It imports nothing of
the store, the broker or the bridge, so it runs anywhere the credentials are.
"""
