"""``python -m chatmq.cli``: the ``chatmq`` command."""

from chatmq.cli.main import main

main()
