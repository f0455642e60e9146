"""SSL methods: one file each on the shared ``SSLMethod`` base."""

from medssl.methods.base import METHODS, SSLMethod
from medssl.methods.dino import DINO
from medssl.methods.jcl import JCL
from medssl.methods.mae import MAE
from medssl.methods.mim import MIM
from medssl.methods.moco import MoCo
from medssl.methods.simclr import SimCLR


def list_methods() -> list[str]:
    """Names of the registered SSL methods."""
    return METHODS.names()


__all__ = ["DINO", "JCL", "MAE", "METHODS", "MIM", "MoCo", "SSLMethod", "SimCLR", "list_methods"]
