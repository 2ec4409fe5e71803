"""Reward statistics over a run: pass@k / majority@k (`pass_at_k`), descriptive statistics
(`stats`), per-task / per-agent / per-repeat profiles (`profile`) and the `/aggregate_metrics`
answer (`aggregate`). `nemo_gym.reward_profile` re-exports them under NeMo Gym's import path."""
