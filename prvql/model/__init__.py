"""The PRVQL network, one module per paper component (see docs/MODEL.md for the equation map)."""

from prvql.model.backbone import BACKBONES, build_backbone
from prvql.model.prvql import PRVQL, build_prvql

__all__ = ["BACKBONES", "PRVQL", "build_backbone", "build_prvql"]
