"""The trio edges: the daemon, its control socket and its store thread."""
