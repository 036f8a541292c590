"""The pretrained pipeline's offline mode: its three slots filled with models trained on ShapesWorld."""
