"""Redis: clients for one server, a Sentinel-managed master or a cluster, their URL forms,
shared rate limits (one Lua call), and the embedded servers (Redis, PostgreSQL) for demos and
tests.

May import: the foundation only.
"""
