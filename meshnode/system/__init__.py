"""Blocking glue to the operating system: where a node lives, its data dir and its config file."""
