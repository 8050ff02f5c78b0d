"""IMAP4rev1 view over the store."""
