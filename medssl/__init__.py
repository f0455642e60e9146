"""medssl: self-supervised pretraining for 2D and 3D medical images."""

__version__ = "0.1.0"
