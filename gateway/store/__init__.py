"""Mail store: contracts, value types and backends."""
