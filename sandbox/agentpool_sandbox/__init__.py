"""A local Kubernetes API server and simulated kubelet, for development, demo and tests only."""
