"""The audit trail's pure parts: the data guard and route mapping, record building, encryption.

Nothing in this package does network I/O: the request path and the Redis writer call into it.
"""
