"""The ``meshnode`` command's exit statuses, the same for every command."""

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed (not found, a daemon error)
EXIT_BAD_INPUT = 2  # bad input: nothing was stored
EXIT_NO_DAEMON = 3  # no daemon is running
EXIT_INTERRUPTED = 130  # ^C before the work was done (128 + SIGINT, as shells report it)
