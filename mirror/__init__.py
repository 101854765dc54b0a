"""mirror: keep container base images in Amazon ECR; spend no Docker Hub pull on unchanged ones."""

__version__ = "0.1.0"
