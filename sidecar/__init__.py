"""sidecar: a hardened, audited API-key reverse proxy to run beside an existing HTTP service."""

__version__ = "0.1.0"
