"""sidecar: a hardened, audited API-key reverse proxy to run beside an existing HTTP service.

The packages are layers; each imports only from those below it (checked by import-linter,
`make lint`):

    cli       the command line
    runtime   wiring, serving, workers, TLS, health, logs
    proxy     the request path: screen, route, authenticate, guard, forward
    audit     records, events, encryption, the durable writer
    keys      key format, store, cache, authentication (beside audit: neither imports the other)
    guard     the data guard: what a body is, cards, credentials
    storage   Redis clients and URL forms, shared rate limits, the embedded server
    config, errors, durations, metrics, tasks   the foundation
"""

__version__ = "0.1.0"
