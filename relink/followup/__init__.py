"""The follow-up of a reconnect, written once: check the stored credentials again, then
refresh the connection's datasets when they work, or hand the owner the reconnect link
when they do not. `run` is the process (its I/O steps as parameters: the
reconnect-connection flow passes Prefect tasks, `relink reconnect --check-only` and the
web pages plain calls); `pending` keeps the web pages' follow-ups in the database, so
one the web process did not finish is resumed when it starts again."""
