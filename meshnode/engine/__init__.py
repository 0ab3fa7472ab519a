"""The node level, sans-IO: a node's records, its peers and what it tells them.

Events go in (bytes from a connection, a publish, a timer, an address hint),
actions come out (bytes to send, a connection to dial or close, a ban, records
for watchers); the time of each event and all randomness are passed in. The
trio daemon (``meshnode.runtime``) and the simulator (``meshnode.sim``) drive the
same engine.
"""
