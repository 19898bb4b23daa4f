"""medrec: fine-tune ImageNet ResNet and Inception networks on single-channel medical images."""

__version__ = "0.1.0"
