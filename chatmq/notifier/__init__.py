"""The notifier: offline push notifications and webhooks, from the store's outbox (chatmq notifier)."""
