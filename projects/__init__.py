"""Projects that extend detectron2's existing detectors (IoU-balanced losses)."""
