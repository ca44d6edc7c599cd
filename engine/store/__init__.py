"""Storage and jobs: where Loupe keeps things (LOUPE_HOME), files written whole or not at all (the one atomic write),
the runs database, drafts of unsaved settings, and the background job runner with its `RunControl` (how a run is
stopped, paused or interrupted). The bottom layer: it imports only `engine.spec` and `engine.errors`."""
