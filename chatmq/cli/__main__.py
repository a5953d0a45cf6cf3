"""``python -m chatmq.cli``: the ``chatmq`` command (says what to install when the server's part is missing)."""

from chatmq.cli.entry import main

main()
