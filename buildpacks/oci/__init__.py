"""OCI image model, reproducible layers and one module per image backend."""
