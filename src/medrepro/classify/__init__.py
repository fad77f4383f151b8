"""Classification: models, the training engine, the feature cache and the classifier run."""
