"""What `ng_run` does: child processes, their supervision, and the head server."""
