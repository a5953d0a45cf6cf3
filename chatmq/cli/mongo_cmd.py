"""``chatmq mongo-shard-script``: print the mongosh commands that shard chatmq's MongoDB store.

Printed rather than run: sharding is a one-time, cluster-admin decision taken on a mongos with
admin rights the services do not have (and should not). deploy/mongo/shard-chatmq.js is this
command's output for the database ``chatmq``.
"""

from __future__ import annotations

import click

from chatmq.core.store.mongo_layout import shard_script


@click.command("mongo-shard-script")
@click.option("--db", "database", default="chatmq", show_default=True,
              help="the store's database (the path of CHATMQ_STORE_URL)")
def mongo_shard_script(database: str) -> None:
    """Print the mongosh script that builds the store's indexes and shards its collections.

    Run it once against a mongos: chatmq mongo-shard-script | mongosh 'mongodb://MONGOS:27017/admin'
    """
    click.echo(shard_script(database), nl=False)
