"""The disconnection emails: what is due, the exactly-once ledger, sending, the run."""
