"""Aggregation: the durable work queue, the backends, and decoding the aggregate into statistics."""
