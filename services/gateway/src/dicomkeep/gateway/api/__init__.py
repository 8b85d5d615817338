"""The FastAPI routers of the Orthanc-compatible REST API, one module per area."""
