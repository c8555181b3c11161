"""terarec: deep recommendation models whose embedding tables outgrow memory."""

from terarec.errors import ConfigError, DataError, PlanError, TerarecError
from terarec.sparse import JaggedTensor

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "JaggedTensor", "PlanError", "TerarecError", "__version__"]
