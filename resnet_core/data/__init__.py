"""Data of the paper's CIFAR experiments (Sec. 4.2): sources (official archives, image folders),
preprocessing and augmentation on batched tensors, and iteration-indexed device batches."""
