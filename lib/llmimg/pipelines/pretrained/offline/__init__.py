"""The pretrained pipeline's offline slots filled with models trained on ShapesWorld, loaded through the hub loaders."""
