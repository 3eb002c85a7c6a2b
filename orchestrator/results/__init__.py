"""Results delivery: the results API and files, durable and at least once."""
