"""gateway: POP3 and IMAP over one shared mail store."""
