"""Agent lifecycle: pod manifests, readiness classification, scaling."""
