"""Detection (Mask R-CNN): data, the torchvision and detectron2 backends behind one interface,
metrics and the workflow steps."""
