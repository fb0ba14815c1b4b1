"""The polyvec inference service: one embedding model per process."""
