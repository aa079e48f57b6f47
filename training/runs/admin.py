"""Admin for this part of the training app."""
