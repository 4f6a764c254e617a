"""Object labels of synthetic images: masks, boxes and polygons from what generation recorded."""
