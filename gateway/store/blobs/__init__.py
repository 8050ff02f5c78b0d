"""
Message bodies by content address, for the backends that keep their index
apart from the bytes: the interface, spooling an arriving body, and an S3
object store.
"""
