"""A QEMU guest in the measured path: guest image, host network side, QEMU itself, teardown."""
