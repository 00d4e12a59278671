"""qmlops: MLOps for stock prediction on Ray.

Data versions and lineage (``qmlops.data``), features on Ray Data (``qmlops.features``), the metadata store
(``qmlops.metadata``), and the stages that build on them. Settings: ``qmlops.config``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
