"""The gRPC front (server lifecycle, thin servicer) and the data plane behind it."""
