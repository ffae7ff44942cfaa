"""Dataset refresh: run each dataset's query through its connector and keep the result
(the rows in the warehouse, or the result's shape for direct-query connections). The
refresh-datasets flow, the reconnect service and `relink datasets refresh` use it:
`selection` (which datasets), `run` (refresh them, concurrently, with retries where a retry
is safe, and record each result), `results` (what a refresh did); the warehouse tables are
written by `relink.warehouse`."""
