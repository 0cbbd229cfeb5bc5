"""Detection evaluation: Pascal VOC (devkit-exact AP)."""
