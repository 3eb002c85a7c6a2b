"""Computations Orchestrator: coordinates federated statistics jobs over Redis."""

__version__ = "0.1.0"
SERVICE_NAME = "computations-orchestrator"
