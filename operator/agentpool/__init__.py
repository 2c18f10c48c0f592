"""AgentPool Operator: CI build agents and batched build steps on Kubernetes."""

__version__ = "0.1.0"
USER_AGENT = f"agentpool-operator/{__version__}"
