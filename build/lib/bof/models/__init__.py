"""Detection models. Each family gives a network, a criterion and a post-processor (DETR's split)."""
