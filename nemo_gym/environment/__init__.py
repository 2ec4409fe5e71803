"""Environment bundles: a `config.yaml` of servers and the `manifest.yaml` that describes it."""
