"""Rollout collection: rows in, scored rollouts out, nothing lost on crash or Ctrl+C."""
