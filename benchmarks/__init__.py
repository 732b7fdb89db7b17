"""Benchmarks: OrderSight against the gRPC floor, MLServer and tree runtimes (`make bench`)."""
