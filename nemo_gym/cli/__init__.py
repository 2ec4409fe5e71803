"""Console commands: ng_run, ng_test, ng_status, ng_dump_config, ng_collect_rollouts."""
