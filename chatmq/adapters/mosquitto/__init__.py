"""Mosquitto with its dynamic security plugin as chatmq's broker.

chatmq keeps Mosquitto's clients, roles and ACLs in step with its users and memberships through
the ``$CONTROL/dynamic-security/v1`` topic API (see docs/brokers.md).
"""
