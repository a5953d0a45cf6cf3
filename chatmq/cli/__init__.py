"""The ``chatmq`` command: runs the stack (``up``, ``broker``, ``bridge``, ``api``) and administers it."""
