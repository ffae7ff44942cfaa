"""The credential sweep, in the order it runs: `plan` (which connections, in which
batches and shards), `load` (read and decrypt a batch), `validate` (ask each source,
under caps, with retries), `relink.checks` (check a batch and record its outcomes
through the state rules), `summary` (a sweep's counts, incidents and installation
problems), `shards` (the shard rows a fanned-out sweep claims), `record` (the last
sweep's event) and `run` (`run_sweep`, the process itself, taking its I/O steps)."""
