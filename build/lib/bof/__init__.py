"""bof: Bag of Freebies for object detection, in PyTorch."""
